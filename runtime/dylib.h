// Libraries kiln loads at run time with dlopen (NVRTC, cuBLASLt, NCCL, cuDNN; the driver has its own
// loader in cuda_driver.cc), so that a program linked to libkiln loads and runs on the CPU
// where they are not installed, and gets a clear error naming the library where it needs one.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kiln {

// dlopen of `soname` ("libnvrtc.so.13"), or of the path in the environment variable
// `env_var` when it is set and not empty. The handle stays open for the life of the process.
// The error (FailedPrecondition) names the library, `purpose` ("NVRTC, which compiles CUDA
// kernels") and the variable, and quotes dlerror.
absl::StatusOr<void*> open_library(const std::string& soname, const char* env_var, const char* purpose);

// The address of `symbol` in `lib`, or a FailedPrecondition naming the symbol and library.
absl::StatusOr<void*> library_symbol(void* lib, const std::string& library, const char* symbol);

}  // namespace kiln

// Fills `table.name` (typed as ::name) from `lib`, or returns the error from the enclosing
// function: used with an X-macro list of the functions a library table holds.
#define KILN_LOAD_SYMBOL(table, lib, library, name)                             \
  do {                                                                          \
    auto kiln_sym_ = ::kiln::library_symbol(lib, library, #name);               \
    if (!kiln_sym_.ok()) return kiln_sym_.status();                             \
    (table).name = reinterpret_cast<decltype(&::name)>(*kiln_sym_);             \
  } while (0)

// A library's table, loaded once per process: defines `struct Table` with a member per
// function of the X-macro list FUNCTIONS (typed as ::name), and `absl::StatusOr<const
// Table*> accessor()`, which on its first call opens the library (open_library(soname,
// env_var, purpose)) and resolves every function, and from then on returns the same table,
// or the same error.
#define KILN_LIBRARY_TABLE(Table, FUNCTIONS, accessor, soname, env_var, purpose)   \
  struct Table {                                                                   \
    FUNCTIONS(KILN_LIBRARY_MEMBER_)                                                \
  };                                                                               \
  absl::StatusOr<const Table*> accessor() {                                        \
    static const absl::StatusOr<Table> loaded = []() -> absl::StatusOr<Table> {    \
      const std::string library = soname;                                          \
      absl::StatusOr<void*> lib = ::kiln::open_library(library, env_var, purpose); \
      if (!lib.ok()) return lib.status();                                          \
      Table table;                                                                 \
      FUNCTIONS(KILN_LIBRARY_LOAD_)                                                \
      return table;                                                                \
    }();                                                                           \
    if (!loaded.ok()) return loaded.status();                                      \
    return &*loaded;                                                               \
  }
#define KILN_LIBRARY_MEMBER_(name) decltype(&::name) name = nullptr;
#define KILN_LIBRARY_LOAD_(name) KILN_LOAD_SYMBOL(table, *lib, library, name);
