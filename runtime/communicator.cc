#include "runtime/communicator.h"

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

enum class Kind : uint8_t { AllReduce, AllGather, ReduceScatter };

std::string_view kind_name(Kind k) {
  return k == Kind::AllReduce ? "all_reduce" : k == Kind::AllGather ? "all_gather" : "reduce_scatter";
}

// Element i of dense memory of dtype t, as a double (floats) or an int64 (integers).
double load_float(DType t, const void* p, int64_t i) {
  const auto* b = static_cast<const uint8_t*>(p);
  switch (t) {
    case DType::f32: {
      float v;
      std::memcpy(&v, b + 4 * i, 4);
      return v;
    }
    case DType::f64: {
      double v;
      std::memcpy(&v, b + 8 * i, 8);
      return v;
    }
    case DType::f16: {
      uint16_t v;
      std::memcpy(&v, b + 2 * i, 2);
      return f16_bits_to_float(v);
    }
    default: {
      uint16_t v;
      std::memcpy(&v, b + 2 * i, 2);
      return bf16_bits_to_float(v);
    }
  }
}

void store_float(DType t, void* p, int64_t i, double v) {
  auto* b = static_cast<uint8_t*>(p);
  switch (t) {
    case DType::f32: {
      float f = static_cast<float>(v);
      std::memcpy(b + 4 * i, &f, 4);
      return;
    }
    case DType::f64: std::memcpy(b + 8 * i, &v, 8); return;
    case DType::f16: {
      uint16_t h = float_to_f16_bits(static_cast<float>(v));
      std::memcpy(b + 2 * i, &h, 2);
      return;
    }
    default: {
      uint16_t h = float_to_bf16_bits(static_cast<float>(v));
      std::memcpy(b + 2 * i, &h, 2);
      return;
    }
  }
}

uint64_t load_int(DType t, const void* p, int64_t i) {
  if (t == DType::i32) {
    int32_t v;
    std::memcpy(&v, static_cast<const uint8_t*>(p) + 4 * i, 4);
    return static_cast<uint64_t>(static_cast<int64_t>(v));
  }
  uint64_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(p) + 8 * i, 8);
  return v;
}

void store_int(DType t, void* p, int64_t i, uint64_t v) {
  if (t == DType::i32) {
    auto w = static_cast<uint32_t>(v);
    std::memcpy(static_cast<uint8_t*>(p) + 4 * i, &w, 4);
  } else {
    std::memcpy(static_cast<uint8_t*>(p) + 8 * i, &v, 8);
  }
}

// What the ranks of one host group share: the operands of the call in progress and two
// generation-counted barriers around it (one before reading the others' operands, one
// before any rank may return and overwrite its own).
class HostGroup {
 public:
  explicit HostGroup(int64_t ranks) : ranks_(ranks), posted_(static_cast<size_t>(ranks)) {}

  absl::Status call(int64_t rank, Kind kind, const void* in, void* out, int64_t count, DType dtype) {
    if (!is_float(dtype) && dtype != DType::i32 && dtype != DType::i64)
      return invalid_argument(kind_name(kind), " over ", dtype_name(dtype),
                              ": the host group sums f32, f16, bf16, f64, i32 and i64");
    posted_[rank] = {kind, in, count, dtype};
    KILN_RETURN_IF_ERROR(barrier());
    const Posted& first = posted_[0];
    for (int64_t r = 1; r < ranks_; ++r) {
      const Posted& p = posted_[r];
      if (p.kind != first.kind || p.count != first.count || p.dtype != first.dtype) {
        absl::Status s = invalid_argument("the ranks disagree on a collective: rank 0 calls ", kind_name(first.kind),
                                          " of ", first.count, " ", dtype_name(first.dtype), ", rank ", r, " ",
                                          kind_name(p.kind), " of ", p.count, " ", dtype_name(p.dtype));
        abort(s);
        return s;
      }
    }
    compute(rank, kind, out, count, dtype);
    return barrier();
  }

  void abort(const absl::Status& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_.ok()) aborted_ = why.ok() ? absl::AbortedError("aborted") : why;
    cv_.notify_all();
  }

 private:
  struct Posted {
    Kind kind = Kind::AllReduce;
    const void* in = nullptr;
    int64_t count = 0;
    DType dtype = DType::f32;
  };

  absl::Status barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    auto failed = [&] { return absl::AbortedError(str_cat("the host group was aborted: ", status_message(aborted_))); };
    if (!aborted_.ok()) return failed();
    const uint64_t gen = generation_;
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return absl::OkStatus();
    }
    cv_.wait(lock, [&] { return generation_ != gen || !aborted_.ok(); });
    return generation_ != gen ? absl::OkStatus() : failed();
  }

  // Rank `rank`'s result from every rank's operand (posted_), in rank order.
  void compute(int64_t rank, Kind kind, void* out, int64_t count, DType dtype) {
    if (kind == Kind::AllGather) {
      const int64_t bytes = count * dtype_size(dtype);
      for (int64_t r = 0; r < ranks_; ++r)
        std::memcpy(static_cast<uint8_t*>(out) + r * bytes, posted_[r].in, static_cast<size_t>(bytes));
      return;
    }
    const int64_t first = kind == Kind::ReduceScatter ? rank * count : 0;
    for (int64_t i = 0; i < count; ++i) {
      if (is_float(dtype)) {
        double acc = 0;
        for (int64_t r = 0; r < ranks_; ++r) acc += load_float(dtype, posted_[r].in, first + i);
        store_float(dtype, out, i, acc);
      } else {
        uint64_t acc = 0;  // two's complement wrapping
        for (int64_t r = 0; r < ranks_; ++r) acc += load_int(dtype, posted_[r].in, first + i);
        store_int(dtype, out, i, acc);
      }
    }
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
    return group_->call(rank_, Kind::AllReduce, in, out, count, dtype);
  }
  absl::Status all_gather(const void* in, void* out, int64_t count, DType dtype, void*) override {
    return group_->call(rank_, Kind::AllGather, in, out, count, dtype);
  }
  absl::Status reduce_scatter(const void* in, void* out, int64_t count, DType dtype, void*) override {
    return group_->call(rank_, Kind::ReduceScatter, in, out, count, dtype);
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
