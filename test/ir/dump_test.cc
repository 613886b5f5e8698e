// The dump writer: files replaced atomically, numbered pass files, sub-folders, stale files,
// one folder per claim, and errors that name the path.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "ir/dump.h"
#include "ir/str.h"
#include "test/common/scratch_dir.h"

using namespace kiln;

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("dump writer: a file is replaced by renaming, so a reader never sees a mix", "[dump]") {
  testing::ScratchDir dir("kiln_dump_test");
  DumpWriter dump(dir.path());
  REQUIRE(dump.write("a/b/ir.kiln", "old text\n").ok());
  CHECK(read_file(dir.path() / "a" / "b" / "ir.kiln") == "old text\n");
  // A reader that opened the file before the rewrite keeps reading the old file whole.
  std::ifstream reader(dir.path() / "a" / "b" / "ir.kiln", std::ios::binary);
  REQUIRE(dump.write("a/b/ir.kiln", "new\n").ok());
  std::stringstream seen;
  seen << reader.rdbuf();
  CHECK(seen.str() == "old text\n");
  CHECK(read_file(dir.path() / "a" / "b" / "ir.kiln") == "new\n");
  // No temporary file is left beside it.
  CHECK(files_in(dir.path() / "a" / "b") == std::vector<std::string>{"ir.kiln"});
}

TEST_CASE("dump writer: numbered pass files, sub-folders, stale files", "[dump]") {
  testing::ScratchDir dir("kiln_dump_test");
  DumpWriter dump(dir.path());
  REQUIRE(dump.write_pass(3, "fuse_linear", "x").ok());
  REQUIRE(dump.write_pass(12, "late", "y").ok());
  CHECK(files_in(dir.path()) == std::vector<std::string>{"03-fuse_linear.kiln", "12-late.kiln"});

  DumpWriter kernels = dump.sub("kernels");
  CHECK(kernels.dir() == dir.path() / "kernels");
  for (const char* f : {"k0.kir", "k1.kir", "k2.kir", "notes.txt"}) REQUIRE(kernels.write(f, f).ok());
  REQUIRE(kernels.remove_stale({"k0.kir", "k2.kir"}).ok());
  CHECK(files_in(dir.path() / "kernels") == std::vector<std::string>{"k0.kir", "k2.kir", "notes.txt"});
  // A folder not made yet has nothing stale.
  CHECK(dump.sub("none").remove_stale({"k0.kir"}).ok());
}

TEST_CASE("dump writer: claims give each thing of one name its own folder", "[dump]") {
  testing::ScratchDir dir("kiln_dump_test");
  DumpWriter dump(dir.path());
  CHECK(dump.claim("mlp").dir() == dir.path() / "mlp");
  CHECK(dump.claim("mlp").dir() == dir.path() / "mlp-2");
  CHECK(dump.claim("mlp").dir() == dir.path() / "mlp-3");
  CHECK(dump.claim("decoder").dir() == dir.path() / "decoder");
  // The same directory spelt differently is the same directory.
  CHECK(DumpWriter(dir.path() / "." / "").claim("decoder").dir().filename() == "decoder-2");
  // A name that is no file name is made one.
  CHECK(dump.claim("a/b c").dir() == dir.path() / "a_b_c");
  CHECK(dump.claim("..").dir() == dir.path() / "graph");
  CHECK(dump.claim("").dir() == dir.path() / "graph-2");
}

TEST_CASE("dump writer: errors name the path", "[dump]") {
  testing::ScratchDir dir("kiln_dump_test");
  DumpWriter dump(dir.path());
  REQUIRE(dump.write("file", "x").ok());
  absl::Status s = dump.write("file/inner.kiln", "y");
  CHECK(status_message(s).rfind(str_cat("cannot create ", (dir.path() / "file").string(), ": "), 0) == 0);
  s = dump.sub("file").create();
  CHECK(status_message(s).rfind(str_cat("cannot create dump directory ", (dir.path() / "file").string(), ": "), 0) == 0);
  fs::create_directories(dir.path() / "folder");
  s = dump.write("folder", "z");
  CHECK(status_message(s).rfind(str_cat("cannot write ", (dir.path() / "folder").string(), ": "), 0) == 0);
  CHECK(files_in(dir.path()) == std::vector<std::string>{"file", "folder"});
  // The one-path form writes the same way.
  REQUIRE(write_dump_file(dir.path() / "x" / "guards.txt", "B >= 2\n").ok());
  CHECK(read_file(dir.path() / "x" / "guards.txt") == "B >= 2\n");
}
