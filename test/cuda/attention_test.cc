// The CUDA flash-attention kernels (codegen/cuda/attention.*, runtime/cuda/attention.*):
// without a GPU, every form and tile configuration compiles with NVRTC for sm_80 and sm_90;
// on a GPU, every form against the reference evaluator's attention on fresh inputs, at
// lengths 1, odd, 127/128/129 and 4096, GQA ratios 1/4/8, ragged kv_lens, paged caches with
// shuffled block tables, masks, window and softcap, in every configuration and split count;
// and compiled graphs whose attention reads q, k, v through views of one fused projection
// and stores its output in the layout of the next GEMM.
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <random>

#include "codegen/cuda/attention.h"
#include "compiler/compile.h"
#include "compiler/profile.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/cudnn_attention.h"
#include "runtime/nvrtc.h"
#include "runtime/tune_store.h"
#include "test/common/catch_helpers.h"
#include "test/common/gpu_test.h"

using namespace kiln;

namespace {

struct Case {
  std::string name;
  AttentionForm form;
  int64_t batch = 1, tq = 1, tk = 1;
  std::vector<int64_t> lens;  // kv_lens per sequence (form.kv_lens), else Tk
};

AttentionForm form(DType t, int64_t h, int64_t kvh, int64_t d) {
  AttentionForm f;
  f.dtype = t, f.heads = h, f.kv_heads = kvh, f.head_dim = d;
  f.scale = 1.0 / std::sqrt(static_cast<double>(d));
  return f;
}

// The forms the tests cover, each a variation of one feature.
std::vector<std::pair<std::string, AttentionForm>> forms() {
  std::vector<std::pair<std::string, AttentionForm>> v;
  for (int64_t d : {64, 128, 256}) v.push_back({str_cat("bf16 D", d), form(DType::bf16, 8, 2, d)});
  AttentionForm f = form(DType::f16, 4, 4, 128);
  f.causal = true;
  v.push_back({"f16 causal MHA", f});
  f = form(DType::bf16, 8, 1, 64);
  f.causal = true, f.window = 37, f.softcap = 5;
  v.push_back({"MQA window softcap", f});
  f = form(DType::bf16, 8, 1, 128);
  f.mask = AttentionForm::Mask::Additive, f.mask_dtype = DType::bf16;
  v.push_back({"additive mask", f});
  f = form(DType::bf16, 4, 2, 64);
  f.mask = AttentionForm::Mask::Bool, f.mask_dtype = DType::boolean;
  v.push_back({"bool mask", f});
  f = form(DType::bf16, 16, 2, 128);
  f.causal = true, f.kv_lens = true;
  v.push_back({"ragged causal GQA 8", f});
  f = form(DType::bf16, 8, 2, 128);
  f.causal = true, f.kv_lens = true, f.block_size = 16, f.index_dtype = DType::i64, f.table_dtype = DType::i64;
  v.push_back({"paged i64", f});
  return v;
}

// The graph of `f` in kiln's text IR: the reference's definition of what the kernel computes.
std::string graph_text(const AttentionForm& f) {
  std::string t = dtype_name(f.dtype).data();
  std::string kv = f.paged() ? str_cat("[NB, ", f.block_size, ", ", f.kv_heads, ", ", f.head_dim, "]")
                             : str_cat("[B, ", f.kv_heads, ", Tk, ", f.head_dim, "]");
  std::string args = str_cat("%q: ", t, "[B, ", f.heads, ", Tq, ", f.head_dim, "], %k: ", t, kv, ", %v: ", t, kv);
  std::string call = "%q, %k, %v";
  if (f.mask == AttentionForm::Mask::Additive) args += str_cat(", %m: ", t, "[B, 1, Tq, Tk]"), call += ", %m";
  if (f.mask == AttentionForm::Mask::Bool) args += str_cat(", %m: bool[1, ", f.heads, ", Tq, Tk]"), call += ", %m";
  std::string idx = dtype_name(f.index_dtype).data();
  if (f.kv_lens) args += str_cat(", %l: ", idx, "[B]"), call += ", %l";
  if (f.paged()) args += str_cat(", %t: ", dtype_name(f.table_dtype), "[B, MB]"), call += ", %t";
  call += str_cat(", scale=", f.scale);
  if (f.causal) call += ", causal=true";
  if (f.window > 0) call += str_cat(", window=", f.window);
  if (f.softcap > 0) call += str_cat(", softcap=", f.softcap);
  return str_cat("graph a(", args, ") {\n  %a = attention(", call, ")\n  return %a\n}\n");
}

std::array<int64_t, 4> dense(std::array<int64_t, 4> shape) {
  return {shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1};
}

// The named host arguments on cuda:0.
std::vector<Tensor> upload(const TensorMap& host, std::initializer_list<const char*> names) {
  std::vector<Tensor> out;
  for (const char* n : names) {
    absl::StatusOr<Tensor> x = Tensor::from_host(host.at(n), DeviceId::cuda(0));
    if (!x.ok()) FAIL(status_message(x.status()));
    out.push_back(*std::move(x));
  }
  return out;
}

// One call of `cg`; its first output matches `want` within bf16's tolerance.
void check_call(CompiledGraph& cg, const std::vector<Tensor>& in, const HostTensor& want) {
  absl::StatusOr<std::vector<Tensor>> got = cg(in);
  if (!got.ok()) FAIL(status_message(got.status()));
  absl::StatusOr<HostTensor> out = (*got)[0].to_host();
  if (!out.ok()) FAIL(status_message(out.status()));
  Comparison c = compare_tensors(want, *out, default_tolerance(DType::bf16));
  INFO(c.message);
  REQUIRE(c.ok);
}

#if KILN_WITH_CUDA
struct Uploaded {
  std::vector<cuda::DeviceBuffer> held;
  CUdeviceptr put(const cuda::Context& ctx, const HostTensor& h) {
    auto b = cuda::DeviceBuffer::allocate(ctx, std::max<int64_t>(h.nbytes(), 16));
    if (!b.ok()) FAIL(status_message(b.status()));
    REQUIRE(b->copy_from_host(h.data(), h.nbytes()).ok());
    held.push_back(*std::move(b));
    return held.back().ptr();
  }
};

// Runs `c` in every configuration with the default split count and with 3 splits (or,
// with `cudnn`, on cuDNN's fused attention) and compares each result with the reference.
void check_case(const cuda::Context& ctx, const cuda::AttentionKernels& kernels, const Case& c, std::mt19937_64& rng,
                bool cudnn = false) {
  const AttentionForm& f = kernels.form();
  Graph g = testing::parse_or_fail(graph_text(f));
  const int64_t mb = f.paged() ? (c.tk + f.block_size - 1) / f.block_size : 0, nb = c.batch * mb + 5;
  TensorMap args;
  auto random = [&](DType t, std::vector<int64_t> shape) {
    HostTensor h(t, std::move(shape));
    h.fill_random(rng);
    return h;
  };
  args["q"] = random(f.dtype, {c.batch, f.heads, c.tq, f.head_dim});
  std::vector<int64_t> kv_shape = f.paged() ? std::vector<int64_t>{nb, f.block_size, f.kv_heads, f.head_dim}
                                            : std::vector<int64_t>{c.batch, f.kv_heads, c.tk, f.head_dim};
  args["k"] = random(f.dtype, kv_shape);
  args["v"] = random(f.dtype, kv_shape);
  if (f.mask == AttentionForm::Mask::Additive) args["m"] = random(f.dtype, {c.batch, 1, c.tq, c.tk});
  if (f.mask == AttentionForm::Mask::Bool) {
    HostTensor m(DType::boolean, {1, f.heads, c.tq, c.tk});
    for (int64_t i = 0; i < m.numel(); ++i) m.set_int(i, (i % c.tk) == 0 || rng() % 3 != 0);  // key 0 always seen
    args["m"] = m;
  }
  if (f.kv_lens) {
    HostTensor l(f.index_dtype, {c.batch});
    for (int64_t b = 0; b < c.batch; ++b) l.set_int(b, c.lens[b]);
    args["l"] = l;
  }
  if (f.paged()) {
    std::vector<int64_t> ids(nb);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    HostTensor t(f.table_dtype, {c.batch, mb});
    for (int64_t i = 0; i < c.batch * mb; ++i) t.set_int(i, ids[i]);
    args["t"] = t;
  }
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  if (!want.ok()) FAIL(status_message(want.status()));

  Uploaded up;
  cuda::AttentionCall call;
  call.batch = c.batch, call.tq = c.tq, call.tk = f.paged() ? mb * f.block_size : c.tk;
  call.q = up.put(ctx, args["q"]), call.k = up.put(ctx, args["k"]), call.v = up.put(ctx, args["v"]);
  call.qs = call.os = dense({c.batch, f.heads, c.tq, f.head_dim});
  call.ks = call.vs = dense({kv_shape[0], kv_shape[1], kv_shape[2], kv_shape[3]});
  if (args.contains("m")) {
    call.mask = up.put(ctx, args["m"]);
    const std::vector<int64_t>& s = args["m"].shape();
    std::array<int64_t, 4> st = dense({s[0], s[1], s[2], s[3]});
    for (int i = 0; i < 4; ++i)
      if (s[i] == 1) st[i] = 0;
    call.ms = st;
  }
  if (f.kv_lens) call.kv_lens = up.put(ctx, args["l"]);
  if (f.paged()) call.block_table = up.put(ctx, args["t"]), call.max_blocks = mb, call.num_blocks = nb;
  HostTensor out(f.dtype, {c.batch, f.heads, c.tq, f.head_dim});
  call.out = up.put(ctx, out);
  std::vector<absl::StatusOr<cuda::AttentionPlan>> plans;
  if (cudnn) plans.push_back(kernels.cudnn_plan(call));
  for (int config = 0; config < static_cast<int>(kernels.configs().size()) && !cudnn; ++config)
    for (std::optional<int> splits : {std::optional<int>(), std::optional<int>(3)})
      plans.push_back(kernels.plan(call, config, splits));
  for (const absl::StatusOr<cuda::AttentionPlan>& p : plans) {
    if (!p.ok()) FAIL(status_message(p.status()));
    INFO(c.name << ": B " << c.batch << ", Tq " << c.tq << ", Tk " << c.tk << ", " << p->to_string());
    auto ws = cuda::DeviceBuffer::allocate(ctx, std::max<int64_t>(p->workspace_bytes, 16));
    REQUIRE(ws.ok());
    REQUIRE(up.held.back().fill_bytes(0xff).ok());  // out: NaNs until written
    absl::Status s = kernels.launch(*p, call, ws->ptr(), nullptr);
    if (!s.ok()) FAIL(status_message(s));
    auto api = cuda::driver();
    REQUIRE(cuda::check((*api)->cuCtxSynchronize(), "attention").ok());
    REQUIRE(up.held.back().copy_to_host(out.data(), out.nbytes()).ok());
    Comparison cmp = compare_tensors((*want)[0], out, default_tolerance(f.dtype));
    INFO(cmp.message);
    REQUIRE(cmp.ok);
  }
}
#endif

}  // namespace

