// kiln_fuzz: the differential fuzzer. Each seed's random graph goes through the whole pass
// pipeline, lowering and the kernel-IR evaluator, and is compared with the reference
// evaluator, then bit for bit with one kernel per node (test/fuzz/check.h). A failure
// prints the seed, the graph's IR and the kernels. With --device cpu|cuda each graph is
// instead compiled by compile() for that device and run there, under every binding, in
// --mode default|reduce-overhead|max-autotune (compile()'s modes; default: default).
//
//   kiln_fuzz --seeds 0:100000          seeds 0 to 99999
//   kiln_fuzz --seeds 0:500 --device cpu
//   kiln_fuzz --seeds 0:3000 --device cuda --mode reduce-overhead
//   kiln_fuzz --seeds 1234 --print      one seed, printing its graph even when it passes
//   kiln_fuzz --seeds 0:1000000 --device cuda --time-limit 100
//                                       as many seeds as fit in 100 s (the count is printed)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "ir/printer.h"
#include "ir/str.h"
#include "test/fuzz/check.h"
#include "test/fuzz/random_graph.h"

namespace {

// Random graphs are not always well conditioned (check.h); real bugs show as gross errors
// or as mismatches in outputs that accumulate nothing, which keep the exact tolerance.
constexpr double kFuzzSlack = 10;

int usage() {
  std::fprintf(stderr, "usage: kiln_fuzz --seeds FIRST[:END] [--ops N] [--device cpu|cuda] [--mode M] [--time-limit S] [--print] [--keep-going]\n");
  return 2;
}

bool parse_u64(const std::string& s, uint64_t& out) {
  char* end = nullptr;
  out = std::strtoull(s.c_str(), &end, 10);
  return !s.empty() && *end == '\0';
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t first = 0, end = 0;
  bool have_seeds = false, print = false, keep_going = false;
  kiln::RandomGraphOptions options;
  std::optional<kiln::Device> device;
  kiln::Mode mode = kiln::Mode::Default;
  uint64_t time_limit_s = 0;  // 0: none
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seeds" && i + 1 < argc) {
      std::string v = argv[++i];
      size_t colon = v.find(':');
      if (!parse_u64(v.substr(0, colon), first)) return usage();
      if (colon == std::string::npos) end = first + 1;
      else if (!parse_u64(v.substr(colon + 1), end) || end <= first) return usage();
      have_seeds = true;
    } else if (a == "--ops" && i + 1 < argc) {
      uint64_t n = 0;
      if (!parse_u64(argv[++i], n) || n == 0) return usage();
      options.ops = static_cast<int>(n);
    } else if (a == "--device" && i + 1 < argc) {
      std::optional<kiln::Device> d = kiln::parse_device(argv[++i]);
      if (!d || *d == kiln::Device::Auto) return usage();
      device = *d;
    } else if (a == "--mode" && i + 1 < argc) {
      std::optional<kiln::Mode> m = kiln::parse_mode(argv[++i]);
      if (!m) return usage();
      mode = *m;
    } else if (a == "--time-limit" && i + 1 < argc) {
      if (!parse_u64(argv[++i], time_limit_s) || time_limit_s == 0) return usage();
    } else if (a == "--print") {
      print = true;
    } else if (a == "--keep-going") {
      keep_going = true;
    } else {
      return usage();
    }
  }
  if (!have_seeds) return usage();
  if (device) {
    if (absl::Status s = kiln::device_available(*device); !s.ok()) {
      std::fprintf(stderr, "kiln_fuzz: %s\n", kiln::status_message(s).c_str());
      return 1;
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  uint64_t failed = 0, ran = 0;
  for (uint64_t seed = first; seed < end; ++seed) {
    if (time_limit_s > 0 && std::chrono::steady_clock::now() - t0 >= std::chrono::seconds(time_limit_s)) break;
    ++ran;
    kiln::RandomGraph rg = kiln::random_graph(seed, options);
    if (print) std::printf("# seed %llu\n%s", static_cast<unsigned long long>(seed), kiln::print_graph(rg.graph).c_str());
    absl::Status s;
    if (device) {
      s = kiln::check_device_matches_reference(rg.graph, *device, rg.bindings, seed, kFuzzSlack, mode);
    } else {
      s = kiln::check_compiled_matches_reference(rg.graph, rg.bindings, seed, kFuzzSlack);
      if (s.ok()) s = kiln::check_fused_matches_unfused(rg.graph, rg.bindings, seed);
    }
    if (s.ok()) continue;
    ++failed;
    std::printf("FAIL seed %llu: %s\n", static_cast<unsigned long long>(seed), kiln::status_message(s).c_str());
    std::fflush(stdout);
    if (!keep_going) break;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("kiln_fuzz: seeds %llu:%llu%s, %llu graphs, %llu failed, %.1f s\n", static_cast<unsigned long long>(first),
              static_cast<unsigned long long>(first + ran),
              device ? kiln::str_cat(" on ", kiln::device_kind_name(*device), ", mode ", kiln::mode_name(mode)).c_str()
                     : " (kernel-IR evaluator)",
              static_cast<unsigned long long>(ran), static_cast<unsigned long long>(failed), secs);
  return failed == 0 ? 0 : 1;
}
