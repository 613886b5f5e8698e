// A stage's lets, reduce value and stores at one point of the CUDA printer (printer.h): in
// the vector entry, at `width` lanes of the vector var with the vector accesses outside the
// lane loop, and two lanes at a time where the schedule pairs bf16 lets.
#include <algorithm>

#include "codegen/cuda/printer.h"
#include "codegen/cuda/schedule.h"
#include "ir/str.h"

namespace kiln::cuda {

using kir::Expr;
using kir::ExprKind;

std::string vec_decl(DType t, int width, const std::string& array) {
  VecArray a = vec_array(t, width);
  return str_cat("alignas(16) ", a.type, " ", array, "[", a.count, "]");
}

std::string vec_load(DType t, int width, const std::string& ptr, const std::string& array, bool once) {
  VecArray a = vec_array(t, width);
  std::string p = a.type == storage_type(t) ? ptr : str_cat("reinterpret_cast<const ", a.type, "*>(", ptr, ")");
  if (once) return str_cat("kiln_ldv_once<", a.type, ", ", a.count, ">(", p, ", ", array, ", kpol)");
  return str_cat("kiln_ldv<", a.type, ", ", a.count, ">(", p, ", ", array, ")");
}

namespace {

// Whether vector stores of dtype t collect floats and round them in pairs (kiln_stv_pairs).
bool stores_pairs(DType t, int width) { return (t == DType::bf16 || t == DType::f16) && width % 2 == 0; }

}  // namespace

int EntryPrinter::vector_position(int buffer, const kir::Index& i) const {
  kir::Access a{buffer, i};
  for (size_t v = 0; v < s_.vector.size(); ++v)
    if (s_.vector[v].access.same_as(a)) return static_cast<int>(v);
  return -1;
}

// The bf16 pair (lanes 2vp and 2vp + 1, the first in the low half) of a packed let's operand
// or of a value stored as bf16 pairs: a let's t<id>_p where the pair loop writes it, else
// new_pair().
std::string EntryPrinter::pair_of(const kir::Stage& st, const Expr& e, const std::set<int>& paired,
                                  const Hoisted& h) const {
  if (e.kind() == ExprKind::Let && paired.contains(e.node().id)) return str_cat("t", e.node().id, "_p");
  return new_pair(st, e, h);
}

// The pair of `e` made from what it reads: a constant twice, the 32-bit word of a vector
// load (bf16 vector loads are words in the pair loop's even widths), else its two lanes
// packed by one rounding.
std::string EntryPrinter::new_pair(const kir::Stage& st, const Expr& e, const Hoisted& h) const {
  const kir::ExprNode& n = e.node();
  if (n.kind == ExprKind::Const && n.dtype == DType::bf16) {
    uint16_t bits = float_to_bf16_bits(static_cast<float>(n.value));
    return fmt::format("0x{:04x}{:04x}u", bits, bits);
  }
  if (n.kind == ExprKind::Let && !cache_read_.contains(n.id)) {  // a let of a load: the loaded pair
    auto own = std::find_if(st.lets.begin(), st.lets.end(), [&](const kir::Let& l) { return l.id == n.id; });
    if (own != st.lets.end() && own->value.kind() == ExprKind::Load && own->value.dtype() == DType::bf16)
      return new_pair(st, own->value, h);
  }
  if (n.kind == ExprKind::Load && n.dtype == DType::bf16)
    if (auto it = h.find(&n); it != h.end()) return str_cat(it->second, "[vp]");
  std::string lanes[2];
  for (int lane : {0, 1}) lanes[lane] = unrounded(st, e, DType::bf16, At{&h, false, lane});
  return str_cat("kiln_pack_bf16x2(", lanes[0], ", ", lanes[1], ")");
}

// Where the schedule pairs the stage's lets, the lanes go two at a time: each let is written
// for lane 0 and lane 1 (t<id>_0, t<id>_1), and a packed or paired let also as t<id>_p.
void EntryPrinter::body(const kir::Stage& st, size_t si, int width, const Fold& fold) {
  Hoisted hoisted;
  const kir::Schedule::Pairs* pairs =
      width > 1 && si < s_.pairs.size() && !s_.pairs[si].packed.empty() ? &s_.pairs[si] : nullptr;
  std::set<int> packed, paired;
  if (pairs) {
    packed.insert(pairs->packed.begin(), pairs->packed.end());
    paired.insert(pairs->paired.begin(), pairs->paired.end());
  }
  std::vector<std::pair<const kir::Store*, std::string>> vec_stores;
  // Vector stores whose value goes in as bf16 pairs (vs<n>[vp]), in the pair loop.
  auto word_store = [&](const kir::Store& store) { return pairs && k_.buffers[store.buffer].dtype == DType::bf16; };
  const At first{&hoisted, true, -1};
  if (width > 1) {
    int n = 0;
    auto hoist = [&](const Expr& x) {
      if (x.kind() != ExprKind::Load || hoisted.contains(&x.node())) return;
      int v = vector_position(x.node().id, x.node().index);
      if (v < 0) return;
      if (row_cache_chunks_ > 0 && !st.extents.empty())
        for (size_t c = 0; c < s_.row_cache.size(); ++c)
          if (s_.row_cache[c] == v) {
            hoisted[&x.node()] = str_cat("rc", c, "[j]");
            return;
          }
      std::string name = str_cat("vl", n++);
      DType t = k_.buffers[x.node().id].dtype;
      w_.line(str_cat(vec_decl(t, width, name), ";"));
      w_.line(str_cat(vec_load(t, width, str_cat("b", x.node().id, " + ", index(x.node().index, first)), name,
                               streamed_ && s_.vector[v].streamed),
                      ";"));
      hoisted[&x.node()] = name;
    };
    for (const kir::Let& l : st.lets) kir::visit_exprs(l.value, hoist);
    if (st.value.defined()) kir::visit_exprs(st.value, hoist);
    for (const kir::Store& store : st.stores) {
      kir::visit_exprs(store.value, hoist);
      if (vector_position(store.buffer, store.index) >= 0) {
        std::string name = str_cat("vs", vec_stores.size());
        DType t = k_.buffers[store.buffer].dtype;
        std::string type = word_store(store) ? "unsigned" : stores_pairs(t, width) ? "float" : storage_type(t);
        w_.line(str_cat("alignas(16) ", type, " ", name, "[", word_store(store) ? width / 2 : width, "];"));
        vec_stores.push_back({&store, name});
      }
    }
    std::string vv = str_cat(s_.vector_outer ? "o" : "r", s_.vector_var);
    w_.line("#pragma unroll");
    if (pairs) {
      w_.open(str_cat("for (int vp = 0; vp < ", width / 2, "; ++vp) {"));
      w_.line(str_cat("const long long ", vv, "_l0 = ", vv, "_0 + 2 * vp, ", vv, "_l1 = ", vv, "_l0 + 1;"));
      w_.line(str_cat("(void)", vv, "_l0;"));
      w_.line(str_cat("(void)", vv, "_l1;"));
    } else {
      w_.open(str_cat("for (int v = 0; v < ", width, "; ++v) {"));
      w_.line(str_cat("const long long ", vv, " = ", vv, "_0 + v;"));
      w_.line(str_cat("(void)", vv, ";"));
    }
  }
  const std::vector<int> lanes = pairs ? std::vector<int>{0, 1} : std::vector<int>{-1};
  for (const kir::Let& l : st.lets) {
    if (packed.contains(l.id)) {
      const kir::ExprNode& n = l.value.node();
      const char* fn = n.op == Op::Add ? "kiln_add_bf16x2" : n.op == Op::Sub ? "kiln_sub_bf16x2" : "kiln_mul_bf16x2";
      w_.line(str_cat("const unsigned t", l.id, "_p = ", fn, "(", pair_of(st, n.a, paired, hoisted), ", ",
                      pair_of(st, n.b, paired, hoisted), ");"));
    }
    for (int lane : lanes) {
      At at{&hoisted, false, lane};
      auto read = cache_read_.find(l.id);
      std::string value = packed.contains(l.id) ? str_cat(lane == 0 ? "kiln_bf_lo(t" : "kiln_bf_hi(t", l.id, "_p)")
                          : read != cache_read_.end() ? str_cat(read->second, "[j][", lane_pos(at), "]")
                                                      : expr(l.value, at);
      w_.line(str_cat("const ", value_type(l.value.dtype()), " ", let_name(l.id, at), " = ", value, ";"));
      if (auto store = cache_store_.find(l.id); store != cache_store_.end())
        w_.line(str_cat(store->second, "[j][", lane_pos(at), "] = ", let_name(l.id, at), ";"));
    }
    if (paired.contains(l.id) && !packed.contains(l.id))
      w_.line(str_cat("const unsigned t", l.id, "_p = ", new_pair(st, Expr::let(l.id, l.value.dtype()), hoisted), ";"));
  }
  if (st.kind == kir::Stage::Kind::Reduce)
    for (int lane : lanes) {
      At at{&hoisted, false, lane};
      fold(expr(st.value, at), width > 1 ? lane_pos(at) : "0");
    }
  for (const kir::Store& store : st.stores) {
    DType t = k_.buffers[store.buffer].dtype;
    auto it = std::find_if(vec_stores.begin(), vec_stores.end(), [&](auto& p) { return p.first == &store; });
    if (it != vec_stores.end() && word_store(store)) {
      w_.line(str_cat(it->second, "[vp] = ", pair_of(st, store.value, paired, hoisted), ";"));
      continue;
    }
    for (int lane : lanes) {
      At at{&hoisted, false, lane};
      if (it != vec_stores.end() && stores_pairs(t, width)) {
        w_.line(str_cat(it->second, "[", lane_pos(at), "] = ", unrounded(st, store.value, t, at), ";"));
        continue;
      }
      std::string value = t == DType::bf16 && rounded_to_bf16(k_, store.value)
                              ? str_cat("kiln_bf_bits(", expr(store.value, at), ")")
                              : to_storage(expr(Expr::cast(store.value, t), at), t);
      if (it != vec_stores.end()) w_.line(str_cat(it->second, "[", lane_pos(at), "] = ", value, ";"));
      else w_.line(str_cat(store.mask.defined() ? str_cat("if (", expr(store.mask, at), ") ") : std::string(), "b",
                           store.buffer, "[", index(store.index, at), "] = ", value, ";"));
    }
  }
  if (width > 1) {
    w_.close();
    for (auto& [store, name] : vec_stores) {
      DType t = k_.buffers[store->buffer].dtype;
      bool once = streamed_ && s_.vector[vector_position(store->buffer, store->index)].streamed;
      std::string suffix = once ? "_once" : "", pol = once ? ", kpol" : "";
      std::string at = str_cat("b", store->buffer, " + ", index(store->index, first));
      if (word_store(*store))
        w_.line(str_cat("kiln_stv", suffix, "<unsigned, ", width / 2, ">(reinterpret_cast<unsigned*>(", at, "), ", name,
                        pol, ");"));
      else if (stores_pairs(t, width))
        w_.line(str_cat("kiln_stv_pairs", suffix, "<", t == DType::f16 ? "true" : "false", ", ", width, ">(", at, ", ",
                        name, pol, ");"));
      else
        w_.line(str_cat("kiln_stv", suffix, "<", storage_type(t), ", ", width, ">(", at, ", ", name, pol, ");"));
    }
  }
}

}  // namespace kiln::cuda
