# libkiln and its package. kiln's internal static libraries (ir, passes, codegen, runtime,
# the CPU and CUDA backends, the compiler, the trace and ONNX frontends) are combined into
# one shared library, libkiln.so (target kiln_library, alias kiln::kiln, the same name
# find_package(kiln) gives). Its public headers are staged under <build>/include/public/kiln/
# with their includes rewritten to that prefix; `cmake --install` installs them, the library,
# kilnConfig.cmake + kilnConfigVersion.cmake and kiln.pc.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The headers a program includes; whatever kiln headers they include are staged with them.
set(KILN_PUBLIC_HEADERS
  compiler/compile.h compiler/summary.h
  frontends/trace/trace.h frontends/onnx/onnx_import.h
  ir/compare.h ir/parser.h ir/printer.h ir/reference.h ir/status.h
  passes/convert_float.h)
set(_kiln_include ${PROJECT_BINARY_DIR}/include)
string(REPLACE ";" "," _kiln_headers_arg "${KILN_PUBLIC_HEADERS}")
set(_kiln_stage ${CMAKE_COMMAND} -DSRC=${PROJECT_SOURCE_DIR} -DOUT=${_kiln_include}/public
    -DHEADERS=${_kiln_headers_arg} -P ${PROJECT_SOURCE_DIR}/cmake/stage_headers.cmake)
# Staged now (so that the include directory exists) and again at every build (headers change).
execute_process(COMMAND ${_kiln_stage} COMMAND_ERROR_IS_FATAL ANY)
add_custom_target(kiln_headers COMMAND ${_kiln_stage} COMMENT "Staging kiln's public headers" VERBATIM)
configure_file(cmake/version.h.in ${_kiln_include}/generated/kiln/version.h @ONLY)
configure_file(cmake/version.cc.in ${PROJECT_BINARY_DIR}/version.cc @ONLY)

# Every internal library this build has, users before what they use.
set(_kiln_parts)
foreach(part kiln_compiler kiln_pipeline kiln_summary kiln_onnx kiln_onnx_proto kiln_trace
             kiln_cpu kiln_cpu_codegen kiln_cuda_backend kiln_cuda_codegen kiln_runtime
             kiln_codegen kiln_passes kiln_ir)
  if(TARGET ${part})
    list(APPEND _kiln_parts ${part})
  endif()
endforeach()
# They are compiled as position independent code so that they can go into a shared library
# (executables and test helpers keep the toolchain's default).
set(_kiln_whole)
foreach(part IN LISTS _kiln_parts)
  set_target_properties(${part} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  list(APPEND _kiln_whole $<TARGET_FILE:${part}>)
endforeach()

add_library(kiln_library SHARED ${PROJECT_BINARY_DIR}/version.cc)
add_library(kiln::kiln ALIAS kiln_library)
add_dependencies(kiln_library kiln_headers)
set_target_properties(kiln_library PROPERTIES
  OUTPUT_NAME kiln EXPORT_NAME kiln
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
  KILN_SHARED_DEPS ON
  LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/libkiln.map)
target_include_directories(kiln_library PRIVATE ${_kiln_include}/generated)
find_package(dlpack REQUIRED)
target_include_directories(kiln_library INTERFACE
  $<BUILD_INTERFACE:${_kiln_include}/public> $<BUILD_INTERFACE:${_kiln_include}/generated>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(kiln_library INTERFACE cxx_std_20)
# Every member of the internal archives goes in (whole-archive), then the archives again for
# their own dependencies: LLVM and OpenBLAS (static, only what is used), the system's
# shared Abseil and protobuf (the property KILN_SHARED_DEPS: their archives are not
# position independent).
target_link_libraries(kiln_library
  PRIVATE -Wl,--whole-archive ${_kiln_whole} -Wl,--no-whole-archive ${_kiln_parts}
          -Wl,--version-script=${PROJECT_SOURCE_DIR}/cmake/libkiln.map -Wl,--no-undefined
  PUBLIC absl::status absl::statusor absl::strings absl::flat_hash_map dlpack::dlpack)

install(TARGETS kiln_library EXPORT kilnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${_kiln_include}/public/ ${_kiln_include}/generated/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(_kiln_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${_kiln_cmake_dir})
configure_package_config_file(cmake/kilnConfig.cmake.in ${PROJECT_BINARY_DIR}/kilnConfig.cmake
  INSTALL_DESTINATION ${_kiln_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kilnConfig.cmake ${PROJECT_BINARY_DIR}/kilnConfigVersion.cmake
        DESTINATION ${_kiln_cmake_dir})

# pkg-config: the same library and headers; Abseil through its own .pc files (DLPack is
# header-only and has none).
set(KILN_PC_REQUIRES "absl_status absl_statusor absl_strings absl_flat_hash_map")
file(RELATIVE_PATH KILN_PC_TO_PREFIX /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" KILN_PC_TO_PREFIX "${KILN_PC_TO_PREFIX}")
configure_file(cmake/kiln.pc.in ${PROJECT_BINARY_DIR}/kiln.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/kiln.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
