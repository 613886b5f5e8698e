#include "runtime/dylib.h"

#include <dlfcn.h>

#include <cstdlib>

#include "ir/str.h"

namespace kiln {

absl::StatusOr<void*> open_library(const std::string& soname, const char* env_var, const char* purpose) {
  const char* override_path = std::getenv(env_var);
  std::string path = override_path != nullptr && *override_path != '\0' ? override_path : soname;
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib != nullptr) return lib;
  const char* err = dlerror();
  return absl::FailedPreconditionError(str_cat(
      "cannot load ", path, ", ", purpose, " (", err ? err : "dlopen failed", "): install it where the loader ",
      "finds it (LD_LIBRARY_PATH, ldconfig) or set ", env_var, " to its path"));
}

absl::StatusOr<void*> library_symbol(void* lib, const std::string& library, const char* symbol) {
  dlerror();
  void* sym = dlsym(lib, symbol);
  if (sym == nullptr)
    return absl::FailedPreconditionError(str_cat(library, " lacks ", symbol, " (a different version than kiln needs?)"));
  return sym;
}

}  // namespace kiln
