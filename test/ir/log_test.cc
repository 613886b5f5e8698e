// KILN_LOG's grammar (ir/log.h): topics with levels, `all`, the numeric form, and errors
// that name the unknown topic.
#include <catch2/catch.hpp>

#include "ir/log.h"

using kiln::LogLevels;
using kiln::LogTopic;
using kiln::parse_log_spec;

namespace {
int level(const LogLevels& l, LogTopic t) { return l[static_cast<int>(t)]; }
}  // namespace

TEST_CASE("KILN_LOG topics: listed ones at level 1 unless :N, the rest off", "[log]") {
  auto l = parse_log_spec("guards,fusion,cache:2");
  REQUIRE(l.ok());
  CHECK(level(*l, LogTopic::guards) == 1);
  CHECK(level(*l, LogTopic::fusion) == 1);
  CHECK(level(*l, LogTopic::cache) == 2);
  CHECK(level(*l, LogTopic::compile) == 0);
  CHECK(level(*l, LogTopic::lower) == 0);
  CHECK(level(*l, LogTopic::passes) == 0);
}

TEST_CASE("KILN_LOG all:N sets every topic; later items win", "[log]") {
  auto l = parse_log_spec("all:2,passes:0,,cache:3");
  REQUIRE(l.ok());
  CHECK(level(*l, LogTopic::compile) == 2);
  CHECK(level(*l, LogTopic::guards) == 2);
  CHECK(level(*l, LogTopic::passes) == 0);
  CHECK(level(*l, LogTopic::cache) == 3);
}

TEST_CASE("KILN_LOG=N turns on each topic whose threshold is <= N", "[log]") {
  auto one = parse_log_spec("1");
  REQUIRE(one.ok());
  CHECK(level(*one, LogTopic::compile) == 1);
  CHECK(level(*one, LogTopic::guards) == 1);
  CHECK(level(*one, LogTopic::lower) == 0);
  CHECK(level(*one, LogTopic::passes) == 0);
  auto three = parse_log_spec("3");
  REQUIRE(three.ok());
  CHECK(level(*three, LogTopic::compile) == 3);
  CHECK(level(*three, LogTopic::lower) == 2);
  CHECK(level(*three, LogTopic::passes) == 1);
  auto off = parse_log_spec("0");
  REQUIRE(off.ok());
  for (int t = 0; t < kiln::kLogTopics; ++t) CHECK((*off)[t] == 0);
  auto empty = parse_log_spec("");
  REQUIRE(empty.ok());
  for (int t = 0; t < kiln::kLogTopics; ++t) CHECK((*empty)[t] == 0);
}

TEST_CASE("KILN_LOG errors name the bad item and list the topics", "[log]") {
  auto bad = parse_log_spec("guards,fusoin");
  REQUIRE(!bad.ok());
  std::string m(bad.status().message());
  CHECK(m.find("unknown topic 'fusoin'") != std::string::npos);
  CHECK(m.find("compile, guards, fusion, cache, lower, passes") != std::string::npos);
  auto level_bad = parse_log_spec("cache:x");
  REQUIRE(!level_bad.ok());
  CHECK(std::string(level_bad.status().message()).find("bad level in 'cache:x'") != std::string::npos);
  CHECK(!parse_log_spec("cache:-1").ok());
  CHECK(!parse_log_spec("cache:10").ok());
}
