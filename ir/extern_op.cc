#include "ir/extern_op.h"

#include <map>
#include <memory>
#include <mutex>

#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

struct Registry {
  std::mutex mu;
  // Ops are never removed: the pointers find_extern_op hands out stay valid.
  std::map<std::string, std::unique_ptr<const ExternOp>, std::less<>> ops;
};

Registry& registry() {
  static Registry r;
  return r;
}

std::string types_text(std::span<const TensorType> types) {
  return str_join(types, ", ", [](const TensorType& t) { return t.to_string(); });
}

}  // namespace

int64_t ExternTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status register_extern_op(ExternOp op) {
  if (op.name.empty()) return invalid_argument("register_extern_op: the name is empty");
  if (!op.infer) return invalid_argument("register_extern_op \"", op.name, "\": no infer (shape rule)");
  if (!op.cpu && !op.cuda && !op.reference)
    return invalid_argument("register_extern_op \"", op.name, "\": no implementation (cpu, cuda or reference)");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.ops.contains(op.name)) return invalid_argument("register_extern_op: \"", op.name, "\" is already registered");
  std::string name = op.name;
  r.ops.emplace(std::move(name), std::make_unique<const ExternOp>(std::move(op)));
  return absl::OkStatus();
}

const ExternOp* find_extern_op(std::string_view name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.ops.find(name);
  return it == r.ops.end() ? nullptr : it->second.get();
}

absl::StatusOr<const ExternOp*> extern_op_for(std::string_view name, ExternDevice device) {
  const ExternOp* op = find_extern_op(name);
  if (!op) return invalid_argument("no extern op \"", name, "\" is registered in this process (register_extern_op)");
  const bool cuda = device == ExternDevice::Cuda;
  if (cuda ? !op->cuda : !op->cpu)
    return invalid_argument("extern op \"", name, "\" has no ", cuda ? "cuda" : "cpu", " implementation");
  return op;
}

absl::Status check_extern_calls(const Graph& g, ExternDevice device, bool captured) {
  for (const auto& node : g.nodes()) {
    const Node& n = *node;
    if (n.op() != Op::ExternCall) continue;
    const std::string& name = ExternAttrs(n).name();
    absl::StatusOr<const ExternOp*> found = extern_op_for(name, device);
    if (!found.ok()) return prefix_error(found.status(), n.describe(), ": ");
    const ExternOp* op = *found;
    std::vector<TensorType> in, declared;
    for (const Value* v : n.operands()) in.push_back(v->type());
    for (const Value* v : n.results()) declared.push_back(v->type());
    absl::StatusOr<std::vector<TensorType>> want = op->infer(in);
    if (!want.ok())
      return invalid_argument(n.describe(), ": extern op \"", name, "\" rejects operands (", types_text(in),
                              "): ", want.status().message());
    if (*want != declared)
      return invalid_argument(n.describe(), ": extern op \"", name, "\" gives (", types_text(*want), ") for (",
                              types_text(in), "), but the node declares (", types_text(declared), ")");
    if (captured && !op->capturable)
      return invalid_argument(n.describe(), ": extern op \"", name,
                              "\" is registered with capturable = false, so reduce-overhead cannot capture this "
                              "graph into a CUDA graph; compile it in default mode");
  }
  return absl::OkStatus();
}

std::string extern_results_text(std::span<const TensorType> types) { return types_text(types); }

}  // namespace kiln
