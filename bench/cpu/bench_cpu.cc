// CPU backend benchmarks: each workload compiled with compile(g, {.device = Cpu}), run by the
// reference evaluator and by a hand-written C++ loop, timed in the same run, next to the copy
// bandwidth of this machine (memory-bound workloads take turns with memcpy and with a copy
// written with ordinary stores over several rounds). Prints a Markdown table
// (bench/RESULTS.md, "CPU backend"), then the fused attention step against its
// decomposition. Usage: kiln_bench_cpu [--quick] [TEXT] (TEXT: only the workloads whose name
// holds it; "attention": only the attention table; "pool": only the thread pool's cost per
// loop at each thread count; "depthwise": only the native depthwise conv's two methods by
// plane size, one thread)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "runtime/cpu/depthwise.h"
#include "runtime/cpu/device.h"
#include "runtime/cpu/thread_pool.h"

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

// Median wall time of `fn` in ms over enough runs to fill `budget_ms` (at least 3).
double time_ms(const std::function<void()>& fn, double budget_ms = 400) {
  fn();  // warm-up
  std::vector<double> t;
  Clock::time_point start = Clock::now();
  while (t.size() < 3 || (std::chrono::duration<double, std::milli>(Clock::now() - start).count() < budget_ms &&
                          t.size() < 200)) {
    Clock::time_point t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// GB/s of copying `bytes` (counted read + written) with `threads` threads, timed for about
// `budget_ms`: with glibc's memcpy, which picks its own way for a copy this large (by CPU:
// non-temporal stores, `rep movsb`), or with `ordinary_stores`, a loop of plain stores (a
// word-wise xor with a zero the compiler cannot see), written as a kernel's stores are.
double copy_gbs(int64_t bytes, int threads, bool ordinary_stores = false, double budget_ms = 400) {
  static volatile uint64_t zero = 0;
  const int64_t words = bytes / 8;
  std::vector<uint64_t> src(static_cast<size_t>(words), 1), dst(static_cast<size_t>(words), 0);
  cpu::ThreadPool& pool = cpu::ThreadPool::shared();
  const uint64_t salt = zero;
  double ms = time_ms(
      [&] {
        pool.parallel_for(threads, [&](int64_t c) {
          int64_t lo = words * c / threads, hi = words * (c + 1) / threads;
          if (!ordinary_stores) {
            std::memcpy(dst.data() + lo, src.data() + lo, static_cast<size_t>(hi - lo) * 8);
            return;
          }
          for (int64_t i = lo; i < hi; ++i) dst[static_cast<size_t>(i)] = src[static_cast<size_t>(i)] ^ salt;
        });
      },
      budget_ms);
  return 2.0 * static_cast<double>(words * 8) / (ms * 1e6);
}

float bf16_to_f32(uint16_t b) { return bf16_bits_to_float(b); }
uint16_t f32_to_bf16(float f) { return float_to_bf16_bits(f); }
float gelu(float v) { return 0.5f * v * (1.0f + std::erf(v * 0.70710678f)); }
float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

struct Workload {
  std::string name;
  std::string ir;
  Bindings bindings;
  bool memory_bound;
  double flops;  // for compute-bound ones: useful multiply-adds * 2
  // The hand-written loop: reads the arguments (CompiledModule::args order), writes output 0.
  std::function<void(const std::vector<HostTensor>& in, HostTensor& out)> baseline;
};

constexpr int64_t kRows = 8192, kCols = 1024;
constexpr int kRounds = 5;  // kernel/copy turns per memory-bound workload

std::vector<Workload> workloads(bool quick) {
  int64_t rows = quick ? 512 : kRows, cols = kCols;
  std::string R = std::to_string(cols);
  // fn(row, cols) for every row, rows split into contiguous blocks over the thread pool.
  auto rowwise = [](int64_t rows, int64_t cols, auto fn) {
    int64_t blocks = std::min<int64_t>(rows, 4 * cpu::ThreadPool::shared().threads());
    cpu::ThreadPool::shared().parallel_for(blocks, [&](int64_t c) {
      for (int64_t r = rows * c / blocks; r < rows * (c + 1) / blocks; ++r) fn(r, cols);
    });
  };
  std::vector<Workload> w;
  std::string ew = str_cat(R"(graph ew(%x: T[N, C], %a: T[C], %b: T[C]) {
  %m = mul(%x, %a)
  %p = add(%m, %b)
  %g = gelu(%p)
  %s = sigmoid(%x)
  %y = mul(%g, %s)
  return %y
})");
  auto with = [](std::string s, const std::string& from, const std::string& to) {
    for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) s.replace(at, from.size(), to);
    return s;
  };
  std::string ew_f32 = with(with(ew, "T[", "f32["), ", C]", ", " + R + "]");
  ew_f32 = with(ew_f32, "[C]", "[" + R + "]");
  w.push_back({"gelu(x*a+b)*sigmoid(x) f32", ew_f32, {{"N", rows}}, true, 0,
               [=](const std::vector<HostTensor>& in, HostTensor& out) {
                 const float *x = reinterpret_cast<const float*>(in[0].data()),
                             *a = reinterpret_cast<const float*>(in[1].data()),
                             *b = reinterpret_cast<const float*>(in[2].data());
                 float* y = reinterpret_cast<float*>(out.data());
                 rowwise(rows, cols, [&](int64_t r, int64_t n) {
                   for (int64_t j = 0; j < n; ++j) {
                     float v = x[r * n + j];
                     y[r * n + j] = gelu(v * a[j] + b[j]) * sigmoid(v);
                   }
                 });
               }});
  std::string ew_bf16 = with(with(ew, "T[", "bf16["), ", C]", ", " + R + "]");
  ew_bf16 = with(ew_bf16, "[C]", "[" + R + "]");
  w.push_back({"gelu(x*a+b)*sigmoid(x) bf16", ew_bf16, {{"N", rows}}, true, 0,
               [=](const std::vector<HostTensor>& in, HostTensor& out) {
                 const uint16_t *x = reinterpret_cast<const uint16_t*>(in[0].data()),
                                *a = reinterpret_cast<const uint16_t*>(in[1].data()),
                                *b = reinterpret_cast<const uint16_t*>(in[2].data());
                 uint16_t* y = reinterpret_cast<uint16_t*>(out.data());
                 rowwise(rows, cols, [&](int64_t r, int64_t n) {
                   for (int64_t j = 0; j < n; ++j) {
                     float v = bf16_to_f32(x[r * n + j]);
                     y[r * n + j] = f32_to_bf16(gelu(v * bf16_to_f32(a[j]) + bf16_to_f32(b[j])) * sigmoid(v));
                   }
                 });
               }});
  w.push_back({"rms_norm(x+res)*w bf16",
               with(R"(graph rms(%x: bf16[N, C], %res: bf16[N, C], %w: bf16[C]) {
  %h = add(%x, %res)
  %y = rms_norm(%h, %w, axes=[-1], eps=1e-06)
  return %y
})", "C]", R + "]"),
               {{"N", rows}}, true, 0,
               [=](const std::vector<HostTensor>& in, HostTensor& out) {
                 const uint16_t *x = reinterpret_cast<const uint16_t*>(in[0].data()),
                                *res = reinterpret_cast<const uint16_t*>(in[1].data()),
                                *wt = reinterpret_cast<const uint16_t*>(in[2].data());
                 uint16_t* y = reinterpret_cast<uint16_t*>(out.data());
                 rowwise(rows, cols, [&](int64_t r, int64_t n) {
                   std::vector<float> h(static_cast<size_t>(n));
                   float ss = 0;
                   for (int64_t j = 0; j < n; ++j) {
                     h[j] = bf16_to_f32(f32_to_bf16(bf16_to_f32(x[r * n + j]) + bf16_to_f32(res[r * n + j])));
                     ss += h[j] * h[j];
                   }
                   float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + 1e-6f);
                   for (int64_t j = 0; j < n; ++j) y[r * n + j] = f32_to_bf16(h[j] * inv * bf16_to_f32(wt[j]));
                 });
               }});
  w.push_back({"softmax f32", with("graph sm(%x: f32[N, C]) {\n  %y = softmax(%x)\n  return %y\n}", "C]", R + "]"),
               {{"N", rows}}, true, 0,
               [=](const std::vector<HostTensor>& in, HostTensor& out) {
                 const float* x = reinterpret_cast<const float*>(in[0].data());
                 float* y = reinterpret_cast<float*>(out.data());
                 rowwise(rows, cols, [&](int64_t r, int64_t n) {
                   const float* xr = x + r * n;
                   float* yr = y + r * n;
                   float m = -INFINITY, s = 0;
                   for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
                   for (int64_t j = 0; j < n; ++j) s += (yr[j] = std::exp(xr[j] - m));
                   for (int64_t j = 0; j < n; ++j) yr[j] /= s;
                 });
               }});
  w.push_back({"layer_norm+gelu f32",
               with(R"(graph ln(%x: f32[N, C], %g: f32[C], %b: f32[C]) {
  %l = layer_norm(%x, %g, %b, axes=[-1], eps=1e-05)
  %y = gelu(%l)
  return %y
})", "C]", R + "]"),
               {{"N", rows}}, true, 0,
               [=](const std::vector<HostTensor>& in, HostTensor& out) {
                 const float *x = reinterpret_cast<const float*>(in[0].data()),
                             *g = reinterpret_cast<const float*>(in[1].data()),
                             *b = reinterpret_cast<const float*>(in[2].data());
                 float* y = reinterpret_cast<float*>(out.data());
                 rowwise(rows, cols, [&](int64_t r, int64_t n) {
                   const float* xr = x + r * n;
                   float mean = 0, var = 0;
                   for (int64_t j = 0; j < n; ++j) mean += xr[j];
                   mean /= static_cast<float>(n);
                   for (int64_t j = 0; j < n; ++j) var += (xr[j] - mean) * (xr[j] - mean);
                   float inv = 1.0f / std::sqrt(var / static_cast<float>(n) + 1e-5f);
                   for (int64_t j = 0; j < n; ++j) y[r * n + j] = gelu((xr[j] - mean) * inv * g[j] + b[j]);
                 });
               }});
  int64_t m = quick ? 64 : 512, k = 1024, n = 1024;
  w.push_back({"linear+bias+gelu f32 (512x1024x1024)",
               str_cat("graph lin(%x: f32[M, ", k, "], %w: f32[", n, ", ", k, "] param, %b: f32[", n,
                       "] param) {\n  %l = linear(%x, %w, %b)\n  %y = gelu(%l)\n  return %y\n}"),
               {{"M", m}}, false, 2.0 * static_cast<double>(m * n * k),
               [=](const std::vector<HostTensor>& in, HostTensor& out) {
                 const float *x = reinterpret_cast<const float*>(in[0].data()),
                             *wt = reinterpret_cast<const float*>(in[1].data()),
                             *b = reinterpret_cast<const float*>(in[2].data());
                 float* y = reinterpret_cast<float*>(out.data());
                 rowwise(m, n, [&](int64_t i, int64_t nn) {
                   for (int64_t j = 0; j < nn; ++j) {
                     float acc = 0;
                     for (int64_t t = 0; t < k; ++t) acc += x[i * k + t] * wt[j * k + t];
                     y[i * nn + j] = gelu(acc + b[j]);
                   }
                 });
               }});
  // The Llama MLP at a prefill size and at one token (decoding: GEMMs of one row).
  const int64_t d = 1024, f = 2816;
  auto mlp = [&](int64_t tokens) -> Workload {
    return {str_cat("Llama MLP bf16 (", tokens, tokens == 1 ? " token" : " tokens", ", 1024 -> 2816 -> 1024)"),
            str_cat("graph mlp(%x: bf16[M, ", d, "], %w_gate: bf16[", f, ", ", d, "] param, %w_up: bf16[", f, ", ", d,
                    "] param, %w_down: bf16[", d, ", ", f, R"(] param) {
  %g = linear(%x, %w_gate)
  %u = linear(%x, %w_up)
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down)
  return %y
})"),
            {{"M", tokens}}, false, 2.0 * static_cast<double>(tokens * 3 * d * f),
            [=](const std::vector<HostTensor>& in, HostTensor& out) {
              auto bf = [](const HostTensor& t) { return reinterpret_cast<const uint16_t*>(t.data()); };
              const uint16_t *x = bf(in[0]), *wg = bf(in[1]), *wu = bf(in[2]), *wd = bf(in[3]);
              std::vector<float> h(static_cast<size_t>(tokens * f));
              rowwise(tokens, f, [&](int64_t i, int64_t ff) {
                for (int64_t j = 0; j < ff; ++j) {
                  float g = 0, u = 0;
                  for (int64_t t = 0; t < d; ++t) {
                    float xv = bf16_to_f32(x[i * d + t]);
                    g += xv * bf16_to_f32(wg[j * d + t]);
                    u += xv * bf16_to_f32(wu[j * d + t]);
                  }
                  auto round = [](float v) { return bf16_to_f32(f32_to_bf16(v)); };
                  float gb = round(g), ub = round(u);
                  h[i * ff + j] = round(round(gb * sigmoid(gb)) * ub);
                }
              });
              uint16_t* y = reinterpret_cast<uint16_t*>(out.data());
              rowwise(tokens, d, [&](int64_t i, int64_t dd) {
                for (int64_t j = 0; j < dd; ++j) {
                  float acc = 0;
                  for (int64_t t = 0; t < f; ++t) acc += h[i * f + t] * bf16_to_f32(wd[j * f + t]);
                  y[i * dd + j] = f32_to_bf16(acc);
                }
              });
            }};
  };
  // A few rows through an f32 weight (small-batch decoding): the [K, N] weight copy's case.
  int64_t few = 16;
  w.push_back({str_cat("linear f32 (", few, "x1024x1024)"),
               str_cat("graph lf(%x: f32[M, ", k, "], %w: f32[", n, ", ", k, "] param) {\n  %y = linear(%x, %w)\n",
                       "  return %y\n}"),
               {{"M", few}}, false, 2.0 * static_cast<double>(few * n * k),
               [=](const std::vector<HostTensor>& in, HostTensor& out) {
                 const float *x = reinterpret_cast<const float*>(in[0].data()),
                             *wt = reinterpret_cast<const float*>(in[1].data());
                 float* y = reinterpret_cast<float*>(out.data());
                 rowwise(few, n, [&](int64_t i, int64_t nn) {
                   for (int64_t j = 0; j < nn; ++j) {
                     float acc = 0;
                     for (int64_t t = 0; t < k; ++t) acc += x[i * k + t] * wt[j * k + t];
                     y[i * nn + j] = acc;
                   }
                 });
               }});
  w.push_back(mlp(quick ? 8 : 32));
  w.push_back(mlp(1));
  // The operands of exported transformers (issue 16): a reshape [B, S, H] -> [B*S, H] before
  // a linear, and the attention heads merge (permute [B, nh, S, hd] -> [B, S, nh, hd],
  // reshape to [B, S, nh*hd]) before the output projection, each next to the same GEMM
  // on a plain 2-D input, the ceiling.
  int64_t batch = quick ? 2 : 8, seq = 128, hidden = 256, out_n = 1024;
  auto plain_linear = [](int64_t rows, int64_t kk, int64_t nn, auto a_at) {
    return [=](const std::vector<HostTensor>& in, HostTensor& out) {
      const float *x = reinterpret_cast<const float*>(in[0].data()), *wt = reinterpret_cast<const float*>(in[1].data());
      float* y = reinterpret_cast<float*>(out.data());
      cpu::ThreadPool::shared().parallel_for(rows, [&](int64_t i) {
        for (int64_t j = 0; j < nn; ++j) {
          float acc = 0;
          for (int64_t t = 0; t < kk; ++t) acc += x[a_at(i, t)] * wt[j * kk + t];
          y[i * nn + j] = acc;
        }
      });
    };
  };
  auto row_major = [hidden](int64_t i, int64_t t) { return i * hidden + t; };
  double lin_flops = 2.0 * static_cast<double>(batch * seq * hidden * out_n);
  w.push_back({str_cat("reshape [B,S,256]->[B*S,256] + linear 1024 f32 (B=", batch, ", S=", seq, ")"),
               str_cat("graph rl(%x: f32[B, S, ", hidden, "], %w: f32[", out_n, ", ", hidden, "] param) {\n",
                       "  %r = reshape(%x, shape=[-1, ", hidden, "])\n  %y = linear(%r, %w)\n  return %y\n}"),
               {{"B", batch}, {"S", seq}}, false, lin_flops, plain_linear(batch * seq, hidden, out_n, row_major)});
  w.push_back({str_cat("  ceiling: linear 1024 f32 on [M,256] (M=", batch * seq, ")"),
               str_cat("graph l2(%x: f32[M, ", hidden, "], %w: f32[", out_n, ", ", hidden, "] param) {\n",
                       "  %y = linear(%x, %w)\n  return %y\n}"),
               {{"M", batch * seq}}, false, lin_flops, plain_linear(batch * seq, hidden, out_n, row_major)});
  int64_t hb = quick ? 1 : 4, nh = 8, hd = 32;
  double merge_flops = 2.0 * static_cast<double>(hb * seq * hidden * hidden);
  // Row (b, s) of the merged heads, element h*hd + d, is x[b, h, s, d].
  auto heads_at = [=](int64_t i, int64_t t) { return (((i / seq) * nh + t / hd) * seq + i % seq) * hd + t % hd; };
  w.push_back({str_cat("heads merge [B,8,S,32]->[B,S,256] + linear 256 f32 (B=", hb, ", S=", seq, ")"),
               str_cat("graph hm(%x: f32[B, ", nh, ", S, ", hd, "], %w: f32[", hidden, ", ", hidden, "] param) {\n",
                       "  %p = permute(%x, dims=[0, 2, 1, 3])\n  %r = reshape(%p, shape=[B, S, ", hidden, "])\n",
                       "  %y = linear(%r, %w)\n  return %y\n}"),
               {{"B", hb}, {"S", seq}}, false, merge_flops, plain_linear(hb * seq, hidden, hidden, heads_at)});
  w.push_back({str_cat("  ceiling: linear 256 f32 on [M,256] (M=", hb * seq, ")"),
               str_cat("graph l3(%x: f32[M, ", hidden, "], %w: f32[", hidden, ", ", hidden, "] param) {\n",
                       "  %y = linear(%x, %w)\n  return %y\n}"),
               {{"M", hb * seq}}, false, merge_flops, plain_linear(hb * seq, hidden, hidden, row_major)});
  return w;
}

