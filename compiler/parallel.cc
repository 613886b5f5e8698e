#include "compiler/parallel.h"

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "compiler/weights.h"
#include "ir/status.h"
#include "ir/str.h"
#if KILN_WITH_CUDA_BACKEND
#include "runtime/cuda/nccl.h"
#include "runtime/cuda_driver.h"
#endif

namespace kiln {

// One thread per rank but rank 0 (the caller's), each waiting for the next call's job.
struct RankGroup::Workers {
  std::mutex mu;
  std::condition_variable start, done;
  uint64_t generation = 0;  // bumped per call
  int64_t pending = 0;      // workers still running the current call
  bool stop = false;
  std::function<void(int64_t)> job;
  std::vector<std::thread> threads;

  explicit Workers(int64_t ranks) {
    for (int64_t r = 1; r < ranks; ++r) threads.emplace_back([this, r] { loop(r); });
  }
  ~Workers() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    start.notify_all();
    for (std::thread& t : threads) t.join();
  }

  void loop(int64_t rank) {
    uint64_t seen = 0;
    for (;;) {
      std::function<void(int64_t)> f;
      {
        std::unique_lock<std::mutex> lock(mu);
        start.wait(lock, [&] { return stop || generation != seen; });
        if (stop) return;
        seen = generation;
        f = job;
      }
      f(rank);
      std::lock_guard<std::mutex> lock(mu);
      if (--pending == 0) done.notify_all();
    }
  }

  // `f(r)` for every rank at once, rank 0 here; returns when all have.
  void run(std::function<void(int64_t)> f) {
    {
      std::lock_guard<std::mutex> lock(mu);
      job = std::move(f);
      pending = static_cast<int64_t>(threads.size());
      ++generation;
    }
    start.notify_all();
    job(0);
    std::unique_lock<std::mutex> lock(mu);
    done.wait(lock, [&] { return pending == 0; });
  }
};

absl::StatusOr<TensorMap> read_rank_parameters(const ShardedGraph& s, int64_t rank, int64_t ranks,
                                               const SafetensorsCheckpoint& ckpt) {
  if (rank < 0 || rank >= ranks) return invalid_argument("rank ", rank, " of a group of ", ranks);
  TensorMap out;
  for (const Value* p : s.graph.args()) {
    if (!p->is_param() || p->data()) continue;
    KILN_ASSIGN_OR_RETURN(auto fe, ckpt.find(p->name()));
    const SafetensorsEntry& e = *fe.second;
    auto split = s.split.find(p->name());
    // The whole tensor's shape: the rank's with the split axis times the chunks.
    absl::StatusOr<std::vector<int64_t>> local = evaluate_shape(p->shape(), {});
    if (!local.ok()) return invalid_argument("parameter %", p->name(), " has a symbolic shape");
    std::vector<int64_t> whole = *local;
    if (split != s.split.end()) whole[split->second.axis] *= split->second.groups;
    if (e.shape != whole)
      return invalid_argument(fe.first->path(), ": tensor '", p->name(), "' has shape [",
                              str_join(e.shape, ", ", [](int64_t d) { return str_cat(d); }), "], the graph needs [",
                              str_join(whole, ", ", [](int64_t d) { return str_cat(d); }), "]");
    absl::StatusOr<HostTensor> h = split == s.split.end()
                                       ? fe.first->read(p->name())
                                       : fe.first->read_chunk(p->name(), split->second.axis,
                                                              split->second.chunk(rank, ranks), split->second.groups);
    KILN_RETURN_IF_ERROR(h.status());
    if (h->dtype() != p->dtype()) {
      if (!is_float(h->dtype()) || !is_float(p->dtype()))
        return invalid_argument(fe.first->path(), ": tensor '", p->name(), "' is ", dtype_name(h->dtype()),
                                ", the graph needs ", dtype_name(p->dtype()));
      *h = h->converted(p->dtype());
    }
    out.emplace(p->name(), *std::move(h));
  }
  return out;
}

RankGroup::~RankGroup() = default;

