# Debian's Abseil config imports the shared libraries. kiln's binaries link Abseil from its
# static archives instead, so that they carry it with them (the GPU machine has none): for
# every imported absl::<name> this makes kiln_absl_static_<name>, the same target with the
# static archive in place of the shared library and its dependencies renamed alike.
# kiln_absl(VAR names...) gives, per name, the static target, or absl::<name> for a target
# with the property KILN_SHARED_DEPS: libkiln.so, because some of the archives are not
# position independent (local-exec TLS) and a consumer links the shared Abseil anyway.
get_directory_property(_kiln_imported IMPORTED_TARGETS)
foreach(_t IN LISTS _kiln_imported)
  if(NOT _t MATCHES "^absl::(.*)$")
    continue()
  endif()
  set(_copy kiln_absl_static_${CMAKE_MATCH_1})
  get_target_property(_type ${_t} TYPE)
  if(_type STREQUAL "SHARED_LIBRARY")
    get_target_property(_loc ${_t} IMPORTED_LOCATION_NONE)
    if(NOT _loc)
      get_target_property(_loc ${_t} IMPORTED_LOCATION)
    endif()
    string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" _static "${_loc}")
    if(NOT EXISTS "${_static}")
      set(_static "${_loc}")  # no archive: the shared library after all
    endif()
    add_library(${_copy} STATIC IMPORTED)
    set_target_properties(${_copy} PROPERTIES IMPORTED_LOCATION "${_static}")
  elseif(_type STREQUAL "INTERFACE_LIBRARY")
    add_library(${_copy} INTERFACE IMPORTED)
  else()
    continue()
  endif()
  foreach(_prop INTERFACE_INCLUDE_DIRECTORIES INTERFACE_COMPILE_DEFINITIONS INTERFACE_COMPILE_OPTIONS
                INTERFACE_COMPILE_FEATURES INTERFACE_LINK_LIBRARIES INTERFACE_LINK_OPTIONS)
    get_target_property(_value ${_t} ${_prop})
    if(_value)
      string(REPLACE "absl::" "kiln_absl_static_" _value "${_value}")
      set_target_properties(${_copy} PROPERTIES ${_prop} "${_value}")
    endif()
  endforeach()
endforeach()

function(kiln_absl var)
  set(_out)
  foreach(_name IN LISTS ARGN)
    list(APPEND _out "$<IF:$<BOOL:$<TARGET_PROPERTY:KILN_SHARED_DEPS>>,absl::${_name},kiln_absl_static_${_name}>")
  endforeach()
  set(${var} ${_out} PARENT_SCOPE)
endfunction()