std::string machine() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return str_cat(model, ", ", cpu::host_description());
}

// The fused attention step (runtime/cpu/attention.h) against the decomposition it replaces
// (GEMM -> softmax -> GEMM through a [B, H, Tq, Tk] f32 score buffer), both compiled for the
// CPU and timed in the same run; checked against each other. FLOPs count 4 T^2 D per head
// (halved when causal).
int attention_table(bool quick) {
  std::printf("\n| attention (B=1, H=8, D=64, f32) | fused ms | decomposed ms | fused / decomposed | fused GFLOP/s | "
              "check |\n|---|---:|---:|---:|---:|---|\n");
  int failures = 0;
  for (int64_t t : quick ? std::vector<int64_t>{512} : std::vector<int64_t>{512, 2048})
    for (bool causal : {false, true}) {
      std::string ir = str_cat("graph att(%q: f32[1, 8, ", t, ", 64], %k: f32[1, 8, ", t, ", 64], %v: f32[1, 8, ", t,
                               ", 64]) {\n  %a = attention(%q, %k, %v", causal ? ", causal=true" : "", ")\n  return %a\n}\n");
      Graph g = *parse_graph(ir);
      TensorMap args = random_args(g, {}, 2);
      std::vector<Tensor> in;
      for (const Value* a : g.args()) in.push_back(*Tensor::from_host(args.at(a->name())));
      double ms[2];
      std::vector<HostTensor> outs;
      for (bool fused : {true, false}) {
        absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu, .fused_attention = fused});
        if (!cg.ok()) {
          std::fprintf(stderr, "attention T=%ld: %s\n", static_cast<long>(t), status_message(cg.status()).c_str());
          return 1;
        }
        std::vector<Tensor> out(1);
        if (absl::Status st = cg->run(in, out); !st.ok()) {
          std::fprintf(stderr, "attention T=%ld: %s\n", static_cast<long>(t), status_message(st).c_str());
          return 1;
        }
        ms[fused ? 0 : 1] = time_ms([&] { (void)cg->run(in, out); });
        outs.push_back(*out[0].to_host());
      }
      Comparison c = compare_tensors(outs[1], outs[0], default_tolerance(DType::f32));
      failures += c.ok ? 0 : 1;
      double flops = 4.0 * 8 * t * t * 64 / (causal ? 2 : 1);
      std::printf("| T=%ld%s | %.2f | %.2f | %.2fx | %.1f | %s |\n", static_cast<long>(t), causal ? " causal" : "", ms[0],
                  ms[1], ms[0] / ms[1], flops / (ms[0] * 1e6), c.ok ? "ok" : "MISMATCH");
      std::fflush(stdout);
    }
  return failures;
}

