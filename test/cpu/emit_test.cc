// What the CPU backend emits and how its executables behave: vector code in the optimized
// IR it dumps, the error of its inline math against the C library, the JIT cache and build
// statistics, outputs given or allocated, weight prep, and located errors on bad calls.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <unistd.h>

#include "codegen/cpu/collapse.h"
#include "codegen/module.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/cpu/cpu_check.h"
#include "test/fuzz/check.h"

using namespace kiln;
using kiln::testing::parse_or_fail;
using kiln::testing::require_ok;
using kiln::testing::build_cpu;
using kiln::testing::BuildOptions;
using kiln::testing::check_cpu_matches_reference;
using kiln::testing::make_module;
using kiln::testing::run_cpu;

namespace {

std::shared_ptr<const CompiledModule> module_of(const Graph& g) {
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g);
  if (!m.ok()) FAIL(status_message(m.status()));
  return *m;
}

std::unique_ptr<Executor> executable(std::shared_ptr<const CompiledModule> m, const BuildOptions& opts = {}) {
  absl::StatusOr<std::unique_ptr<Executor>> e = build_cpu(std::move(m), opts);
  if (!e.ok()) FAIL(status_message(e.status()));
  return *std::move(e);
}

std::filesystem::path fresh_dir(const std::string& name) {
  std::filesystem::path p = std::filesystem::temp_directory_path() / str_cat("kiln_cpu_test_", name, "_", ::getpid());
  std::filesystem::remove_all(p);
  return p;
}

// The optimized LLVM IR the backend dumps for every kernel of `g`, by file name.
std::map<std::string, std::string> dumped_ir(const Graph& g, const std::string& name) {
  std::filesystem::path dir = fresh_dir(name);
  executable(module_of(g), BuildOptions{.dump_dir = dir.string()});
  std::map<std::string, std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(entry.path());
    std::stringstream ss;
    ss << f.rdbuf();
    out[entry.path().filename().string()] = ss.str();
  }
  std::filesystem::remove_all(dir);
  return out;
}

bool has_float_vectors(const std::string& ir) { return std::regex_search(ir, std::regex("<(4|8|16) x float>")); }

// Distance in units in the last place between two finite floats of any sign.
int64_t ulps(float a, float b) {
  auto ordered = [](float f) {
    int32_t i = std::bit_cast<int32_t>(f);
    return i < 0 ? static_cast<int64_t>(INT32_MIN) - i : static_cast<int64_t>(i);
  };
  return std::abs(ordered(a) - ordered(b));
}

}  // namespace

