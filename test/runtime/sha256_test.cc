#include <catch2/catch.hpp>

#include <string>

#include "runtime/sha256.h"

using kiln::Sha256;

TEST_CASE("sha256 matches the FIPS 180-4 test vectors", "[runtime][cache]") {
  CHECK(Sha256::hex(Sha256::hash("")) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Sha256::hex(Sha256::hash("abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(Sha256::hex(Sha256::hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a', fed in uneven pieces to exercise the block buffering.
  Sha256 h;
  std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    size_t take = std::min(left, chunk.size());
    h.update(chunk.data(), take);
    left -= take;
  }
  CHECK(Sha256::hex(h.finish()) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256 fields keep their boundaries", "[runtime][cache]") {
  auto two = [](const char* a, const char* b) {
    return Sha256::hex(Sha256().update_field(a).update_field(b).finish());
  };
  CHECK(two("ab", "c") != two("a", "bc"));
  CHECK(two("ab", "c") == two("ab", "c"));
}