// A chain of `n` dependent multiply-adds the compiler cannot drop: arithmetic of known length.
float chain(int64_t n) {
  float x = 1.0f;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 0.999f + 0.001f;
    asm volatile("" : "+x"(x));
  }
  return x;
}

// The thread pool's cost: a loop of W us of arithmetic split as ThreadPool::parallel_ranges
// splits one (4 chunks per thread) on t threads, its median time in us. Where t threads take
// longer than fewer, the loop is not worth them here (ThreadPool::kMinThreadNs: 10 us each).
void pool_table() {
  cpu::ThreadPool& pool = cpu::ThreadPool::shared();
  const int64_t calibrate = 1 << 22;
  const double us_per_step = time_ms([&] { (void)chain(calibrate); }) * 1e3 / static_cast<double>(calibrate);
  std::vector<int> counts;
  for (int t = 1; t < pool.threads(); t *= 2) counts.push_back(t);
  counts.push_back(pool.threads());
  std::printf("machine: %s\n\n| work us |", machine().c_str());
  for (int t : counts) std::printf(" %d thread%s |", t, t == 1 ? "" : "s");
  std::printf("\n|---:|");
  for (size_t i = 0; i < counts.size(); ++i) std::printf("---:|");
  std::printf("\n");
  for (double w : {2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 400.0}) {
    std::printf("| %.0f |", w);
    for (int t : counts) {
      int64_t chunks = 4 * t, steps = static_cast<int64_t>(w / us_per_step) / chunks;
      double ms = time_ms(
          [&] {
            pool.parallel_for(
                chunks, [&](int64_t) { (void)chain(steps); }, t);
          },
          100);
      std::printf(" %.1f |", ms * 1e3);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
}

double thread_cpu_us() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

// The native depthwise conv (3x3, bias, ReLU6) by method on one thread, median us of thread
// CPU time per call (a loaded build machine's fair measure), on mobilenet_v2's shapes and larger planes: where each
// method wins (choose_depthwise's kInterleavedTileBytes) and what Auto picks. The two methods' outputs must agree
// exactly (both sum the taps in the reference's order).
int depthwise_table() {
  cpu::ThreadPool one(1);
  std::printf(
      "machine: %s\n\n| planes (N x C) | input | stride | planes us | interleaved us | ratio | auto |\n"
      "|---|---|---:|---:|---:|---:|---|\n",
      machine().c_str());
  struct Shape {
    int64_t n, c, hw, stride;
  };
  for (Shape s : std::vector<Shape>{{2, 16, 20, 1},
                                    {2, 48, 20, 2},
                                    {2, 96, 10, 1},
                                    {2, 96, 10, 2},
                                    {2, 96, 5, 1},
                                    {2, 96, 3, 2},
                                    {1, 32, 112, 1},
                                    {1, 144, 56, 2},
                                    {1, 144, 56, 1},
                                    {1, 192, 28, 1},
                                    {1, 384, 14, 1},
                                    {1, 960, 7, 1},
                                    {8, 64, 40, 1},
                                    {1, 32, 80, 1}}) {
    cpu::Depthwise g{.planes = s.n * s.c,
                     .channels = s.c,
                     .h = s.hw,
                     .w = s.hw,
                     .kh = 3,
                     .kw = 3,
                     .sh = s.stride,
                     .sw = s.stride,
                     .ph = 1,
                     .pw = 1,
                     .lo = 0,
                     .hi = 6};
    g.oh = (s.hw + 2 - 3) / s.stride + 1;
    g.ow = g.oh;
    std::vector<float> in(static_cast<size_t>(g.planes * s.hw * s.hw)), w(static_cast<size_t>(s.c * 9)),
        b(static_cast<size_t>(s.c)), out1(static_cast<size_t>(g.planes * g.oh * g.ow)), out2(out1.size());
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>((i * 7919) % 1000) / 250 - 2;
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 104729) % 100) / 100 - 0.5f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 7) / 7;
    auto run = [&](cpu::DepthwiseMethod m, std::vector<float>& o) {  // median thread CPU time, us
      std::vector<double> t;
      for (int i = 0; i < 101; ++i) {
        double t0 = thread_cpu_us();
        cpu::depthwise_conv(g, in.data(), w.data(), b.data(), o.data(), one, m);
        t.push_back(thread_cpu_us() - t0);
      }
      std::sort(t.begin(), t.end());
      return t[t.size() / 2];
    };
    double planes = run(cpu::DepthwiseMethod::Planes, out1), inter = run(cpu::DepthwiseMethod::Interleaved, out2);
    if (out1 != out2) {
      std::fprintf(stderr, "depthwise %lldx%lld %lldx%lld: the methods' outputs differ\n", (long long)s.n,
                   (long long)s.c, (long long)s.hw, (long long)s.hw);
      return 1;
    }
    bool auto_inter = cpu::choose_depthwise(g) == cpu::DepthwiseMethod::Interleaved;
    std::printf("| %lld x %lld | %lldx%lld | %lld | %.2f | %.2f | %.2fx | %s |\n", (long long)s.n, (long long)s.c,
                (long long)s.hw, (long long)s.hw, (long long)s.stride, planes, inter, inter / planes,
                auto_inter ? "interleaved" : "planes");
    std::fflush(stdout);
  }
  return 0;
}