TEST_CASE("cpu emit: contiguous elementwise, reduction and softmax loops are vectorized", "[cpu][emit]") {
  SECTION("f32 elementwise with exp and erf") {
    auto ir = dumped_ir(parse_or_fail(R"(graph ew(%x: f32[N, 256], %a: f32[256], %b: f32[256]) {
  %m = mul(%x, %a)
  %p = add(%m, %b)
  %g = gelu(%p)
  %s = sigmoid(%x)
  %y = mul(%g, %s)
  return %y
})"), "ew");
    REQUIRE(ir.size() == 1);
    const std::string& text = ir.begin()->second;
    INFO(text);
    REQUIRE(has_float_vectors(text));
    REQUIRE(text.find("@expf") == std::string::npos);
    REQUIRE(text.find("@erff") == std::string::npos);
  }
  SECTION("gelu's tanh form as exported, with pow(x, 3): no powf call") {
    auto ir = dumped_ir(parse_or_fail(R"(graph g(%x: f32[N, 128]) {
  %three = constant(value=3.0, dtype=f32)
  %k = constant(value=0.044715, dtype=f32)
  %c = constant(value=0.7978846, dtype=f32)
  %half = constant(value=0.5, dtype=f32)
  %one = constant(value=1.0, dtype=f32)
  %h = mul(%x, %half)
  %x3 = pow(%x, %three)
  %kx3 = mul(%x3, %k)
  %s = add(%x, %kx3)
  %u = mul(%s, %c)
  %t = tanh(%u)
  %t1 = add(%t, %one)
  %y = mul(%h, %t1)
  return %y
})"), "gelu_pow");
    REQUIRE(ir.size() == 1);
    const std::string& text = ir.begin()->second;
    INFO(text);
    REQUIRE(has_float_vectors(text));
    REQUIRE(text.find("pow") == std::string::npos);
  }
  SECTION("bf16 rms_norm: the sum and the map") {
    auto ir = dumped_ir(parse_or_fail(R"(graph rms(%x: bf16[N, 512], %w: bf16[512]) {
  %y = rms_norm(%x, %w, axes=[-1])
  return %y
})"), "rms");
    REQUIRE(ir.size() == 1);
    const std::string& text = ir.begin()->second;
    INFO(text);
    REQUIRE(has_float_vectors(text));
    REQUIRE(std::regex_search(text, std::regex("reduce.fadd|fadd reassoc <")));
    REQUIRE(std::regex_search(text, std::regex("<(4|8|16) x i16>")));
  }
  SECTION("a gather's index check: or-ed in the vector loop, its words written by a second scalar pass") {
    auto ir = dumped_ir(parse_or_fail(R"(graph emb(%w: f32[1000, 64], %ids: i64[N], %b: f32[64]) {
  %e = gather(%w, %ids, axis=0)
  %y = add(%e, %b)
  return %y
})"),
                        "emb");
    REQUIRE(ir.size() == 1);
    const std::string& text = ir.begin()->second;
    INFO(text);
    REQUIRE(has_float_vectors(text));
  }
  SECTION("softmax: max with NaN propagation, sum and map; exp(x - max) kept for the map") {
    auto ir = dumped_ir(parse_or_fail(R"(graph sm(%x: f32[N, 1024]) {
  %y = softmax(%x)
  return %y
})"), "softmax");
    REQUIRE(ir.size() == 1);
    const std::string& text = ir.begin()->second;
    INFO(text);
    REQUIRE(std::regex_search(text, std::regex("reduce.fmax|maxps|fcmp nnan nsz ogt <")));
    REQUIRE(has_float_vectors(text));
    // The sum stage stores each exp(x - max) of the row in the value cache; the map reads it.
    REQUIRE(text.find("alloca [1024 x float]") != std::string::npos);
  }
}

