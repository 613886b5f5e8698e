# Debian's Abseil config imports the shared libraries; point every imported absl::
# target at its static archive instead, so kiln's binaries carry Abseil with them.
get_directory_property(_kiln_imported IMPORTED_TARGETS)
foreach(_t IN LISTS _kiln_imported)
  if(NOT _t MATCHES "^absl::")
    continue()
  endif()
  get_target_property(_type ${_t} TYPE)
  if(NOT _type STREQUAL "SHARED_LIBRARY")
    continue()
  endif()
  get_target_property(_loc ${_t} IMPORTED_LOCATION_NONE)
  if(NOT _loc)
    get_target_property(_loc ${_t} IMPORTED_LOCATION)
  endif()
  string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" _static "${_loc}")
  if(EXISTS "${_static}")
    set_target_properties(${_t} PROPERTIES
      IMPORTED_LOCATION "${_static}" IMPORTED_LOCATION_NONE "${_static}"
      IMPORTED_SONAME "" IMPORTED_NO_SONAME TRUE)
  endif()
endforeach()
