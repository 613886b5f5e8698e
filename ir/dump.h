// The dump writer: one directory of files written for people to read (the IR after each pass,
// kernels, sources, guards). Everything kiln dumps goes through it, so every dump file is
// written the same way: atomically, with its folders created, and errors naming the path.
#pragma once

#include <filesystem>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace kiln {

class DumpWriter {
 public:
  explicit DumpWriter(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }

  // Creates the directory, so that an unusable one is reported before any work is done.
  absl::Status create() const;
  // Writes dir/file: a temporary file beside it renamed into place, so that a reader (or a
  // second process writing the same dump) never sees half a file. Creates the folders.
  absl::Status write(const std::filesystem::path& file, std::string_view text) const;
  // dir/NN-<pass>.kiln: the IR after the pass at 1-based place `index` of a pipeline, numbered
  // so that the files list in pipeline order.
  absl::Status write_pass(int index, std::string_view pass, std::string_view text) const;
  // Removes this directory's files that have the extension of a file in `keep` but are not
  // in it (file names): what an earlier dump into the same directory left there.
  absl::Status remove_stale(const std::set<std::string>& keep) const;

  // A writer for the sub-folder dir/name (created when something is written there).
  DumpWriter sub(const std::filesystem::path& name) const { return DumpWriter(dir_ / name); }
  // A sub-folder of its own for one of several things of the same name in this process (two
  // graphs named "mlp"): `name`, then `name`-2, `name`-3, ..., the first that no earlier
  // claim in this process took. Characters other than letters, digits, '_', '-' and '.' in
  // `name` become '_'.
  DumpWriter claim(std::string_view name) const;

 private:
  std::filesystem::path dir_;
};

// One file written as DumpWriter::write writes it, for callers that hold a whole path.
absl::Status write_dump_file(const std::filesystem::path& p, std::string_view text);

}  // namespace kiln
