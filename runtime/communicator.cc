#include "runtime/communicator.h"

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "ir/reference.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

// What the ranks of one host group share: the operands and results of the call in progress
// and two generation-counted barriers around it (one before reading the others' operands
// or writing their results, one before any rank may return and reuse its own).
class HostGroup {
 public:
  explicit HostGroup(int64_t ranks) : ranks_(ranks), posted_(static_cast<size_t>(ranks)) {}

  absl::Status call(int64_t rank, Op kind, const void* in, void* out, int64_t count, DType dtype) {
    if (!is_float(dtype) && dtype != DType::i32 && dtype != DType::i64)
      return invalid_argument(op_name(kind), " over ", dtype_name(dtype),
                              ": the host group sums f32, f16, bf16, f64, i32 and i64");
    posted_[rank] = {kind, in, out, count, dtype};
    KILN_RETURN_IF_ERROR(barrier());
    const Posted& first = posted_[0];
    for (int64_t r = 1; r < ranks_; ++r) {
      const Posted& p = posted_[r];
      if (p.kind != first.kind || p.count != first.count || p.dtype != first.dtype) {
        absl::Status s = invalid_argument("the ranks disagree on a collective: rank 0 calls ", op_name(first.kind),
                                          " of ", first.count, " ", dtype_name(first.dtype), ", rank ", r, " ",
                                          op_name(p.kind), " of ", p.count, " ", dtype_name(p.dtype));
        abort(s);
        return s;
      }
    }
    compute(rank, kind, out, count, dtype);
    return barrier(/*abortable=*/false);
  }

  void abort(const absl::Status& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_.ok()) aborted_ = why.ok() ? absl::AbortedError("aborted") : why;
    cv_.notify_all();
  }

 private:
  struct Posted {
    Op kind = Op::AllReduce;
    const void* in = nullptr;
    void* out = nullptr;
    int64_t count = 0;
    DType dtype = DType::f32;
  };

  // Waits for every rank. An abortable barrier returns at once once the group is aborted
  // (a rank may never come); the one after compute() waits anyway, since every rank past the
  // first barrier comes without blocking, and until then others may still be writing into
  // this rank's result or reading its operand. It then reports the abort.
  absl::Status barrier(bool abortable = true) {
    std::unique_lock<std::mutex> lock(mu_);
    auto failed = [&] { return absl::AbortedError(str_cat("the host group was aborted: ", status_message(aborted_))); };
    if (abortable && !aborted_.ok()) return failed();
    const uint64_t gen = generation_;
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen || (abortable && !aborted_.ok()); });
    }
    return generation_ != gen && (abortable || aborted_.ok()) ? absl::OkStatus() : failed();
  }

  // Elements [first, first + n) of every rank's operand (posted_) summed as the reference
  // does (sum_over_ranks: f64 in rank order, rounded once).
  HostTensor sum_range(int64_t first, int64_t n, DType dtype) const {
    const int64_t size = dtype_size(dtype);
    std::vector<HostTensor> parts;
    std::vector<const HostTensor*> in;
    parts.reserve(static_cast<size_t>(ranks_));
    for (int64_t r = 0; r < ranks_; ++r) {
      parts.emplace_back(dtype, std::vector<int64_t>{n});
      std::memcpy(parts.back().data(), static_cast<const uint8_t*>(posted_[r].in) + first * size,
                  static_cast<size_t>(n * size));
      in.push_back(&parts.back());
    }
    return sum_over_ranks(in);
  }

  // Rank `rank`'s part of the call, from every rank's operand (posted_).
  void compute(int64_t rank, Op kind, void* out, int64_t count, DType dtype) {
    const int64_t size = dtype_size(dtype);
    if (kind == Op::AllGather) {
      for (int64_t r = 0; r < ranks_; ++r)
        std::memcpy(static_cast<uint8_t*>(out) + r * count * size, posted_[r].in, static_cast<size_t>(count * size));
      return;
    }
    if (kind == Op::ReduceScatter) {
      HostTensor sum = sum_range(rank * count, count, dtype);
      std::memcpy(out, sum.data(), static_cast<size_t>(count * size));
      return;
    }
    // all_reduce as a reduce-scatter and an all-gather: the rank sums its share of the
    // elements and writes it into every rank's result, so the group sums each element once
    // (not once per rank); the shares are disjoint, and every result is complete at the
    // second barrier.
    const int64_t first = rank * count / ranks_, n = (rank + 1) * count / ranks_ - first;
    if (n == 0) return;
    HostTensor sum = sum_range(first, n, dtype);
    for (const Posted& p : posted_)
      std::memcpy(static_cast<uint8_t*>(p.out) + first * size, sum.data(), static_cast<size_t>(n * size));
  }

  const int64_t ranks_;
  std::vector<Posted> posted_;  // each rank writes its own entry before the first barrier
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t arrived_ = 0;
  uint64_t generation_ = 0;
  absl::Status aborted_;
};

class HostCommunicator final : public Communicator {
 public:
  HostCommunicator(std::shared_ptr<HostGroup> g, int64_t rank, int64_t ranks)
      : group_(std::move(g)), rank_(rank), ranks_(ranks) {}
  int64_t rank() const override { return rank_; }
  int64_t ranks() const override { return ranks_; }
  ExternDevice device() const override { return ExternDevice::Cpu; }
  std::string describe() const override { return str_cat("host group, rank ", rank_, " of ", ranks_); }
  absl::Status all_reduce(const void* in, void* out, int64_t count, DType dtype, void*) override {
    return group_->call(rank_, Op::AllReduce, in, out, count, dtype);
  }
  absl::Status all_gather(const void* in, void* out, int64_t count, DType dtype, void*) override {
    return group_->call(rank_, Op::AllGather, in, out, count, dtype);
  }
  absl::Status reduce_scatter(const void* in, void* out, int64_t count, DType dtype, void*) override {
    return group_->call(rank_, Op::ReduceScatter, in, out, count, dtype);
  }
  void abort(const absl::Status& why) override { group_->abort(why); }

 private:
  std::shared_ptr<HostGroup> group_;
  const int64_t rank_, ranks_;
};

}  // namespace

absl::Status call_collective(Communicator& c, Op op, const void* in, void* out, int64_t count, DType dtype,
                             void* stream) {
  absl::Status s = op == Op::AllReduce   ? c.all_reduce(in, out, count, dtype, stream)
                   : op == Op::AllGather ? c.all_gather(in, out, count, dtype, stream)
                                         : c.reduce_scatter(in, out, count, dtype, stream);
  return s.ok() ? s : prefix_error(s, op_name(op), " (", c.describe(), "): ");
}

absl::Status check_communicator(const Communicator& c, int64_t ranks, ExternDevice device,
                                std::string_view device_name) {
  if (c.ranks() != ranks)
    return invalid_argument("collectives over ", ranks, " ranks, and the communicator is ", c.describe());
  if (c.device() != device)
    return invalid_argument("collectives on ", device_name, " memory, and the communicator is ", c.describe());
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Communicator>> host_group(int64_t ranks) {
  auto g = std::make_shared<HostGroup>(ranks);
  std::vector<std::shared_ptr<Communicator>> out;
  for (int64_t r = 0; r < ranks; ++r) out.push_back(std::make_shared<HostCommunicator>(g, r, ranks));
  return out;
}

}  // namespace kiln