TEST_CASE(
    "cpu emit: innermost dims merge where every index reads them as one (a GroupNorm's affine and SiLU), not where "
    "one is read alone (a transpose, a halved index)",
    "[cpu][emit]") {
  auto domain_of = [](const kir::Kernel& k) {
    std::string s;
    for (const Dim& d : k.domain) s += str_cat(s.empty() ? "" : ", ", d.to_string());
    return s;
  };
  auto only_kernel = [&](const Graph& g) {
    std::unique_ptr<Executor> exe = executable(module_of(g));
    REQUIRE(exe->program().kernels.size() == 1);
    return exe->program().kernels[0].kernel;
  };
  Graph gn = parse_or_fail(R"(graph gn(%x: f32[B, C, H, W], %s: f32[C, 1, 1], %t: f32[C, 1, 1]) {
  %m = mul(%x, %s)
  %a = add(%m, %t)
  %g = sigmoid(%a)
  %y = mul(%a, %g)
  return %y
})");
  kir::Kernel k = only_kernel(gn);
  REQUIRE(domain_of(k) == "B, C, H, W");
  std::optional<kir::Kernel> merged = kiln::cpu::collapse_rows(k);
  REQUIRE(merged);
  CHECK(domain_of(*merged) == "B, C, H*W");  // C stays: the scale and shift read it alone
  // Each row (H*W) ends in masked vector iterations, not a scalar loop.
  auto ir = dumped_ir(gn, "gn");
  REQUIRE(ir.size() == 1);
  INFO(ir.begin()->second);
  CHECK(std::regex_search(ir.begin()->second, std::regex("llvm\\.masked\\.store\\.v(8|16)f32")));
  // The same graph at 1, odd and larger sizes: the merged rows give the reference's values.
  require_ok(check_cpu_matches_reference(gn, module_of(gn),
                                         {{{"B", 1}, {"C", 1}, {"H", 1}, {"W", 1}},
                                          {{"B", 2}, {"C", 5}, {"H", 7}, {"W", 3}},
                                          {{"B", 3}, {"C", 16}, {"H", 10}, {"W", 10}}},
                                         41));
  CHECK_FALSE(kiln::cpu::collapse_rows(only_kernel(parse_or_fail(R"(graph t(%x: f32[B, H, W], %y: f32[B, W, H]) {
  %p = permute(%x, dims=[0, 2, 1])
  %z = add(%p, %y)
  return %z
})"))));
  // Nearest 2x upsampling along W reads x[flat // 2]: one division an element either way, so
  // all dims merge. Along H and W too, the row's w // 2 and the rows' h // 2 stay apart.
  Graph up = parse_or_fail(R"(graph up(%x: f32[B, H, W]) {
  %u = unsqueeze(%x, axes=[3])
  %e = expand(%u, shape=[B, H, W, 2])
  %r = reshape(%e, shape=[B, H, 2*W])
  %y = exp(%r)
  return %y
})");
  std::optional<kir::Kernel> up_merged = kiln::cpu::collapse_rows(only_kernel(up));
  REQUIRE(up_merged);
  CHECK(domain_of(*up_merged) == "2*B*H*W");
  Graph up2 = parse_or_fail(R"(graph up2(%x: f32[B, H, W]) {
  %u = unsqueeze(%x, axes=[2, 4])
  %e = expand(%u, shape=[B, H, 2, W, 2])
  %r = reshape(%e, shape=[B, 2*H, 2*W])
  %y = exp(%r)
  return %y
})");
  CHECK_FALSE(kiln::cpu::collapse_rows(only_kernel(up2)));
  // There the row splits instead: w = 2 u + r, so that x is read at u (consecutive) and the
  // output written in pairs, without gathers.
  kiln::cpu::RowForm f = kiln::cpu::row_form(only_kernel(up2));
  CHECK(f.split == 2);
  CHECK(domain_of(f.kernel) == "B, 2*H, W");
  auto up2_ir = dumped_ir(up2, "up2");
  REQUIRE(up2_ir.size() == 1);
  INFO(up2_ir.begin()->second);
  CHECK(up2_ir.begin()->second.find("masked.gather") == std::string::npos);
  CHECK(has_float_vectors(up2_ir.begin()->second));
  for (const Graph* g : {&up, &up2})
    require_ok(check_cpu_matches_reference(*g, module_of(*g),
                                           {{{"B", 1}, {"H", 1}, {"W", 1}},
                                            {{"B", 2}, {"H", 3}, {"W", 5}},
                                            {{"B", 3}, {"H", 7}, {"W", 37}},
                                            {{"B", 4}, {"H", 61}, {"W", 101}}},
                                           43));
}