int run(bool quick, const std::string& only) {
  if (only == "pool") {
    pool_table();
    return 0;
  }
  if (only == "depthwise") return depthwise_table();
  int threads = cpu::ThreadPool::shared().threads();
  double copy1 = copy_gbs(int64_t{256} << 20, 1), copyn = copy_gbs(int64_t{256} << 20, threads);
  double plainn = copy_gbs(int64_t{256} << 20, threads, true);
  std::printf("machine: %s; kiln threads: %d\n", machine().c_str(), threads);
  std::printf("copies of 256 MiB (read + write): memcpy %.1f GB/s on 1 thread, %.1f GB/s on %d threads; "
              "ordinary stores %.1f GB/s on %d threads\n\n",
              copy1, copyn, threads, plainn, threads);
  std::printf("| workload | compiled ms | reference ms | hand loop ms | vs reference | vs hand loop | compiled rate | "
              "%% of memcpy | %% of a copy with ordinary stores | check |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  int failures = 0;
  for (const Workload& w : workloads(quick)) {
    if (w.name.find(only) == std::string::npos) continue;
    absl::StatusOr<Graph> g = parse_graph(w.ir);
    if (!g.ok()) {
      std::fprintf(stderr, "%s: %s\n", w.name.c_str(), status_message(g.status()).c_str());
      return 1;
    }
    absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cpu});
    if (!cg.ok()) {
      std::fprintf(stderr, "%s: %s\n", w.name.c_str(), status_message(cg.status()).c_str());
      return 1;
    }
    TensorMap args = random_args(*g, w.bindings, 1);
    scale_weights_by_fan_in(*g, args);
    std::vector<Tensor> in;
    std::vector<HostTensor> in_host;
    for (const Value* a : cg->module().args) {
      in.push_back(*Tensor::from_host(args.at(a->name())));
      in_host.push_back(args.at(a->name()));
    }
    std::vector<Tensor> out(1);
    absl::Status st = cg->run(in, out);
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", w.name.c_str(), status_message(st).c_str());
      return 1;
    }
    double compiled = time_ms([&] { (void)cg->run(in, out); });
    std::vector<HostTensor> want;
    double reference = time_ms([&] { want = *evaluate(*g, args); }, 0);
    HostTensor hand(want[0].dtype(), want[0].shape());
    double loop = time_ms([&] { w.baseline(in_host, hand); });
    Comparison c = compare_tensors(want[0], *out[0].to_host(), default_tolerance(want[0].dtype()));
    Comparison ch = compare_tensors(want[0], hand, default_tolerance(want[0].dtype()));
    failures += c.ok ? 0 : 1;
    std::string rate;
    if (w.memory_bound) {
      // On a shared machine the bandwidth other tenants leave moves within seconds, so the
      // kernel and the copies take turns over several rounds, each round's ratio against the
      // copies timed next to it; the table gives the median round and the range.
      int64_t bytes = out[0].numel() * dtype_size(out[0].dtype());
      for (const Tensor& t : in) bytes += t.numel() * dtype_size(t.dtype());
      std::vector<double> gbs, vs_memcpy, vs_plain;
      for (int round = 0; round < kRounds; ++round) {
        gbs.push_back(static_cast<double>(bytes) / (time_ms([&] { (void)cg->run(in, out); }, 150) * 1e6));
        vs_memcpy.push_back(100.0 * gbs.back() / copy_gbs(int64_t{256} << 20, threads, false, 150));
        vs_plain.push_back(100.0 * gbs.back() / copy_gbs(int64_t{256} << 20, threads, true, 150));
      }
      auto span = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return fmt::format("{:.0f}% ({:.0f}-{:.0f})", v[v.size() / 2], v.front(), v.back());
      };
      std::vector<double> g = gbs;
      std::sort(g.begin(), g.end());
      rate = fmt::format("{:.1f} GB/s | {} | {}", g[g.size() / 2], span(vs_memcpy), span(vs_plain));
    } else {
      rate = fmt::format("{:.1f} GFLOP/s | - | -", w.flops / (compiled * 1e6));
    }
    std::printf("| %s | %.3f | %.1f | %.3f | %.0fx | %.1fx | %s | %s%s |\n", w.name.c_str(), compiled, reference, loop,
                reference / compiled, loop / compiled, rate.c_str(), c.ok ? "ok" : "MISMATCH",
                ch.ok ? "" : " (hand loop differs)");
    if (!c.ok) std::printf("\n%s: %s\n\n", w.name.c_str(), c.message.c_str());
    std::fflush(stdout);
  }
  if (std::string("attention").find(only) != std::string::npos) failures += attention_table(quick);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick") quick = true;
    else only = argv[i];
  }
  return run(quick, only);
}
