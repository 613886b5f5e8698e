// A small code writer for the CUDA printer: lines at an indentation level of two spaces
// each, blocks opened and closed by lines.
#pragma once

#include <string>
#include <string_view>

namespace kiln::cuda {

class CodeWriter {
 public:
  // One line at the current level.
  void line(std::string_view text) {
    out_.append(2 * level_, ' ');
    out_.append(text);
    out_ += '\n';
  }
  // A line that opens a block: the lines after it go one level deeper.
  void open(std::string_view text) {
    line(text);
    ++level_;
  }
  // The line that closes the block, one level up.
  void close(std::string_view text = "}") {
    --level_;
    line(text);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  int level_ = 0;
};

}  // namespace kiln::cuda