TEST_CASE("cpu emit: inline exp, log, tanh, erf stay within a few ulps of the C library", "[cpu][emit]") {
  Graph g = parse_or_fail(R"(graph math(%x: f32[N]) {
  %e = exp(%x)
  %l = log(%x)
  %t = tanh(%x)
  %r = erf(%x)
  return %e, %l, %t, %r
})");
  // Dense sweeps of the interesting ranges plus every power-of-two scale up to 2^30.
  std::vector<float> xs;
  for (int i = 0; i <= 200000; ++i) xs.push_back(-110.0f + 200.0f * static_cast<float>(i) / 200000.0f);
  for (int i = 0; i <= 100000; ++i) xs.push_back(-5.0f + 10.0f * static_cast<float>(i) / 100000.0f);
  for (int e = -140; e <= 30; ++e)
    for (float m : {1.0f, 1.1f, 1.4142135f, 1.5f, 1.9999999f}) xs.push_back(std::ldexp(m, e));
  HostTensor x(DType::f32, {static_cast<int64_t>(xs.size())});
  for (size_t i = 0; i < xs.size(); ++i) x.set(static_cast<int64_t>(i), xs[i]);
  TensorMap args;
  args.emplace("x", std::move(x));
  auto m = module_of(g);
  auto exe = executable(m);
  absl::StatusOr<std::vector<HostTensor>> got = run_cpu(*exe, *m, args, {{"N", static_cast<int64_t>(xs.size())}});
  REQUIRE(got.ok());
  float (*libm[])(float) = {std::exp, std::log, std::tanh, std::erf};
  // Bounds on the ulp error (differences below 1e-9 do not count: ulps of tiny results
  // near zero crossings are meaningless at any tolerance kiln uses).
  const int64_t max_ulps[] = {2, 2, 6, 6};
  for (int f = 0; f < 4; ++f) {
    int64_t worst = 0;
    float worst_x = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      float want = libm[f](xs[i]);
      float have = static_cast<float>((*got)[f].get(static_cast<int64_t>(i)));
      if (std::isnan(want) || std::isinf(want)) {
        INFO("f " << f << " x " << xs[i] << " want " << want << " got " << have);
        REQUIRE((std::isnan(want) ? std::isnan(have) : have == want));
        continue;
      }
      if (std::fabs(want - have) <= 1e-9f) continue;
      int64_t u = ulps(want, have);
      if (u > worst) worst = u, worst_x = xs[i];
    }
    INFO("function " << f << " worst " << worst << " ulps at x = " << worst_x);
    REQUIRE(worst <= max_ulps[f]);
  }
}

TEST_CASE("cpu emit: inline atan stays within a few ulps of the C library", "[cpu][emit]") {
  Graph g = parse_or_fail("graph arc(%x: f32[N]) {\n  %y = atan(%x)\n  return %y\n}");
  std::vector<float> xs;  // both reduction thresholds (tan(pi/8), 1) densely, and every scale
  for (int i = -200000; i <= 200000; ++i) xs.push_back(3.0f * static_cast<float>(i) / 200000.0f);
  for (int e = -140; e <= 127; ++e)
    for (float m : {1.0f, 1.1f, 1.4142135f, 1.5f, 1.9999999f}) xs.push_back(std::ldexp(m, e)), xs.push_back(-std::ldexp(m, e));
  for (float v : {INFINITY, -INFINITY, NAN}) xs.push_back(v);
  HostTensor x(DType::f32, {static_cast<int64_t>(xs.size())});
  for (size_t i = 0; i < xs.size(); ++i) x.set(static_cast<int64_t>(i), xs[i]);
  TensorMap args;
  args.emplace("x", std::move(x));
  auto m = module_of(g);
  auto exe = executable(m);
  absl::StatusOr<std::vector<HostTensor>> got = run_cpu(*exe, *m, args, {{"N", static_cast<int64_t>(xs.size())}});
  REQUIRE(got.ok());
  int64_t worst = 0;
  float worst_x = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    float want = std::atan(xs[i]), have = static_cast<float>((*got)[0].get(static_cast<int64_t>(i)));
    if (std::isnan(want)) {
      CHECK(std::isnan(have));
      continue;
    }
    int64_t u = ulps(want, have);
    if (u > worst) worst = u, worst_x = xs[i];
  }
  INFO("worst " << worst << " ulps at x = " << worst_x);
  REQUIRE(worst <= 4);  // 3 seen with FMA
}

