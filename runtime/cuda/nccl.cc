#include "runtime/cuda/nccl.h"

#include <cstdlib>
#include <mutex>

#include <nccl.h>

#include "ir/status.h"
#include "ir/str.h"
#include "runtime/dylib.h"

namespace kiln::cuda {
namespace {

#define KILN_NCCL_FUNCTIONS(X)                                                                                    \
  X(ncclGetVersion)                                                                                               \
  X(ncclCommInitAll)                                                                                              \
  X(ncclCommDestroy) X(ncclCommAbort) X(ncclGetErrorString) X(ncclGetLastError) X(ncclAllReduce) X(ncclAllGather) \
      X(ncclReduceScatter)

KILN_LIBRARY_TABLE(NcclApi, KILN_NCCL_FUNCTIONS, nccl_api, "libnccl.so.2", "KILN_NCCL_LIBRARY",
                   "NCCL, which runs the collectives of tensor-parallel graphs on GPUs")

absl::Status check(const NcclApi& api, ncclResult_t r, ncclComm_t comm, std::string_view what) {
  if (r == ncclSuccess) return absl::OkStatus();
  const char* last = comm ? api.ncclGetLastError(comm) : nullptr;
  return absl::InternalError(str_cat("NCCL ", what, ": ", api.ncclGetErrorString(r),
                                     last && *last ? str_cat(" (", last, ")") : std::string()));
}

absl::StatusOr<ncclDataType_t> nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f16: return ncclFloat16;
    case DType::bf16: return ncclBfloat16;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::i8: return ncclInt8;
    case DType::u8: return ncclUint8;
    case DType::u32: return ncclUint32;
    case DType::u64: return ncclUint64;
    default: return invalid_argument("NCCL has no ", dtype_name(t), " collectives");
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const NcclApi& api, ncclComm_t comm, int64_t rank, int64_t ranks, int device, std::string version)
      : api_(api), comm_(comm), rank_(rank), ranks_(ranks), device_(device), version_(std::move(version)) {}
  ~NcclCommunicator() override {
    if (comm_) api_.ncclCommDestroy(comm_);  // abort() released it already otherwise
  }

  int64_t rank() const override { return rank_; }
  int64_t ranks() const override { return ranks_; }
  ExternDevice device() const override { return ExternDevice::Cuda; }
  std::string describe() const override {
    return str_cat("NCCL ", version_, ", rank ", rank_, " of ", ranks_, " on cuda:", device_);
  }

  absl::Status all_reduce(const void* in, void* out, int64_t count, DType dtype, void* stream) override {
    return call("all_reduce", dtype, [&](ncclDataType_t t) {
      return api_.ncclAllReduce(in, out, static_cast<size_t>(count), t, ncclSum, comm_, cu(stream));
    });
  }
  absl::Status all_gather(const void* in, void* out, int64_t count, DType dtype, void* stream) override {
    return call("all_gather", dtype, [&](ncclDataType_t t) {
      return api_.ncclAllGather(in, out, static_cast<size_t>(count), t, comm_, cu(stream));
    });
  }
  absl::Status reduce_scatter(const void* in, void* out, int64_t count, DType dtype, void* stream) override {
    return call("reduce_scatter", dtype, [&](ncclDataType_t t) {
      return api_.ncclReduceScatter(in, out, static_cast<size_t>(count), t, ncclSum, comm_, cu(stream));
    });
  }
  // Aborting makes the kernels of this rank that wait on their peers return (ncclCommAbort);
  // it waits for an enqueue in progress on this rank.
  void abort(const absl::Status& why) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!comm_) return;
    why_ = why;
    api_.ncclCommAbort(comm_);
    comm_ = nullptr;
  }

 private:
  static cudaStream_t cu(void* stream) { return static_cast<cudaStream_t>(stream); }

  // `enqueue` with the NCCL type of `dtype`, unless the group was aborted.
  template <typename F>
  absl::Status call(std::string_view what, DType dtype, const F& enqueue) {
    KILN_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
    std::lock_guard<std::mutex> lock(mu_);
    if (!comm_) return absl::AbortedError(str_cat("the NCCL group was aborted: ", status_message(why_)));
    return check(api_, enqueue(t), comm_, what);
  }

  const NcclApi& api_;
  ncclComm_t comm_;
  const int64_t rank_, ranks_;
  const int device_;
  const std::string version_;
  std::mutex mu_;  // guards comm_ (null once aborted) and why_
  absl::Status why_;
};

}  // namespace

absl::StatusOr<std::string> nccl_version() {
  KILN_ASSIGN_OR_RETURN(const NcclApi* api, nccl_api());
  int v = 0;
  KILN_RETURN_IF_ERROR(check(*api, api->ncclGetVersion(&v), nullptr, "ncclGetVersion"));
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9.
  return str_cat(v / 10000, ".", v / 100 % 100, ".", v % 100);
}

absl::StatusOr<std::vector<std::shared_ptr<Communicator>>> nccl_group(std::span<const int> devices) {
  if (devices.empty()) return invalid_argument("an NCCL group needs at least one device");
  for (size_t i = 0; i < devices.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (devices[i] == devices[j])
        return invalid_argument("cuda:", devices[i], " is given twice: NCCL runs one rank per GPU in a process");
  KILN_ASSIGN_OR_RETURN(const NcclApi* api, nccl_api());
  KILN_ASSIGN_OR_RETURN(std::string version, nccl_version());
  setenv("NCCL_NVLS_ENABLE", "0", 1);  // before NCCL reads its environment (the first init)
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  KILN_RETURN_IF_ERROR(check(*api, api->ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()),
                             nullptr, "ncclCommInitAll"));
  std::vector<std::shared_ptr<Communicator>> out;
  for (size_t r = 0; r < devices.size(); ++r)
    out.push_back(std::make_shared<NcclCommunicator>(*api, comms[r], static_cast<int64_t>(r),
                                                     static_cast<int64_t>(devices.size()), devices[r], version));
  return out;
}

}  // namespace kiln::cuda
