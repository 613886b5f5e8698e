#include "ir/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ir/checked.h"
#include "ir/str.h"

namespace kiln {

absl::StatusOr<std::string> read_regular_file(const std::string& path, int64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    std::string msg = str_cat(path, ": cannot read the file: ", std::strerror(e));
    return e == ENOENT ? absl::NotFoundError(msg) : absl::InvalidArgumentError(msg);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return invalid_argument(path, ": cannot stat: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return invalid_argument(path, ": not a regular file (",
                            S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket", ")");
  if (st.st_size > max_bytes)
    return invalid_argument(path, ": ", st.st_size, " bytes, more than the ", max_bytes, " bytes allowed here");
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t have = 0;
  while (have < out.size()) {
    ssize_t n = ::read(fd, out.data() + have, out.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return invalid_argument(path, ": cannot read: ", std::strerror(errno));
    if (n == 0) break;  // shrank while being read: what is there is what we have
    have += static_cast<size_t>(n);
  }
  out.resize(have);
  return out;
}

int64_t max_input_file_bytes() { return host_allocation_limit(); }

absl::Status write_file_atomically(const std::string& path, const std::function<bool(std::FILE*)>& writer) {
  std::string tmp = str_cat(path, ".tmp.", ::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return invalid_argument(path, ": cannot create ", tmp, ": ", std::strerror(errno));
  bool ok = writer(f);
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    return invalid_argument(path, ": cannot write ", tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    return invalid_argument(path, ": cannot rename ", tmp, " to it: ", std::strerror(e));
  }
  return absl::OkStatus();
}

}  // namespace kiln