TEST_CASE("every attention form and tile configuration compiles with NVRTC", "[cuda][attention]") {
  std::vector<cuda::NvrtcProgram> programs;
  bool first = true;  // sm_80 (Ampere, the oldest arch mma.sync m16n8k16 bf16 takes) for one form
  for (const auto& [name, f] : forms()) {
    REQUIRE(cuda::cuda_attention_supported(f).ok());
    for (const cuda::AttentionConfig& c : cuda::attention_configs(f)) {
      for (const char* arch : {"sm_90", "sm_80"})
        if (arch == std::string("sm_90") || first)
          programs.push_back({str_cat("kiln_attention_", c.name()), cuda::attention_source(f, c), arch, {}});
      CHECK(cuda::attention_shared_bytes(f, c) <= 227 * 1024);
    }
    first = false;
  }
  std::vector<absl::StatusOr<cuda::NvrtcOutput>> out = cuda::nvrtc_compile_all(programs);
  for (size_t i = 0; i < out.size(); ++i) {
    INFO(programs[i].source.substr(0, programs[i].source.find('\n')) << " for " << programs[i].arch);
    if (!out[i].ok()) FAIL(status_message(out[i].status()));
    CHECK(out[i]->ptx.find("mma.sync.aligned.m16n8k16") != std::string::npos);
  }
  // What CUDA does not take is refused with the reason (the step then decomposes).
  CHECK_THAT(std::string(cuda::cuda_attention_supported(form(DType::f32, 8, 2, 64)).message()), Catch::Contains("bf16 or f16"));
  CHECK_THAT(std::string(cuda::cuda_attention_supported(form(DType::bf16, 8, 2, 96)).message()), Catch::Contains("head dim"));
}

