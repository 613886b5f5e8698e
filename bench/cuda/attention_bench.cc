// kiln_bench_attention: the CUDA flash-attention kernels (runtime/cuda/attention.h) at the
// issue's sizes, timed with CUDA events (median of --repeat calls after warm-up).
//   prefill: bf16, H=32, D=128, causal, B x T in {1x512, 8x512, 1x2048, 4x4096, 1x16384};
//            TFLOP/s with causal counted as half (4 * B * H * T^2 * D / 2 flops).
//   decode:  bf16, H=32, KVH=8, D=128, one query per sequence, B in {1, 8, 64}, context in
//            {1k, 8k, 32k}, contiguous and paged (16-token blocks, shuffled); GB/s of K and V
//            read, against the device-to-device copy bandwidth measured in the same run.
// Each case checks 4 output rows against a host computation in double. Prints one JSON
// object per line (bench/cuda/attention_torch.py times PyTorch's SDPA at the same sizes).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "ir/dtype.h"
#include "ir/str.h"
#include "runtime/cuda/attention.h"

using namespace kiln;

namespace {

void die(const absl::Status& s) {
  std::fprintf(stderr, "kiln_bench_attention: %s\n", status_message(s).c_str());
  std::exit(1);
}
template <typename T>
T value(absl::StatusOr<T> v) {
  if (!v.ok()) die(v.status());
  return *std::move(v);
}

struct Timer {
  cuda::Event a, b;
  explicit Timer(const cuda::Context& ctx) : a(value(cuda::Event::create(ctx))), b(value(cuda::Event::create(ctx))) {}
  template <typename F>
  double median_ms(F&& f, int warmup, int repeat) {
    for (int i = 0; i < warmup; ++i) f();
    std::vector<double> ms;
    for (int i = 0; i < repeat; ++i) {
      if (auto s = a.record(nullptr); !s.ok()) die(s);
      f();
      if (auto s = b.record(nullptr); !s.ok()) die(s);
      if (auto s = b.synchronize(); !s.ok()) die(s);
      ms.push_back(value(cuda::Event::elapsed_ms(a, b)));
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }
};

// Random bf16 values in [-1, 1) on the device: a host block of `period` values repeated
// (the 8 GB caches of the largest decode case are not generated value by value), and
// at(i), the value at element i, for the row checks.
struct Tensor16 {
  static constexpr int64_t period = (int64_t{1} << 24) + 3;  // odd: rows do not line up
  std::vector<uint16_t> host;
  cuda::DeviceBuffer dev;
  int64_t n = 0;
  Tensor16(const cuda::Context& ctx, int64_t n_, std::mt19937& rng, bool fill = true) : host(std::min(n_, period)), n(n_) {
    std::uniform_real_distribution<float> u(-1, 1);
    if (fill)
      for (auto& x : host) x = float_to_bf16_bits(u(rng));
    dev = value(cuda::DeviceBuffer::allocate(ctx, std::max<int64_t>(n * 2, 16)));
    for (int64_t at = 0; at < n; at += period) {
      const int64_t len = std::min(period, n - at);
      if (auto s = cuda::copy_host_to_device(dev.ptr() + at * 2, host.data(), len * 2, nullptr); !s.ok()) die(s);
    }
  }
  float at(int64_t i) const { return bf16_bits_to_float(host[i % static_cast<int64_t>(host.size())]); }
  void download() {  // outputs are small: the whole tensor
    host.resize(n);
    if (auto s = dev.copy_to_host(host.data(), n * 2); !s.ok()) die(s);
  }
};

struct Layout {  // where key j of sequence b, kv head h lives (element offset of its row)
  int64_t kvh, d, s_max;
  std::vector<int32_t> table;  // paged: [B, max_blocks]
  int64_t bs = 0, max_blocks = 0;
  int64_t row(int64_t b, int64_t h, int64_t j) const {
    if (bs == 0) return ((b * kvh + h) * s_max + j) * d;
    return ((table[b * max_blocks + j / bs] * bs + j % bs) * kvh + h) * d;
  }
};

// Output row (b, head, t) computed on the host in double; the worst abs error vs `got`.
double check_row(const AttentionForm& f, const Tensor16& q, const Tensor16& k, const Tensor16& v,
                 const Tensor16& got, const Layout& lay, int64_t tq, int64_t L, int64_t b, int64_t h, int64_t t) {
  const int64_t D = f.head_dim, kvh = h / f.group();
  const int64_t last = f.causal ? std::min(L - 1, t + L - tq) : L - 1;
  std::vector<double> s(last + 1);
  double mx = -1e300;
  const int64_t qo = ((b * f.heads + h) * tq + t) * D;
  for (int64_t j = 0; j <= last; ++j) {
    double acc = 0;
    for (int64_t d = 0; d < D; ++d) acc += q.at(qo + d) * k.at(lay.row(b, kvh, j) + d);
    s[j] = acc * f.scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (double& x : s) sum += (x = std::exp(x - mx));
  double worst = 0;
  for (int64_t d = 0; d < D; ++d) {
    double o = 0;
    for (int64_t j = 0; j <= last; ++j) o += s[j] * v.at(lay.row(b, kvh, j) + d);
    worst = std::max(worst, std::abs(o / sum - got.at(qo + d)));
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln_bench_attention: the CUDA flash-attention kernels at the issue's sizes"};
  int warmup = 5, repeat = 20;
  bool quick = false;
  app.add_option("--warmup", warmup);
  app.add_option("--repeat", repeat);
  app.add_flag("--quick", quick, "one prefill and one decode size");
  CLI11_PARSE(app, argc, argv);
  cuda::Context* ctx = value(cuda::Context::primary(0));
  if (auto s = ctx->make_current(); !s.ok()) die(s);
  Timer timer(*ctx);
  std::mt19937 rng(7);
  const char* device = ctx->device().properties().name.c_str();

  // The copy bandwidth: 1 GiB device to device (read + write counted).
  {
    const int64_t bytes = int64_t{1} << 30;
    auto a = value(cuda::DeviceBuffer::allocate(*ctx, bytes)), b = value(cuda::DeviceBuffer::allocate(*ctx, bytes));
    double ms = timer.median_ms([&] { (void)b.copy_from(a, bytes); }, 3, 10);
    std::printf("%s\n", nlohmann::json{{"kind", "copy"}, {"device", device}, {"GBps", 2.0 * bytes / ms / 1e6}}.dump().c_str());
  }

  // Prefill.
  AttentionForm pf;
  pf.dtype = DType::bf16, pf.heads = 32, pf.kv_heads = 32, pf.head_dim = 128, pf.causal = true;
  pf.scale = 1.0 / std::sqrt(128.0);
  auto prefill = value(cuda::AttentionKernels::build(ctx, ctx->device().arch_name(), pf));
  std::vector<std::pair<int64_t, int64_t>> prefill_sizes = {{1, 512}, {8, 512}, {1, 2048}, {4, 4096}, {1, 16384}};
  if (quick) prefill_sizes = {{1, 2048}};
  for (auto [B, T] : prefill_sizes) {
    const int64_t n = B * pf.heads * T * pf.head_dim;
    Tensor16 q(*ctx, n, rng), k(*ctx, n, rng), v(*ctx, n, rng), o(*ctx, n, rng, false);
    cuda::AttentionCall c;
    c.q = q.dev.ptr(), c.k = k.dev.ptr(), c.v = v.dev.ptr(), c.out = o.dev.ptr();
    c.batch = B, c.tq = T, c.tk = T;
    c.qs = c.ks = c.vs = c.os = {pf.heads * T * 128, T * 128, 128, 1};
    const double flops = 4.0 * B * pf.heads * T * T * pf.head_dim / 2;
    nlohmann::json row{{"kind", "prefill"}, {"B", B}, {"T", T}, {"device", device}};
    double best = 1e30;
    std::string best_name;
    for (int cfg = 0; cfg < static_cast<int>(prefill->configs().size()); ++cfg) {
      if (prefill->configs()[cfg].wn > 1) continue;
      cuda::AttentionPlan p = value(prefill->plan(c, cfg));
      auto ws = value(cuda::DeviceBuffer::allocate(*ctx, std::max<int64_t>(p.workspace_bytes, 16)));
      double ms = timer.median_ms([&] { (void)prefill->launch(p, c, ws.ptr(), nullptr); }, warmup, repeat);
      row[prefill->configs()[cfg].name()] = flops / ms / 1e9;
      if (ms < best) best = ms, best_name = prefill->configs()[cfg].name();
    }
    cuda::AttentionPlan p = value(prefill->plan(c));
    auto ws = value(cuda::DeviceBuffer::allocate(*ctx, std::max<int64_t>(p.workspace_bytes, 16)));
    if (auto s = prefill->launch(p, c, ws.ptr(), nullptr); !s.ok()) die(s);
    o.download();
    Layout lay{pf.kv_heads, pf.head_dim, T};
    double err = 0;
    for (int64_t t : {int64_t{0}, T / 3, T - 1}) err = std::max(err, check_row(pf, q, k, v, o, lay, T, T, B - 1, 5, t));
    // cuDNN's fused attention on the same operands (max-autotune's other candidate).
    if (absl::StatusOr<cuda::AttentionPlan> cp = prefill->cudnn_plan(c); cp.ok()) {
      auto cws = value(cuda::DeviceBuffer::allocate(*ctx, std::max<int64_t>(cp->workspace_bytes, 16)));
      if (auto s = prefill->launch(*cp, c, cws.ptr(), nullptr); !s.ok()) die(s);
      o.download();
      double cerr = 0;
      for (int64_t t : {int64_t{0}, T / 3, T - 1})
        cerr = std::max(cerr, check_row(pf, q, k, v, o, lay, T, T, B - 1, 5, t));
      double ms = timer.median_ms([&] { (void)prefill->launch(*cp, c, cws.ptr(), nullptr); }, warmup, repeat);
      row["cudnn"] = flops / ms / 1e9;
      row["cudnn_plan"] = cp->to_string();
      row["cudnn_err"] = cerr;
    } else {
      row["cudnn"] = status_message(cp.status());
    }
    row["default"] = prefill->configs()[p.config].name() + " " + p.to_string();
    row["best"] = best_name;
    row["ms"] = best;
    row["TFLOPs"] = flops / best / 1e9;
    row["max_abs_err"] = err;
    std::printf("%s\n", row.dump().c_str());
    std::fflush(stdout);
  }

  // Decode.
  AttentionForm df;
  df.dtype = DType::bf16, df.heads = 32, df.kv_heads = 8, df.head_dim = 128, df.causal = true, df.kv_lens = true;
  df.scale = 1.0 / std::sqrt(128.0);
  AttentionForm pg = df;
  pg.block_size = 16;
  auto dec = value(cuda::AttentionKernels::build(ctx, ctx->device().arch_name(), df));
  AttentionForm full = df;  // every sequence at the full context: no kv_lens, what cuDNN's path takes
  full.kv_lens = false;
  auto dec_full = value(cuda::AttentionKernels::build(ctx, ctx->device().arch_name(), full, std::nullopt, true));
  auto paged = value(cuda::AttentionKernels::build(ctx, ctx->device().arch_name(), pg));
  std::vector<int64_t> batches = {1, 8, 64}, contexts = {1024, 8192, 32768};
  if (quick) batches = {8}, contexts = {8192};
  for (int64_t B : batches)
    for (int64_t S : contexts)
      for (bool is_paged : {false, true}) {
        const AttentionForm& f = is_paged ? pg : df;
        const cuda::AttentionKernels& kern = is_paged ? *paged : *dec;
        const int64_t kv_elems = B * f.kv_heads * S * f.head_dim;
        Tensor16 q(*ctx, B * f.heads * f.head_dim, rng), k(*ctx, kv_elems, rng), v(*ctx, kv_elems, rng);
        Tensor16 o(*ctx, B * f.heads * f.head_dim, rng, false);
        Layout lay{f.kv_heads, f.head_dim, S};
        std::vector<int32_t> lens(B, static_cast<int32_t>(S));
        cuda::DeviceBuffer lens_dev = value(cuda::DeviceBuffer::allocate(*ctx, B * 4)), table_dev;
        (void)lens_dev.copy_from_host(lens.data(), B * 4);
        cuda::AttentionCall c;
        c.q = q.dev.ptr(), c.k = k.dev.ptr(), c.v = v.dev.ptr(), c.out = o.dev.ptr(), c.kv_lens = lens_dev.ptr();
        c.batch = B, c.tq = 1, c.tk = S;
        c.qs = c.os = {f.heads * f.head_dim, f.head_dim, f.head_dim, 1};
        if (is_paged) {
          lay.bs = 16, lay.max_blocks = S / 16;
          lay.table.resize(B * lay.max_blocks);
          std::iota(lay.table.begin(), lay.table.end(), 0);
          std::shuffle(lay.table.begin(), lay.table.end(), rng);
          table_dev = value(cuda::DeviceBuffer::allocate(*ctx, lay.table.size() * 4));
          (void)table_dev.copy_from_host(lay.table.data(), lay.table.size() * 4);
          c.block_table = table_dev.ptr(), c.max_blocks = lay.max_blocks, c.num_blocks = B * lay.max_blocks;
          c.ks = c.vs = {16 * f.kv_heads * f.head_dim, f.kv_heads * f.head_dim, f.head_dim, 1};
        } else {
          c.ks = c.vs = {f.kv_heads * S * f.head_dim, S * f.head_dim, f.head_dim, 1};
        }
        cuda::AttentionPlan p = value(kern.plan(c));
        auto ws = value(cuda::DeviceBuffer::allocate(*ctx, std::max<int64_t>(p.workspace_bytes, 16)));
        double ms = timer.median_ms([&] { (void)kern.launch(p, c, ws.ptr(), nullptr); }, warmup, repeat);
        o.download();
        double err = 0;
        for (int64_t h : {int64_t{0}, int64_t{31}}) err = std::max(err, check_row(f, q, k, v, o, lay, 1, S, B - 1, h, 0));
        const double bytes = 2.0 * kv_elems * 2;
        nlohmann::json row{{"kind", "decode"},
                           {"B", B},
                           {"context", S},
                           {"paged", is_paged},
                           {"device", device},
                           {"ms", ms},
                           {"GBps", bytes / ms / 1e6},
                           {"plan", p.to_string()},
                           {"max_abs_err", err}};
        if (!is_paged) {
          if (absl::StatusOr<cuda::AttentionPlan> cp = dec_full->cudnn_plan(c); cp.ok()) {
            auto cws = value(cuda::DeviceBuffer::allocate(*ctx, std::max<int64_t>(cp->workspace_bytes, 16)));
            double cms = timer.median_ms([&] { (void)dec_full->launch(*cp, c, cws.ptr(), nullptr); }, warmup, repeat);
            o.download();
            double cerr = 0;
            for (int64_t h : {int64_t{0}, int64_t{31}})
              cerr = std::max(cerr, check_row(f, q, k, v, o, lay, 1, S, B - 1, h, 0));
            row["cudnn_GBps"] = bytes / cms / 1e6, row["cudnn_err"] = cerr;
          } else {
            row["cudnn_GBps"] = status_message(cp.status());
          }
        }
        std::printf("%s\n", row.dump().c_str());
        std::fflush(stdout);
      }
  return 0;
}