TEST_CASE("cpu emit: the tanh gelu (the gelu_tanh intrinsic) stays within a few ulps of its formula", "[cpu][emit]") {
  Graph g = parse_or_fail(R"(graph g(%x: f32[N]) {
  %y = gelu(%x, approximate="tanh")
  return %y
})");
  std::vector<float> xs;
  for (int i = 0; i <= 200000; ++i) xs.push_back(-12.0f + 24.0f * static_cast<float>(i) / 200000.0f);
  for (int e = -140; e <= 6; ++e)
    for (float m : {1.0f, 1.1f, 1.4142135f, 1.5f, 1.9999999f}) {
      xs.push_back(std::ldexp(m, e));
      xs.push_back(-std::ldexp(m, e));
    }
  for (float v : {1e4f, -1e4f, 1e30f, -1e30f, INFINITY, NAN}) xs.push_back(v);
  HostTensor x(DType::f32, {static_cast<int64_t>(xs.size())});
  for (size_t i = 0; i < xs.size(); ++i) x.set(static_cast<int64_t>(i), xs[i]);
  TensorMap args;
  args.emplace("x", std::move(x));
  auto m = module_of(g);
  auto exe = executable(m);
  absl::StatusOr<std::vector<HostTensor>> got = run_cpu(*exe, *m, args, {{"N", static_cast<int64_t>(xs.size())}});
  REQUIRE(got.ok());
  // The error in units of 2^-24 max(|x|, 2^-126): gelu(x) is tiny where x is very negative,
  // so its own ulp is no measure there, x's is. Infinities and NaN go as the lowered form.
  double worst = 0, worst_x = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    double v = xs[i], want = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    double have = (*got)[0].get(static_cast<int64_t>(i));
    if (!std::isfinite(v)) {
      INFO("x " << v << " got " << have);
      REQUIRE((v > 0 ? have == v : std::isnan(have)));
      continue;
    }
    double err = std::fabs(have - want) / std::ldexp(std::max(std::fabs(v), 0x1p-126), -24);
    if (err > worst) worst = err, worst_x = v;
  }
  // 1.96 with the intrinsic's x / (1 + 2^(x (k0 + k1 x^2))) on AVX-512 (2.80 with the
  // lowered 0.5 x (1 + tanh(u)) it replaces).
  INFO("worst " << worst << " at x = " << worst_x);
  REQUIRE(worst <= 3);
}

TEST_CASE("cpu: JIT cache hits and build statistics", "[cpu]") {
  Graph g = parse_or_fail(R"(graph stats(%x: f32[B, 33], %w: f32[12, 33] param) {
  %l = linear(%x, %w)
  %t = tanh(%l)
  %s = sum(%t, axes=[0])
  return %s
})");  // (a sum over axis 0: one over trailing axes would run natively, never compiled)
  auto m = module_of(g);
  auto first = executable(m);
  const BuildStats& s1 = first->build_stats();
  CHECK(s1.kernels == static_cast<int>(m->kernels.size()));
  CHECK(s1.gemms == 1);
  CHECK(s1.cache_misses == s1.kernels);
  CHECK(s1.cache_memory_hits == 0);
  CHECK(s1.codegen_ms > 0);
  CHECK(s1.compile_ms > 0);
  auto second = executable(m);
  const BuildStats& s2 = second->build_stats();
  CHECK(s2.cache_memory_hits == s1.kernels);
  CHECK(s2.cache_misses == 0);
  CHECK(s2.compile_ms == 0);
  // A specialization with B baked is different code: misses again.
  auto baked = executable(m, BuildOptions{.baked = {{"B", 1}}});
  CHECK(baked->build_stats().cache_misses == s1.kernels);
  require_ok(check_cpu_matches_reference(g, m, {{{"B", 1}}, {{"B", 6}}}, 30));
}

TEST_CASE("cpu: dump_dir holds each kernel's optimized LLVM IR", "[cpu]") {
  Graph g = parse_or_fail(R"(graph two(%x: f32[B, 8]) {
  %m = max(%x, axes=[-1], keepdim=true)
  %y = sub(%x, %m)
  %z = exp(%y)
  %w = permute(%z, dims=[1, 0])
  %v = sum(%w, axes=[1])
  return %v
})");
  auto m = module_of(g);
  auto ir = dumped_ir(g, "dump");
  REQUIRE(ir.size() == m->kernels.size());
  for (const kir::Kernel& k : m->kernels) {
    INFO(k.name);
    REQUIRE(ir.contains(k.name + ".ll"));
    // Compiled without its names (codegen/module.h): the function is named by its op.
    REQUIRE(ir[k.name + ".ll"].find("define void @" + anonymous_kernel(k).name + "_") != std::string::npos);
  }
}