TEST_CASE("CUDA flash attention matches the reference in every form", "[cuda][attention][gpu]") {
  KILN_REQUIRE_GPU();
#if KILN_WITH_CUDA
  auto ctx = cuda::Context::primary(0);
  REQUIRE(ctx.ok());
  REQUIRE((*ctx)->make_current().ok());
  std::mt19937_64 rng(41);
  int cases = 0;
  for (const auto& [name, f] : forms()) {
    absl::StatusOr<std::unique_ptr<cuda::AttentionKernels>> k = cuda::AttentionKernels::build(*ctx, (*ctx)->device().arch_name(), f);
    if (!k.ok()) FAIL(status_message(k.status()));
    std::vector<Case> cs;
    for (auto [b, tq, tk] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {2, 1, 129}, {1, 7, 7}, {2, 3, 128},
                             {1, 127, 127}, {1, 128, 128}, {2, 129, 129}, {1, 1, 4096}}) {
      if (f.head_dim == 256 && tk == 4096) continue;
      std::vector<int64_t> lens;
      for (int64_t i = 0; i < b; ++i) lens.push_back(std::max<int64_t>(tq, tk - 5 * i));  // ragged
      cs.push_back({name, f, b, tq, tk, lens});
    }
    if (f.heads == 8 && f.kv_heads == 2 && f.head_dim == 128 && !f.paged()) cs.push_back({name + " long", f, 1, 300, 4096, {}});
    for (const Case& c : cs) {
      check_case(**ctx, **k, c, rng);
      ++cases;
    }
  }
  kiln::test::gpu_summary().push_back({"flash attention forms x sizes (x 3 configs x 2 splits)", str_cat(cases, " passed")});