absl::StatusOr<std::unique_ptr<RankGroup>> RankGroup::compile(const Graph& rank_graph, int64_t ranks,
                                                              const ParallelOptions& opts) {
  if (ranks < 1) return invalid_argument("a rank group needs at least one rank, got ", ranks);
  std::unique_ptr<RankGroup> g(new RankGroup());
  g->device_ = opts.compile.device;
  if (g->device_ == Device::Auto) g->device_ = device_available(Device::Cuda).ok() ? Device::Cuda : Device::Cpu;
  KILN_RETURN_IF_ERROR(device_available(g->device_));
  std::vector<int> devices = opts.cuda_devices;
  if (devices.empty())
    for (int64_t r = 0; r < ranks; ++r) devices.push_back(static_cast<int>(r));
  if (g->device_ == Device::Cuda && static_cast<int64_t>(devices.size()) != ranks)
    return invalid_argument("a group of ", ranks, " ranks given ", devices.size(), " CUDA devices");
  if (g->device_ == Device::Cpu) {
    g->comms_ = host_group(ranks);
  } else {
#if KILN_WITH_CUDA_BACKEND
    // Named here: NCCL's own error for a missing GPU is "invalid device ordinal" at best.
    KILN_ASSIGN_OR_RETURN(int gpus, cuda::Device::count());
    for (int d : devices)
      if (d < 0 || d >= gpus)
        return invalid_argument("a group of ", ranks, " ranks needs cuda:", d, ", and this machine has ", gpus, " GPU",
                                gpus == 1 ? "" : "s");
    KILN_ASSIGN_OR_RETURN(g->comms_, cuda::nccl_group(devices));
#else
    return invalid_argument("this build of kiln has no CUDA backend");
#endif
  }
  for (int64_t r = 0; r < ranks; ++r) {
    CompileOptions o = opts.compile;
    o.device = g->device_;
    o.cuda_device = devices[r];
    o.communicator = g->comms_[r];
    absl::StatusOr<CompiledGraph> cg = kiln::compile(rank_graph, o);
    if (!cg.ok()) return prefix_error(cg.status(), "rank ", r, ": ");
    g->graphs_.push_back(*std::move(cg));
  }
  g->workers_ = std::make_unique<Workers>(ranks);
  return g;
}

absl::Status RankGroup::run(const std::vector<std::vector<Tensor>>& args, std::vector<std::vector<Tensor>>& outputs) {
  return call(args, nullptr, outputs);
}

absl::Status RankGroup::run(const std::vector<std::vector<Tensor>>& inputs, const std::vector<const Weights*>& weights,
                            std::vector<std::vector<Tensor>>& outputs) {
  if (static_cast<int64_t>(weights.size()) != ranks())
    return invalid_argument("a group of ", ranks(), " ranks called with ", weights.size(), " weight stores");
  return call(inputs, &weights, outputs);
}

absl::Status RankGroup::call(const std::vector<std::vector<Tensor>>& args, const std::vector<const Weights*>* weights,
                             std::vector<std::vector<Tensor>>& outputs) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failed_.ok())
    return absl::FailedPreconditionError(str_cat("the rank group failed before: ", status_message(failed_)));
  if (static_cast<int64_t>(args.size()) != ranks())
    return invalid_argument("a group of ", ranks(), " ranks called with ", args.size(), " argument lists");
  outputs.resize(args.size());
  std::vector<absl::Status> status(args.size());
  workers_->run([&](int64_t r) {
    if (outputs[r].empty()) outputs[r].resize(graphs_[r].graph().outputs().size());
    status[r] = weights ? graphs_[r].run(args[r], *(*weights)[r], outputs[r]) : graphs_[r].run(args[r], outputs[r]);
    if (!status[r].ok()) comms_[r]->abort(prefix_error(status[r], "rank ", r, ": "));
  });
  // The first rank that failed on its own (the others may fail because it aborted the group).
  for (int pass = 0; pass < 2; ++pass)
    for (size_t r = 0; r < status.size(); ++r)
      if (!status[r].ok() && (pass == 1 || !absl::IsAborted(status[r])))
        return failed_ = prefix_error(status[r], "rank ", r, ": ");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<HostTensor>>> RankGroup::run_host(const std::vector<TensorMap>& args) {
  if (static_cast<int64_t>(args.size()) != ranks())
    return invalid_argument("a group of ", ranks(), " ranks called with ", args.size(), " argument sets");
  std::vector<std::vector<Tensor>> in(args.size()), outs;
  for (int64_t r = 0; r < ranks(); ++r)
    for (const Value* v : graphs_[r].module().args) {
      auto it = args[r].find(v->name());
      if (it == args[r].end()) return invalid_argument("rank ", r, ": no argument %", v->name());
      KILN_ASSIGN_OR_RETURN(Tensor t, Tensor::from_host(it->second, graphs_[r].device()));
      in[r].push_back(std::move(t));
    }
  KILN_RETURN_IF_ERROR(run(in, outs));
  std::vector<std::vector<HostTensor>> got(args.size());
  for (int64_t r = 0; r < ranks(); ++r) {
    if (absl::Status st = graphs_[r].synchronize(); !st.ok()) return prefix_error(st, "rank ", r, ": ");
    for (const Tensor& t : outs[r]) {
      KILN_ASSIGN_OR_RETURN(HostTensor h, t.to_host());
      got[r].push_back(std::move(h));
    }
  }
  return got;
}

}  // namespace kiln