TEST_CASE("cpu: outputs given are written in place, repeated and argument outputs are copies", "[cpu]") {
  Graph g = parse_or_fail(R"(graph outs(%x: f32[B, 4], %y: f32[4]) {
  %a = add(%x, %y)
  %b = exp(%a)
  return %b, %x, %b, %a
})");
  auto m = module_of(g);
  auto exe = executable(m);
  TensorMap args = random_args(g, {{"B", 3}}, 7);
  require_ok(kiln::testing::check_cpu_on_args(g, m, args, {{"B", 3}}, exe.get()));
  std::vector<Tensor> in = {*Tensor::from_host(args.at("x")), *Tensor::from_host(args.at("y"))};
  std::vector<Tensor> out(4);
  out[0] = Tensor::empty_host(DType::f32, {3, 4});
  void* given = out[0].data();
  int64_t b = 3;
  require_ok(exe->run(in, std::span<const int64_t>(&b, 1), out, {}));
  REQUIRE(out[0].data() == given);
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  REQUIRE(want.ok());
  for (size_t i = 0; i < 4; ++i) {
    HostTensor h = *out[i].to_host();
    REQUIRE(compare_tensors((*want)[i], h, default_tolerance(DType::f32)).ok);
  }
}

TEST_CASE("cpu: weight prep reruns when the parameters change", "[cpu]") {
  // q/k/v projections of one input with parameters bound at run time: fuse_linear
  // concatenates the weights in a weight-prep group.
  Graph g = parse_or_fail(R"(graph qkv(%x: f32[T, 16], %wq: f32[8, 16] param, %wk: f32[8, 16] param, %wv: f32[8, 16] param) {
  %q = linear(%x, %wq)
  %k = linear(%x, %wk)
  %v = linear(%x, %wv)
  %s = add(%q, %k)
  %y = mul(%s, %v)
  return %y
})");
  auto m = module_of(g);
  bool has_prep = false;
  for (const KernelGroup& grp : m->state.schedule.groups) has_prep = has_prep || grp.weight_prep;
  REQUIRE(has_prep);
  auto exe = executable(m);
  // New parameter tensors each time, kept alive so that none reuses another's address.
  std::vector<std::vector<Tensor>> alive;
  for (uint64_t seed : {40, 41, 42})
    require_ok(kiln::testing::check_cpu_on_args(g, m, random_args(g, {{"T", 5}}, seed), {{"T", 5}}, exe.get(), &alive));
}

TEST_CASE("cpu: bad calls are located errors", "[cpu]") {
  Graph g = parse_or_fail(R"(graph bad(%x: f32[B, 4], %w: f32[4] param) {
  %y = mul(%x, %w)
  return %y
})");
  auto m = module_of(g);
  auto exe = executable(m, BuildOptions{.baked = {{"B", 1}}});
  Tensor x = Tensor::empty_host(DType::f32, {1, 4}), w = Tensor::empty_host(DType::f32, {4});
  std::vector<Tensor> out(1);
  int64_t one = 1, two = 2;
  auto message = [&](std::vector<Tensor> args, std::span<const int64_t> syms) {
    absl::Status s = exe->run(args, syms, out, {});
    REQUIRE_FALSE(s.ok());
    return status_message(s);
  };
  SECTION("wrong argument count") {
    REQUIRE_THAT(message({x}, {&one, 1}), Catch::Contains("1 arguments given, the graph takes 2"));
  }
  SECTION("wrong shape names the argument") {
    REQUIRE_THAT(message({Tensor::empty_host(DType::f32, {1, 5}), w}, {&one, 1}),
                 Catch::Contains("argument %x expects f32[1, 4]"));
  }
  SECTION("wrong dtype") {
    REQUIRE_THAT(message({x, Tensor::empty_host(DType::bf16, {4})}, {&one, 1}), Catch::Contains("argument %w"));
  }
  SECTION("a symbol value the specialization did not bake") {
    REQUIRE_THAT(message({x, w}, {&two, 1}), Catch::Contains("this specialization has B = 1, the call has B = 2"));
  }
  SECTION("wrong output shape") {
    out[0] = Tensor::empty_host(DType::f32, {2, 4});
    REQUIRE_THAT(message({x, w}, {&one, 1}), Catch::Contains("output %y expects f32[1, 4]"));
  }
}