#endif
}

TEST_CASE("CUDA attention through views of a fused QKV projection matches the reference", "[cuda][attention][gpu]") {
  KILN_REQUIRE_GPU();
  int cases = 0;
  for (auto [h, kvh, d] : {std::tuple<int64_t, int64_t, int64_t>{4, 4, 64}, {8, 2, 128}, {8, 1, 128}})
    for (bool causal : {false, true}) {
      const int64_t w = (h + 2 * kvh) * d;
      auto head = [&](const char* name, int64_t start, int64_t heads) {
        return str_cat("  %", name, "0 = slice(%x, axis=-1, start=", start, ", end=", start + heads * d, ")\n  %", name,
                       "1 = reshape(%", name, "0, shape=[B, T, ", heads, ", ", d, "])\n  %", name, " = permute(%", name,
                       "1, dims=[0, 2, 1, 3])\n");
      };
      std::string text = str_cat("graph qkv(%x: bf16[B, T, ", w, "]) {\n", head("q", 0, h), head("k", h * d, kvh),
                                 head("v", (h + kvh) * d, kvh), "  %a = attention(%q, %k, %v", causal ? ", causal=true" : "",
                                 ")\n  %p = permute(%a, dims=[0, 2, 1, 3])\n  return %p\n}\n");
      absl::StatusOr<Graph> g = parse_graph(text);
      if (!g.ok()) FAIL(status_message(g.status()));
      absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cuda});
      if (!cg.ok()) FAIL(status_message(cg.status()));
      for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {2, 7}, {1, 129}, {1, 512}}) {
        INFO("H " << h << " KVH " << kvh << " D " << d << (causal ? " causal" : "") << ", B " << b << ", T " << t);
        TensorMap host = random_args(*g, {{"B", b}, {"T", t}}, 61 + cases);
        absl::StatusOr<std::vector<HostTensor>> want = evaluate(*g, host);
        if (!want.ok()) FAIL(status_message(want.status()));
        check_call(*cg, upload(host, {"x"}), (*want)[0]);
        ++cases;
      }
      // One launch: the attention step reads x in place and stores [B, T, H, D] as the output.
      CHECK(cg->stats().launches_per_call == 1);
    }
  kiln::test::gpu_summary().push_back({"attention through fused QKV views (forms x sizes)", str_cat(cases, " passed")});
}

