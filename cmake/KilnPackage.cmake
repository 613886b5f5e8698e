# libkiln and its package. kiln's internal static libraries (ir, passes, codegen, runtime,
# the CPU and CUDA backends, the compiler, the trace, ONNX and safetensors frontends) are combined into
# one shared library, libkiln.so (target kiln_library, alias kiln::kiln, the same name
# find_package(kiln) gives), and into one archive, libkiln.a (target kiln_static, what
# find_package(kiln COMPONENTS static) gives as kiln::kiln_static). Its public headers are staged under <build>/include/public/kiln/
# with their includes rewritten to that prefix; `cmake --install` installs them, the library,
# kilnConfig.cmake + kilnConfigVersion.cmake, kiln.pc and kiln-static.pc.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The headers a program includes; whatever kiln headers they include are staged with them.
set(KILN_PUBLIC_HEADERS
  compiler/compile.h compiler/package.h compiler/parallel.h compiler/summary.h
  frontends/trace/trace.h frontends/onnx/onnx_import.h
  ir/compare.h ir/extern_op.h ir/parser.h ir/printer.h ir/reference.h ir/status.h
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
foreach(part kiln_compiler kiln_pipeline kiln_summary kiln_safetensors kiln_onnx kiln_onnx_proto kiln_trace
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

# libkiln.a: the same objects in one archive, made from the objects the internal libraries
# already built (no second compile). It is always built (one `ar` run) and installed; its
# CMake target comes with the component `static`, because its link needs (LLVM's archives,
# OpenBLAS, protobuf) are found only for a program that asks for it: a user of libkiln.so
# needs no LLVM development package.
set(_kiln_objects)
foreach(part IN LISTS _kiln_parts)
  list(APPEND _kiln_objects $<TARGET_OBJECTS:${part}>)
endforeach()
add_library(kiln_static STATIC ${PROJECT_BINARY_DIR}/version.cc ${_kiln_objects})
add_dependencies(kiln_static kiln_headers ${_kiln_parts})
set_target_properties(kiln_static PROPERTIES OUTPUT_NAME kiln EXPORT_NAME kiln_static POSITION_INDEPENDENT_CODE ON)
target_include_directories(kiln_static PRIVATE ${_kiln_include}/generated)
target_include_directories(kiln_static INTERFACE
  $<BUILD_INTERFACE:${_kiln_include}/public> $<BUILD_INTERFACE:${_kiln_include}/generated>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(kiln_static INTERFACE cxx_std_20)
# What the archive's objects call outside it. LLVM's component libraries are LLVM's own
# imported targets (kilnConfig.cmake finds LLVM first); OpenBLAS and protobuf are the static
# archives the build linked (Debian's libprotobuf.a is fine in an executable); Abseil is
# its imported targets (shared, as with libkiln.so); DLPack, dlopen and threads.
set(_kiln_static_needs absl::status absl::statusor absl::strings absl::str_format absl::flat_hash_map
    absl::flat_hash_set absl::hash dlpack::dlpack Threads::Threads ${CMAKE_DL_LIBS})
find_package(Threads REQUIRED)
set(KILN_STATIC_LLVM OFF)
if(TARGET kiln_cpu)
  set(KILN_STATIC_LLVM ON)
  # LLVM's component libraries, as the CPU emitter links them (LLVM's targets are local to
  # codegen/cpu, so they are named here).
  get_target_property(_kiln_llvm kiln_cpu_codegen INTERFACE_LINK_LIBRARIES)
  list(FILTER _kiln_llvm INCLUDE REGEX "^LLVM")
  list(APPEND _kiln_static_needs ${_kiln_llvm} ${KILN_OPENBLAS_STATIC} m)
endif()
if(TARGET kiln_onnx_proto)
  list(APPEND _kiln_static_needs ${KILN_PROTOBUF_STATIC})
endif()
target_link_libraries(kiln_static INTERFACE ${_kiln_static_needs})

install(TARGETS kiln_library EXPORT kilnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${_kiln_include}/public/ ${_kiln_include}/generated/
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(_kiln_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
install(TARGETS kiln_static EXPORT kilnStaticTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${_kiln_cmake_dir})
install(EXPORT kilnStaticTargets NAMESPACE kiln:: DESTINATION ${_kiln_cmake_dir})
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
# kiln-static.pc: libkiln.a and what it needs, LLVM's libraries as its llvm-config names them.
set(KILN_PC_STATIC_REQUIRES "${KILN_PC_REQUIRES} absl_str_format absl_flat_hash_set absl_hash")
set(KILN_PC_STATIC_LIBS "")
if(TARGET kiln_cpu)
  find_program(KILN_LLVM_CONFIG NAMES llvm-config-16 llvm-config HINTS ${LLVM_DIR}/../bin ${LLVM_DIR}/../../../bin
               NO_DEFAULT_PATH REQUIRED)
  execute_process(COMMAND ${KILN_LLVM_CONFIG} --link-static --ldflags --libs orcjit native passes --system-libs
                  OUTPUT_VARIABLE _kiln_llvm_flags OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  string(REPLACE "\n" " " _kiln_llvm_flags "${_kiln_llvm_flags}")
  string(APPEND KILN_PC_STATIC_LIBS " ${KILN_OPENBLAS_STATIC} ${_kiln_llvm_flags}")
endif()
if(TARGET kiln_onnx_proto)
  string(APPEND KILN_PC_STATIC_LIBS " ${KILN_PROTOBUF_STATIC}")
endif()
string(APPEND KILN_PC_STATIC_LIBS " -ldl -lpthread -lm")
configure_file(cmake/kiln-static.pc.in ${PROJECT_BINARY_DIR}/kiln-static.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/kiln.pc ${PROJECT_BINARY_DIR}/kiln-static.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
