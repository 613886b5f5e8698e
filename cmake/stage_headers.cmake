# Stages kiln's public headers for installation: the entry headers and every kiln header
# they include (followed transitively) are copied to OUT/kiln/<same path>, with kiln's own
# includes rewritten to the kiln/ prefix ("ir/graph.h" -> "kiln/ir/graph.h"), so that an
# installed kiln compiles with -I<prefix>/include alone and its names cannot clash with a
# consumer's. Files are rewritten only when their text changes; headers no longer reached
# are removed. Run as: cmake -DSRC=<source root> -DOUT=<dir> -DHEADERS=<a,b,...> -P this
cmake_minimum_required(VERSION 3.25)
foreach(var SRC OUT HEADERS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "stage_headers.cmake: ${var} is not set")
  endif()
endforeach()

string(REPLACE "," ";" queue "${HEADERS}")
set(staged)
while(queue)
  list(POP_FRONT queue header)
  if(header IN_LIST staged)
    continue()
  endif()
  if(NOT EXISTS "${SRC}/${header}")
    message(FATAL_ERROR "stage_headers.cmake: public header ${header} not found under ${SRC}")
  endif()
  list(APPEND staged ${header})
  file(READ "${SRC}/${header}" text)
  string(REGEX MATCHALL "#include \"[^\"]+\"" includes "${text}")
  foreach(line IN LISTS includes)
    string(REGEX REPLACE "#include \"([^\"]+)\"" "\\1" included "${line}")
    # Only kiln's own files are followed and renamed (third-party quoted includes such as
    # "absl/status/status.h" stay as they are).
    if(EXISTS "${SRC}/${included}" AND NOT IS_DIRECTORY "${SRC}/${included}")
      list(APPEND queue ${included})
      string(REPLACE "#include \"${included}\"" "#include \"kiln/${included}\"" text "${text}")
    endif()
  endforeach()
  set(target "${OUT}/kiln/${header}")
  set(old "")
  if(EXISTS "${target}")
    file(READ "${target}" old)
  endif()
  if(NOT old STREQUAL text)
    file(WRITE "${target}" "${text}")
  endif()
endwhile()

file(GLOB_RECURSE present RELATIVE "${OUT}/kiln" "${OUT}/kiln/*")
foreach(file IN LISTS present)
  if(NOT file IN_LIST staged)
    file(REMOVE "${OUT}/kiln/${file}")
  endif()
endforeach()