TEST_CASE("cuDNN's fused attention is offered only where it computes kiln's attention", "[cuda][attention][cudnn]") {
  AttentionSizes s;
  s.batch = 2, s.tq = 5, s.tk = 5;
  s.qs = s.os = dense({2, 8, 5, 128}), s.ks = s.vs = dense({2, 2, 5, 128});
  AttentionForm f = form(DType::bf16, 8, 2, 128);
  f.causal = true;
  CHECK(cuda::cudnn_attention_supported(f, s).ok());
  s.tk = 9;  // kiln's causal diagonal is bottom-right aligned: only Tq == Tk or Tq == 1 agree with cuDNN's
  CHECK_THAT(std::string(cuda::cudnn_attention_supported(f, s).message()), Catch::Contains("bottom-right"));
  s.tq = 1;
  CHECK(cuda::cudnn_attention_supported(f, s).ok());
  f.causal = false, s.tq = 5;
  CHECK(cuda::cudnn_attention_supported(f, s).ok());
  f.mask = AttentionForm::Mask::Additive;
  CHECK_THAT(std::string(cuda::cudnn_attention_supported(f, s).message()), Catch::Contains("no mask"));
  f = form(DType::f32, 8, 2, 128);
  CHECK_THAT(std::string(cuda::cudnn_attention_supported(f, s).message()), Catch::Contains("bf16 or f16"));
  f = form(DType::bf16, 8, 2, 128);
  s.qs[3] = 2;
  CHECK_THAT(std::string(cuda::cudnn_attention_supported(f, s).message()), Catch::Contains("contiguous"));
}

