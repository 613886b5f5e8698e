#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "test/common/filecheck.h"

using kiln::testing::file_check;

namespace {
const char* kText =
    "graph g(%x: f32[4]) {\n"
    "  %a = exp(%x) : f32[4]\n"
    "  %b = add(%a, %x) : f32[4]\n"
    "  return %b\n"
    "}\n";
}

TEST_CASE("CHECK finds lines in order") {
  CHECK(file_check(kText, "CHECK: exp(%x)\nCHECK: add(%a").ok);
  CHECK_FALSE(file_check(kText, "CHECK: add(%a\nCHECK: exp(%x)").ok);
  CHECK_FALSE(file_check(kText, "CHECK: sqrt").ok);
  CHECK_FALSE(file_check(kText, "no directives").ok);
}

TEST_CASE("CHECK-NEXT and CHECK-SAME") {
  CHECK(file_check(kText, "CHECK: %a = exp\nCHECK-NEXT: %b = add").ok);
  CHECK_FALSE(file_check(kText, "CHECK: graph\nCHECK-NEXT: %b = add").ok);
  CHECK(file_check(kText, "CHECK: %b = add\nCHECK-SAME: f32[4]").ok);
  CHECK_FALSE(file_check(kText, "CHECK: f32[4]\nCHECK-SAME: %b").ok);
}

TEST_CASE("CHECK-NOT between matches and at the end") {
  CHECK(file_check(kText, "CHECK: exp\nCHECK-NOT: sqrt\nCHECK: return").ok);
  CHECK_FALSE(file_check(kText, "CHECK: exp\nCHECK-NOT: add\nCHECK: return").ok);
  CHECK_FALSE(file_check(kText, "CHECK: add\nCHECK-NOT: return").ok);
  CHECK(file_check(kText, "CHECK: return\nCHECK-NOT: exp").ok);
}

TEST_CASE("regex holes") {
  CHECK(file_check(kText, "CHECK: %{{[a-z]+}} = add({{.*}}) : f32[4]").ok);
  CHECK_FALSE(file_check(kText, "CHECK: %{{[0-9]+}} = add").ok);
  auto r = file_check(kText, "CHECK: mul");
  CHECK(r.message.find("check line 1") != std::string::npos);
}
