#include <chrono>
#include <cmath>
#include <random>

#include "runtime/cublaslt.h"
#include "runtime/tensor.h"
#include "test/common/gpu_test.h"

using namespace kiln;
using namespace kiln::cuda;

namespace {

// A dense GEMM spec (the later fields keep their defaults).
GemmSpec dense(DType dt, int64_t m, int64_t n, int64_t k, bool b_is_nk = true, int64_t batch = 1) {
  GemmSpec s;
  s.dtype = dt, s.m = m, s.n = n, s.k = k, s.b_is_nk = b_is_nk, s.batch = batch;
  return s;
}

double gelu_tanh(double x) {
  return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

double apply_epilogue(GemmEpilogue e, double acc, double bias) {
  if (has_bias(e)) acc += bias;
  switch (e) {
    case GemmEpilogue::relu:
    case GemmEpilogue::relu_bias: return std::max(acc, 0.0);
    case GemmEpilogue::gelu:
    case GemmEpilogue::gelu_bias: return gelu_tanh(acc);
    default: return acc;
  }
}

// Host reference of one output element of batch entry `bi`.
double reference(const GemmSpec& s, const HostTensor& a, const HostTensor& b, const HostTensor& bias,
                 int64_t bi, int64_t i, int64_t j) {
  int64_t sa = s.batch_stride_a < 0 ? s.m * s.k : s.batch_stride_a;
  int64_t sb = s.batch_stride_b < 0 ? s.n * s.k : s.batch_stride_b;
  double acc = 0;
  for (int64_t p = 0; p < s.k; ++p) {
    double bv = s.b_is_nk ? b.get(bi * sb + j * s.k + p) : b.get(bi * sb + p * s.n + j);
    acc += a.get(bi * sa + i * s.k + p) * bv;
  }
  return apply_epilogue(s.epilogue, acc, has_bias(s.epilogue) ? bias.get(j) : 0.0);
}

double tolerance(DType t) { return t == DType::f32 ? 1e-4 : t == DType::f16 ? 2e-3 : 1e-2; }

struct GemmRun {
  double worst = 0;  // largest |got - ref| / (1 + |ref|)
  double ms = 0;
};

// Runs `s` on random inputs and compares `samples` output elements (all when <= 0).
// `algo` null: the heuristic's choice. A spec with a residual adds a random one, held in
// C itself when `residual_in_c` (cuBLASLt's in-place C = D).
GemmRun run_gemm(CublasLt& lt, const GemmSpec& s, uint64_t seed, int64_t samples, int timed_reps = 0,
                 const GemmAlgorithm* algo = nullptr, bool residual_in_c = false) {
  std::mt19937_64 rng(seed);
  int64_t batch_a = s.batch_stride_a == 0 ? 1 : s.batch, batch_b = s.batch_stride_b == 0 ? 1 : s.batch;
  HostTensor a(s.dtype, {batch_a * s.m * s.k}), b(s.dtype, {batch_b * s.n * s.k}), bias(s.dtype, {s.n});
  a.fill_random(rng, -1, 1);
  b.fill_random(rng, -1, 1);
  bias.fill_random(rng, -1, 1);
  auto da = Tensor::from_host(a, DeviceId::cuda(0)), db = Tensor::from_host(b, DeviceId::cuda(0)),
       dbias = Tensor::from_host(bias, DeviceId::cuda(0));
  HostTensor res(s.dtype, {s.batch * s.m * s.n});
  res.fill_random(rng, -2, 2);
  auto dres = Tensor::from_host(res, DeviceId::cuda(0));
  auto dc = Tensor::empty_cuda(s.dtype, {s.batch * s.m * s.n});
  REQUIRE(da.ok());
  REQUIRE(db.ok());
  REQUIRE(dbias.ok());
  REQUIRE(dres.ok());
  REQUIRE(dc.ok());
  auto ptr = [](const Tensor& t) { return CUdeviceptr(t.data()); };
  if (s.residual && residual_in_c) {
    dc = Tensor::from_host(res, DeviceId::cuda(0));
    REQUIRE(dc.ok());
  } else {
    REQUIRE(check((*driver())->cuMemsetD8(ptr(*dc), 0xff, size_t(dc->numel() * dtype_size(s.dtype))), "poison").ok());
  }
  CUdeviceptr residual = !s.residual ? 0 : residual_in_c ? ptr(*dc) : ptr(*dres);
  auto status = lt.gemm(s, ptr(*da), ptr(*db), ptr(*dc), ptr(*dbias), nullptr, algo, residual);
  INFO(status_message(status));
  REQUIRE(status.ok());
  GemmRun r;
  if (timed_reps > 0) {
    auto ctx = Context::primary(0);
    auto start = Event::create(**ctx), end = Event::create(**ctx);
    auto algos = lt.algorithms(s, 1);
    REQUIRE(algos.ok());
    REQUIRE(start->record(nullptr).ok());
    for (int i = 0; i < timed_reps; ++i)
      REQUIRE(lt.gemm(s, ptr(*da), ptr(*db), ptr(*dc), ptr(*dbias), nullptr, &(*algos)[0], residual).ok());
    REQUIRE(end->record(nullptr).ok());
    REQUIRE(end->synchronize().ok());
    r.ms = *Event::elapsed_ms(*start, *end) / timed_reps;
  }
  auto c = dc->to_host();
  REQUIRE(c.ok());
  auto check_one = [&](int64_t bi, int64_t i, int64_t j) {
    const int64_t at = (bi * s.m + i) * s.n + j;
    double ref = reference(s, a, b, bias, bi, i, j) + (s.residual ? res.get(at) : 0.0);
    double got = c->get(at);
    double err = std::isnan(got) ? INFINITY : std::abs(got - ref) / (1 + std::abs(ref));
    r.worst = std::max(r.worst, err);
  };
  if (samples <= 0) {
    for (int64_t bi = 0; bi < s.batch; ++bi)
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t j = 0; j < s.n; ++j) check_one(bi, i, j);
  } else {
    std::uniform_int_distribution<int64_t> ub(0, s.batch - 1), um(0, s.m - 1), un(0, s.n - 1);
    for (int64_t t = 0; t < samples; ++t) check_one(ub(rng), um(rng), un(rng));
    check_one(s.batch - 1, s.m - 1, s.n - 1);  // the far corner
  }
  return r;
}

}  // namespace