TEST_CASE("cuDNN's fused attention matches the reference", "[cuda][attention][gpu][cudnn]") {
  KILN_REQUIRE_GPU();
#if KILN_WITH_CUDA
  absl::StatusOr<std::string> version = cuda::cudnn_version();
  if (!version.ok()) {  // cuDNN is optional: max-autotune then has kiln's kernels only
    WARN("cuDNN not loadable, its attention not tested: " << status_message(version.status()));
    kiln::test::gpu_summary().push_back({"cuDNN fused attention", "not loadable here"});
    return;
  }
  auto ctx = cuda::Context::primary(0);
  REQUIRE(ctx.ok());
  REQUIRE((*ctx)->make_current().ok());
  std::mt19937_64 rng(43);
  std::vector<std::pair<std::string, AttentionForm>> fs;
  AttentionForm f = form(DType::bf16, 8, 8, 128);
  f.causal = true;
  fs.push_back({"bf16 causal MHA D128", f});
  f = form(DType::bf16, 8, 2, 128);
  f.causal = true;
  fs.push_back({"bf16 causal GQA 4 D128", f});
  fs.push_back({"f16 GQA 4 D64", form(DType::f16, 8, 2, 64)});
  int cases = 0;
  for (const auto& [name, f] : fs) {
    absl::StatusOr<std::unique_ptr<cuda::AttentionKernels>> k =
        cuda::AttentionKernels::build(*ctx, (*ctx)->device().arch_name(), f, std::nullopt, /*lazily=*/true);
    if (!k.ok()) FAIL(status_message(k.status()));
    for (auto [b, tq, tk] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                             {2, 1, 129},
                             {1, 7, 7},
                             {1, 128, 128},
                             {2, 129, 129},
                             {1, 1000, 1000}}) {
      check_case(**ctx, **k, {name, f, b, tq, tk, {}}, rng, /*cudnn=*/true);
      ++cases;
    }
    if (!f.causal) {
      check_case(**ctx, **k, {name, f, 2, 3, 128, {}}, rng, /*cudnn=*/true);
      ++cases;
    }
  }
  kiln::test::gpu_summary().push_back(
      {str_cat("cuDNN ", *version, " fused attention (forms x sizes)"), str_cat(cases, " passed")});
#endif
}

TEST_CASE("cuDNN's attention runs by default, in CUDA graphs, and beside kiln's kernels in max-autotune",
          "[cuda][attention][gpu][cudnn]") {
  KILN_REQUIRE_GPU();
  const bool loadable = cuda::cudnn_version().ok();
  absl::StatusOr<Graph> g = parse_graph(
      "graph a(%q: bf16[B, 8, T, 128], %k: bf16[B, 8, T, 128], %v: bf16[B, 8, T, 128]) {\n"
      "  %a = attention(%q, %k, %v, causal=true)\n  return %a\n}\n");
  if (!g.ok()) FAIL(status_message(g.status()));
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead, Mode::MaxAutotune}) {
    absl::StatusOr<CompiledGraph> cg = compile(*g, {.mode = mode, .device = Device::Cuda});
    if (!cg.ok()) FAIL(status_message(cg.status()));
    for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 512}, {2, 33}}) {
      INFO(mode_name(mode) << ", B " << b << ", T " << t);
      TensorMap host = random_args(*g, {{"B", b}, {"T", t}}, 71);
      absl::StatusOr<std::vector<HostTensor>> want = evaluate(*g, host);
      if (!want.ok()) FAIL(status_message(want.status()));
      std::vector<Tensor> in = upload(host, {"q", "k", "v"});
      for (int call = 0; call < 3; ++call) check_call(*cg, in, (*want)[0]);  // capture / tune, then replay
      if (mode == Mode::Default && loadable) {  // the profile names the library that ran the step
        CallProfile prof;
        absl::StatusOr<std::vector<Tensor>> got = (*cg)(in, {.profile = &prof});
        if (!got.ok()) FAIL(status_message(got.status()));
        ProfileTable t = profile_table(cg->module(), std::span<const CallProfile>(&prof, 1));
        REQUIRE(t.rows.size() == 1);
        CHECK_THAT(t.rows[0].kind, Catch::StartsWith("cuDNN"));
      }
    }
  }
  // Each tuned attention step's record names cuDNN: its time, or why it was not tried.
  std::string choices;
  int records = 0;
  for (const auto& [choice, note] : TuneStore::instance().entries()) {
    if (note.find("attention bf16 H=8 KVH=8 D=128") == std::string::npos) continue;
    INFO(choice << ": " << note);
    CHECK_THAT(note, Catch::Contains(loadable ? "cuDNN 9" : "cuDNN not tried"));
    choices += str_cat(choices.empty() ? "" : ", ", choice);
    ++records;
  }
  CHECK(records >= 2);
  kiln::test::gpu_summary().push_back({"max-autotune attention choices (B1 T512, B2 T33)", choices});
}
