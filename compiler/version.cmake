# Run at every build (target kiln_git_hash): writes OUT, a header defining KILN_GIT_HASH as
# `git describe --always --dirty` of SRC, only when that changed, so that only the file
# including it recompiles, and only after a commit or an edit.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE hash OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR hash STREQUAL "")
  set(hash "unknown (not built from a git checkout)")
endif()
set(text "#define KILN_GIT_HASH \"${hash}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
