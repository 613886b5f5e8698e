#include "ir/ops_collective.h"

#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

using Result = absl::StatusOr<std::vector<TensorType>>;

absl::Status check_ranks(int64_t ranks) {
  if (ranks < 1) return invalid_argument("ranks must be at least 1, got ", ranks);
  return absl::OkStatus();
}

absl::Status check_numeric(const TensorType& t) {
  if (t.dtype == DType::boolean) return invalid_argument("expected a numeric tensor, got ", t.to_string());
  return absl::OkStatus();
}

}  // namespace

bool is_collective(Op op) { return op == Op::AllReduce || op == Op::AllGather || op == Op::ReduceScatter; }

int64_t collective_ranks(const Node& n) {
  return n.op() == Op::AllReduce ? AllReduceAttrs(n).ranks() : CollectiveAttrs(n).ranks();
}

Result infer_all_reduce(std::span<const TensorType> in, const Attrs& a) {
  KILN_RETURN_IF_ERROR(check_ranks(AllReduceAttrs(a).ranks()));
  KILN_RETURN_IF_ERROR(check_numeric(in[0]));
  return std::vector{in[0]};
}

Result infer_all_gather(std::span<const TensorType> in, const Attrs& a) {
  CollectiveAttrs at(a);
  KILN_RETURN_IF_ERROR(check_ranks(at.ranks()));
  int64_t axis = at.axis();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(std::span(&axis, 1), in[0].shape.size()));
  TensorType out = in[0];
  out.shape[ax[0]] = out.shape[ax[0]] * Dim(at.ranks());
  return std::vector{std::move(out)};
}

Result infer_reduce_scatter(std::span<const TensorType> in, const Attrs& a) {
  CollectiveAttrs at(a);
  KILN_RETURN_IF_ERROR(check_ranks(at.ranks()));
  KILN_RETURN_IF_ERROR(check_numeric(in[0]));
  int64_t axis = at.axis();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(std::span(&axis, 1), in[0].shape.size()));
  TensorType out = in[0];
  std::optional<Dim> chunk = out.shape[ax[0]].divide_exact(Dim(at.ranks()));
  if (!chunk)
    return invalid_argument("axis ", ax[0], " of ", in[0].to_string(), " does not divide into ", at.ranks(),
                            " equal chunks");
  out.shape[ax[0]] = *chunk;
  return std::vector{std::move(out)};
}

}  // namespace kiln