TEST_CASE("cublaslt: GEMM specs are validated without a GPU", "[runtime][cublaslt]") {
  GemmSpec s;
  s.m = 4, s.n = 8, s.k = 16;
  CHECK(check_gemm_spec(s).ok());
  GemmSpec bad = s;
  bad.dtype = DType::i32;
  CHECK(status_message(check_gemm_spec(bad)).find("not i32") != std::string::npos);
  bad = s;
  bad.k = 0;
  CHECK(status_message(check_gemm_spec(bad)).find("K=0") != std::string::npos);
  bad = s;
  bad.batch = 2;
  bad.batch_stride_c = 0;
  CHECK(!check_gemm_spec(bad).ok());
  bad = s;
  bad.batch_stride_a = -2;
  CHECK(!check_gemm_spec(bad).ok());
  GemmSpec res = s;
  res.residual = true;
  res.epilogue = GemmEpilogue::bias;
  CHECK(check_gemm_spec(res).ok());
  res.epilogue = GemmEpilogue::relu;
  CHECK(status_message(check_gemm_spec(res)).find("residual") != std::string::npos);
  res.epilogue = GemmEpilogue::none;
  res.out_dtype = DType::f32;
  CHECK(!check_gemm_spec(res).ok());
  CHECK(gemm_epilogue_name(GemmEpilogue::gelu_bias) == "gelu_bias");
}

TEST_CASE("cublaslt: handle creation without a GPU reports why", "[runtime][cublaslt]") {
  if (test::gpu_unavailable_reason().empty()) return;  // the [gpu] tests create real handles
  auto ctx = Context::primary(0);
  REQUIRE(!ctx.ok());
  CHECK(status_message(ctx.status()).rfind("no CUDA device: ", 0) == 0);
}

