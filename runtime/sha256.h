// SHA-256 (FIPS 180-4), used for kernel-cache keys and entry checksums: a cryptographic
// hash makes accidental collisions between different kernels a non-event.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;
  Sha256();
  Sha256& update(const void* data, size_t size);
  Sha256& update(std::string_view s) { return update(s.data(), s.size()); }
  // Hashes the length (8 bytes) and then the bytes, so that field boundaries are part of the
  // hash: ("ab", "c") and ("a", "bc") differ.
  Sha256& update_field(std::string_view s);
  Digest finish();

  static Digest hash(std::string_view s) { return Sha256().update(s).finish(); }
  static std::string hex(const Digest& d);

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace kiln
