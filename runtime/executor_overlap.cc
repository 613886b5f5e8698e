// The executor's step loop and its overlapped collectives (CollectiveStep::join,
// runtime/executor.h): issued on the side stream, forked from the call's stream, joined back
// before their join step, and on an error path before the call returns.
#include "ir/status.h"
#include "ir/str.h"
#include "runtime/executor.h"

namespace kiln {

absl::Status Executor::run_steps(std::span<const Step> steps, CallPlan& p, const CallContext& c, bool overlap) {
  overlap = overlap && side_;
  forked_.clear();
  absl::Status st;
  for (size_t i = 0; i < steps.size() && st.ok(); ++i) {
    const Step& s = steps[i];
    if (overlap && !(st = join_overlapped(i, st, c)).ok()) break;
    step_group_ = s.group;
    bool range = ranges_ && s.group >= 0 && static_cast<size_t>(s.group) < group_names_.size();
    if (range) device_.push_range(group_names_[s.group].c_str());
    bool side = overlap && s.kind == Step::Kind::Collective && program_->collectives[s.index].join >= 0;
    st = side ? run_overlapped(s.index, p, c) : run_step(s, p, c);
    if (range) device_.pop_range();
  }
  return overlap ? join_overlapped(steps.size(), st, c) : st;
}

// An overlapped collective on the side stream, forked after the steps before it; its event is
// recorded after it also when the call failed, for the join of the error path.
absl::Status Executor::run_overlapped(int index, CallPlan& p, const CallContext& c) {
  const CollectiveStep& x = program_->collectives[index];
  if (absl::Status f = side_->fork(c.stream); !f.ok()) return prefix_error(f, op_name(x.op), " on the comm stream: ");
  forked_.push_back(index);
  absl::Status st = run_collective(index, p, CallContext{side_->stream(), c.weights_generation});
  absl::Status marked = side_->record(index);
  if (!st.ok()) return st;
  return marked.ok() ? marked : prefix_error(marked, op_name(x.op), " on the comm stream: ");
}

// Before step `step` (steps.size(): the call's end), the call's stream waits for the forked
// collectives joined there. After an error `st`, it waits for everything forked (a capture must
// not end with a fork unjoined), and `st` is returned.
absl::Status Executor::join_overlapped(size_t step, absl::Status st, const CallContext& c) {
  for (size_t k = 0; k < forked_.size() && st.ok();) {
    const CollectiveStep& x = program_->collectives[forked_[k]];
    if (static_cast<size_t>(x.join) > step) {
      ++k;
      continue;
    }
    st = side_->join(forked_[k], c.stream);
    if (st.ok()) forked_.erase(forked_.begin() + static_cast<std::ptrdiff_t>(k));
    else st = prefix_error(st, "joining ", op_name(x.op), " from the comm stream before step ", step, ": ");
  }
  if (st.ok() || forked_.empty()) return st;
  const int all = static_cast<int>(program_->collectives.size());
  if (side_->record(all).ok()) side_->join(all, c.stream).IgnoreError();
  forked_.clear();
  return st;
}

}  // namespace kiln
