// Shrinking a graph that kiln miscompiles (or fails or crashes on) to a small graph that
// still fails the same way, as LLVM's bugpoint and torch's minifier do: `kiln reduce` and the
// fuzzer's failure reports. Each candidate is judged by an oracle, normally a compile and run
// against the reference evaluator in a child process, so that a crash is an outcome too.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "runtime/device_adapter.h"

namespace kiln {

// What a test of one graph gave.
struct Outcome {
  enum class Kind : uint8_t {
    Pass,      // compiled outputs match the reference
    Invalid,   // the candidate itself is bad: the reference evaluator rejects it
    Mismatch,  // an output differs from the reference beyond its dtype's tolerance
    Error,     // compile() or the call returned an error
    Crash,     // the process died of a signal
    Timeout,   // no answer within the time limit
  };
  Kind kind = Kind::Pass;
  std::string detail;  // the differing output, the error message, the signal

  bool fails() const { return kind != Kind::Pass && kind != Kind::Invalid; }
  // The same kind of failure: any mismatch; an error whose message is the same once value
  // names and numbers are left out; the same signal.
  bool same_failure(const Outcome& o) const;
  std::string to_string() const;  // "mismatch: %out ...", "crash: SIGSEGV"
};
std::string_view outcome_kind_name(Outcome::Kind k);

using DeviceFactory = std::function<absl::StatusOr<std::unique_ptr<DeviceAdapter>>()>;

// Compiles `g` on the device `make_device` gives, runs it once on random arguments (`seed`,
// weights scaled by fan-in) under `b`, and compares every output with the reference
// evaluator within its dtype's tolerance. Runs in this process.
Outcome test_against_reference(const Graph& g, const Bindings& b, const DeviceFactory& make_device, uint64_t seed);

// Runs `test` in a forked child and returns its outcome; a child killed by a signal is a
// Crash, one still running after `timeout_s` seconds is killed and a Timeout. The caller
// must not have other threads running (fork copies only the calling thread).
Outcome run_isolated(const std::function<Outcome()>& test, double timeout_s);

using Oracle = std::function<Outcome(const Graph&, const Bindings&)>;

struct ReduceResult {
  Graph graph;
  Bindings bindings;  // of the symbols `graph` still has
  Outcome failure;    // what it still does
  int tests = 0;      // oracle calls made
  int steps = 0;      // candidates accepted
};

// Delta debugging over the graph: drops outputs, moves an output up to an operand of its
// producer, replaces a set of nodes' results by fresh inputs (and so drops what only they
// read; constants too), turns parameters with data into inputs and lowers symbol values,
// keeping each change whose graph still fails the way `g` does, until no change is kept in
// a whole round. `log` receives one line per kept step. An error if `g` does not fail.
absl::StatusOr<ReduceResult> reduce_graph(const Graph& g, const Bindings& b, const Oracle& oracle,
                                          const std::function<void(const std::string&)>& log = nullptr);

}  // namespace kiln