TEST_CASE("cublaslt: GEMMs match the host for every dtype, layout, epilogue and batch",
          "[runtime][cublaslt][gpu]") {
  KILN_REQUIRE_GPU();
  auto ctx = Context::primary(0);
  REQUIRE(ctx.ok());
  auto lt = CublasLt::create(**ctx);
  REQUIRE(lt.ok());
  uint64_t seed = 100;
  double worst_bf16 = 0;
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    for (bool nk : {true, false}) {
      for (auto [m, n, k] : {std::tuple{1, 8, 16}, {37, 24, 40}, {128, 72, 257}}) {
        for (GemmEpilogue e : {GemmEpilogue::none, GemmEpilogue::relu, GemmEpilogue::gelu,
                               GemmEpilogue::bias, GemmEpilogue::relu_bias, GemmEpilogue::gelu_bias}) {
          GemmSpec s = dense(dt, m, n, k, nk);
          s.epilogue = e;
          INFO(dtype_name(dt) << " b_is_nk=" << nk << " M=" << m << " N=" << n << " K=" << k
                              << " epilogue=" << gemm_epilogue_name(e));
          GemmRun r = run_gemm(**lt, s, seed++, 0);
          CHECK(r.worst <= tolerance(dt));
          if (dt == DType::bf16) worst_bf16 = std::max(worst_bf16, r.worst);
        }
      }
    }
  }
  // Batched: dense A and C, weights shared across the batch (stride 0) and per batch.
  for (int64_t stride_b : {int64_t(0), int64_t(-1)}) {
    GemmSpec s = dense(DType::bf16, 19, 40, 24, true, 3);
    s.batch_stride_b = stride_b;
    s.epilogue = GemmEpilogue::bias;
    INFO("batched, batch_stride_b=" << stride_b);
    CHECK(run_gemm(**lt, s, seed++, 0).worst <= tolerance(DType::bf16));
  }
  // A residual added by the library (beta = 1), after the bias, in a buffer of its own or in
  // C itself; batched too. And the spec rejects a residual with an activation or an f32 C.
  for (GemmEpilogue e : {GemmEpilogue::none, GemmEpilogue::bias})
    for (bool in_c : {false, true})
      for (int64_t batch : {1, 3}) {
        GemmSpec s = dense(DType::bf16, 37, 64, 40, true, batch);
        s.epilogue = e;
        s.residual = true;
        INFO("residual, epilogue " << gemm_epilogue_name(e) << (in_c ? " in C" : "") << " batch " << batch);
        CHECK(run_gemm(**lt, s, seed++, 0, 0, nullptr, in_c).worst <= tolerance(DType::bf16));
      }
  auto algos = (*lt)->algorithms(dense(DType::bf16, 512, 512, 512), 8);
  REQUIRE(algos.ok());
  CHECK(!algos->empty());
  // Every algorithm the heuristic offers computes the same product.
  GemmSpec s = dense(DType::bf16, 96, 80, 64);
  auto top4 = (*lt)->algorithms(s, 4);
  REQUIRE(top4.ok());
  for (const GemmAlgorithm& alg : *top4) {
    CHECK(alg.workspace_bytes <= size_t((*lt)->workspace_bytes()));
    CHECK(run_gemm(**lt, s, seed++, 0, 0, &alg).worst <= tolerance(DType::bf16));
  }
  test::gpu_summary().push_back(
      {"cuBLASLt f32/f16/bf16 x 2 layouts x 6 epilogues x 3 shapes + batch",
       fmt::format("all match host; worst bf16 rel err {:.2e}; top-8 heuristic gave {}", worst_bf16,
                   algos->size())});
}

TEST_CASE("cublaslt: bf16 4096^3 GEMM is right on sampled outputs, and fast", "[runtime][cublaslt][gpu]") {
  KILN_REQUIRE_GPU();
  auto ctx = Context::primary(0);
  REQUIRE(ctx.ok());
  auto lt = CublasLt::create(**ctx);
  REQUIRE(lt.ok());
  GemmSpec s = dense(DType::bf16, 4096, 4096, 4096);
  GemmRun r = run_gemm(**lt, s, 2026, 512, 50);
  CHECK(r.worst <= tolerance(DType::bf16));
  double tflops = 2.0 * 4096.0 * 4096.0 * 4096.0 / (r.ms * 1e-3) / 1e12;
  CHECK(tflops > 50);
  test::gpu_summary().push_back(
      {"cuBLASLt bf16 GEMM 4096^3 (B as [N,K]), mean of 50",
       fmt::format("{:.3f} ms, {:.0f} TFLOP/s; 513 sampled outputs, worst rel err {:.2e}", r.ms, tflops,
                   r.worst)});
}
