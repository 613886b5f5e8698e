#include "compiler/profile.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ir/str.h"

namespace kiln {
namespace {

constexpr size_t kMaxOpNames = 6;

// Bytes of a program buffer at the call's symbol values; 0 where its size is not known.
double buffer_bytes(const Program& p, int buffer, const Bindings& b) {
  if (buffer < 0) return 0;
  const ProgramBuffer& pb = p.buffers[buffer];
  absl::StatusOr<std::vector<int64_t>> shape = evaluate_shape(pb.shape, b);
  if (!shape.ok()) return 0;
  double n = static_cast<double>(dtype_size(pb.dtype));
  for (int64_t d : *shape) n *= static_cast<double>(d);
  return n;
}

// 2 * batch * m * n * k of a GEMM kernel, 0 for any other kernel or unknown sizes.
double gemm_flops(const kir::Kernel& k, const Bindings& b) {
  if (!k.gemm) return 0;
  double f = 2;
  for (const Dim& d : k.gemm->batch) {
    absl::StatusOr<int64_t> v = d.evaluate(b);
    if (!v.ok()) return 0;
    f *= static_cast<double>(*v);
  }
  for (const Dim* d : {&k.gemm->m, &k.gemm->n, &k.gemm->k}) {
    absl::StatusOr<int64_t> v = d->evaluate(b);
    if (!v.ok()) return 0;
    f *= static_cast<double>(*v);
  }
  return f;
}

std::string fmt_ms(double ms) { return fmt::format("{:.4f}", ms); }

}  // namespace

std::string fused_ops_name(const KernelGroup& g) {
  std::vector<std::string> names, views;
  auto add = [](std::vector<std::string>& to, const Node* n) {
    std::string name(op_name(n->op()));
    if (std::find(to.begin(), to.end(), name) == to.end()) to.push_back(name);
  };
  for (const std::vector<Node*>* list : {&g.prologue, &g.nodes})
    for (const Node* n : *list) add(n->info().kind == OpKind::View ? views : names, n);
  if (names.empty()) names = views;
  if (names.empty()) return "empty";
  bool etc = names.size() > kMaxOpNames;
  if (etc) names.resize(kMaxOpNames);
  std::string s = str_join(names, "_", [](const std::string& n) { return n; });
  if (etc) s += "_etc";
  return names.size() == 1 && !etc ? s : "fused_" + s;
}

std::string group_label(const KernelGroup& g) { return str_cat("g", g.id, "_", fused_ops_name(g)); }

std::vector<std::string> group_labels(const CompiledModule& m) {
  std::vector<std::string> out;
  for (const KernelGroup& g : m.state.schedule.groups) out.push_back(group_label(g));
  return out;
}

ProfileTable profile_table(const CompiledModule& m, std::span<const CallProfile> calls) {
  ProfileTable t;
  t.calls = static_cast<int>(calls.size());
  std::map<std::string, ProfileRow> rows;
  double total = 0;
  for (const CallProfile& call : calls) {
    const Program& p = *call.program;
    total += call.ms;
    t.launches_per_call = std::max(t.launches_per_call, static_cast<int>(call.launches.size()));
    for (const ProfiledLaunch& l : call.launches) {
      ProfileRow r;
      r.group = l.group;
      switch (l.kind) {
        case ProfiledLaunch::Kind::Kernel: {
          const ProgramKernel& pk = p.kernels[l.kernel->kernel];
          r.name = pk.kernel.name;
          // A GEMM kernel that reads its accumulator from a library is its epilogue only.
          bool computes_gemm = pk.kernel.gemm && !pk.accumulator_input;
          r.kind = computes_gemm ? "gemm kernel" : pk.kernel.gemm ? "epilogue" : "kernel";
          for (int b : l.kernel->buffers) r.bytes += buffer_bytes(p, b, call.bindings);
          if (computes_gemm) r.flops = gemm_flops(pk.kernel, call.bindings);
          break;
        }
        case ProfiledLaunch::Kind::Library:
          r.name = str_cat(gemm_library_name(l.gemm->library), "[g", l.gemm->group, "]");
          r.kind = "library gemm";
          for (int b : {l.gemm->a, l.gemm->b, l.gemm->c, l.gemm->bias}) r.bytes += buffer_bytes(p, b, call.bindings);
          r.flops = gemm_flops(l.gemm->lowered, call.bindings);
          break;
        case ProfiledLaunch::Kind::Attention: {
          const AttentionStep& a = *l.attention;
          r.name = str_cat("attention[g", l.group, "]");
          r.kind = l.library.empty() ? "fused attention" : l.library;
          std::vector<int> seen;  // q, k and v may be views of one buffer (a fused projection)
          for (int b : {a.q, a.k, a.v, a.out, a.mask})
            if (std::find(seen.begin(), seen.end(), b) == seen.end()) seen.push_back(b), r.bytes += buffer_bytes(p, b, call.bindings);
          absl::StatusOr<int64_t> b = a.batch.evaluate(call.bindings), tq = a.tq.evaluate(call.bindings),
                                  tk = a.tk.evaluate(call.bindings);
          if (b.ok() && tq.ok() && tk.ok()) {  // two GEMMs' worth; a causal one computes about half
            r.flops = 4.0 * static_cast<double>(*b * a.form.heads * *tq) * static_cast<double>(*tk * a.form.head_dim);
            if (a.form.causal && *tq == *tk) r.flops /= 2;
          }
          break;
        }
        case ProfiledLaunch::Kind::Extern:
          r.name = str_cat("extern ", l.extern_step->name, "[g", l.group, "]");
          r.kind = "extern op";
          for (const std::vector<int>* bs : {&l.extern_step->inputs, &l.extern_step->outputs})
            for (int b : *bs) r.bytes += buffer_bytes(p, b, call.bindings);
          break;
        case ProfiledLaunch::Kind::Collective:
          r.name = str_cat(op_name(l.collective->op), "[g", l.group, "]");
          r.kind = "collective";
          for (int b : {l.collective->input, l.collective->output}) r.bytes += buffer_bytes(p, b, call.bindings);
          break;
        case ProfiledLaunch::Kind::Copy:
          r.name = "copy";
          r.kind = "copy";
          r.bytes = 2.0 * static_cast<double>(l.copy_bytes);  // read and written
          break;
      }
      if (r.group >= 0 && static_cast<size_t>(r.group) < m.state.schedule.groups.size())
        r.ops = fused_ops_name(m.state.schedule.groups[r.group]);
      auto [it, fresh] = rows.try_emplace(r.name, r);
      ProfileRow& row = it->second;
      if (!fresh) {
        row.bytes += r.bytes;
        row.flops += r.flops;
      }
      ++row.launches;
      row.total_ms += l.ms;
    }
  }
  for (auto& [_, r] : rows) {
    r.mean_ms = r.total_ms / static_cast<double>(r.launches);
    r.percent = total > 0 ? 100 * r.total_ms / total : 0;
    t.rows.push_back(r);
  }
  std::stable_sort(t.rows.begin(), t.rows.end(), [](const ProfileRow& a, const ProfileRow& b) { return a.total_ms > b.total_ms; });
  t.call_ms = t.calls > 0 ? total / t.calls : 0;
  return t;
}

std::string profile_text(const ProfileTable& t) {
  size_t w = 6;
  for (const ProfileRow& r : t.rows) w = std::max(w, r.name.size());
  size_t ow = 3;
  for (const ProfileRow& r : t.rows) ow = std::max(ow, r.ops.size());
  std::string s = fmt::format("{:<{}}  {:<12}  {:<{}}  {:>8}  {:>10}  {:>10}  {:>6}  {:>12}\n", "kernel", w, "kind",
                              "ops", ow, "launches", "total ms", "mean ms", "%", "rate");
  for (const ProfileRow& r : t.rows) {
    std::string rate = r.flops > 0   ? fmt::format("{:.3f} TFLOP/s", r.tflop_per_s())
                       : r.bytes > 0 ? fmt::format("{:.2f} GB/s", r.gb_per_s())
                                     : std::string("-");
    s += fmt::format("{:<{}}  {:<12}  {:<{}}  {:>8}  {:>10}  {:>10}  {:>6.1f}  {:>12}\n", r.name, w, r.kind,
                     r.ops.empty() ? "-" : r.ops, ow, r.launches, fmt_ms(r.total_ms), fmt_ms(r.mean_ms), r.percent,
                     rate);
  }
  s += fmt::format("{} profiled calls, {} launches each, {} ms per call (first launch to last)\n", t.calls,
                   t.launches_per_call, fmt_ms(t.call_ms));
  return s;
}

void to_json(nlohmann::ordered_json& j, const ProfileTable& t) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const ProfileRow& r : t.rows)
    rows.push_back({{"name", r.name},           {"kind", r.kind},         {"group", r.group},
                    {"ops", r.ops},             {"launches", r.launches}, {"total_ms", r.total_ms},
                    {"mean_ms", r.mean_ms},     {"percent", r.percent},   {"bytes", r.bytes},
                    {"flops", r.flops},         {"gb_per_s", r.gb_per_s()}, {"tflop_per_s", r.tflop_per_s()}});
  j = {{"calls", t.calls}, {"call_ms", t.call_ms}, {"launches_per_call", t.launches_per_call}, {"rows", rows}};
}

}  // namespace kiln
