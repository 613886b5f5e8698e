// The Program: everything one specialization of a compiled graph runs, decided without a
// device. An ordered list of steps (generated kernel, library GEMM, copy), the weight-prep
// steps run when parameters change, where every buffer lives during a call (argument,
// constant, weight prep, arena, scratch, output), each GEMM's form (codegen/gemm.h) and
// each kernel as its target prepares it (the CUDA schedule). codegen builds it for a Target;
// runtime/'s Executor runs it through a device adapter; `kiln compile` prints it.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/attention.h"
#include "codegen/gemm.h"
#include "codegen/kernel_ir.h"
#include "ir/extern_op.h"
#include "ir/host_tensor.h"

namespace kiln {

struct CompiledModule;

// The symbol values of one call, in Program::symbols (= CompiledModule::symbols) order.
using SymbolValues = std::span<const int64_t>;

// What the program builder needs to know of a device.
struct Target {
  std::string name;  // "cuda", "cpu": how dumps and messages name it
  GemmLibrary gemms = GemmLibrary::Blas;
  // A kernel-IR pass run on every kernel of the program (the intrinsic rewrite, the CUDA
  // schedule); null: none.
  absl::Status (*prepare_kernel)(kir::Kernel&) = nullptr;
  // How a GEMM's epilogue reads a library's f32 accumulator: as one more buffer of its kernel
  // IR (kir::with_accumulator_buffer: the kernel no longer has a GEMM), or (false) as the
  // GEMM kernel compiled to read it (ProgramKernel::accumulator_input: the CPU's emitter
  // reads it once per outer point at the flat index it already has).
  bool accumulator_in_ir = true;
  // The target copies windows natively (ProgramKernel::window_copy).
  bool native_window_copy = false;
  // The target runs f32 depthwise convs natively (ProgramKernel::depthwise).
  bool native_depthwise = false;
  // The target runs GEMM epilogues that are a bias and a clamp natively (ProgramKernel::bias_clamp).
  bool native_bias_clamp = false;
  // The target runs sums and means over trailing axes natively (ProgramKernel::row_reduce).
  bool native_row_reduce = false;
  // The attention forms the target runs as one fused step (AttentionStep): decompose keeps
  // those nodes whole. Null: none (every attention is decomposed into GEMM -> softmax -> GEMM).
  bool (*supports_attention)(const AttentionForm&) = nullptr;
  // Which implementation of a registered extern op (ir/extern_op.h) the target calls.
  ExternDevice extern_device = ExternDevice::Cpu;
  // The target issues a collective that overlaps later steps (CollectiveStep::join) on a
  // communication stream (CUDA); false: in line, as the host group's call, which is synchronous.
  bool comm_stream = false;
};

// Where a buffer's memory is during a call.
enum class Placement : uint8_t {
  Argument,    // runtime argument `index` (Program::args)
  Constant,    // `data`, a parameter's values carried by the graph, made resident once
  WeightPrep,  // a weight-prep result, slot `index`: kept while the parameters stay
  Arena,       // memory-plan buffer `index`, at its offset for the call's symbol values
  Scratch,     // scratch slot `index` of the step using it (0: f32 accumulator, 1, 2: A, B gathered)
  Output,      // graph output `index`
  Check,       // a kernel's index checks: words 2 * index.. of the call's check words (Program::checks)
};
std::string_view placement_name(Placement p);

struct ProgramBuffer {
  std::string name;  // the graph value's name; for scratch, what it holds
  DType dtype = DType::f32;
  Shape shape;       // dense row-major, symbolic
  Placement placement = Placement::Arena;
  int index = 0;
  std::shared_ptr<const HostTensor> data;  // Constant
};

// A kernel that is one zero-padded window (im2col) view materialized, out [N, C, k..., o...]
// = window(in [N, C, s...]), where in is kernel buffer 0 or a reshape of it (a dense
// tensor's reshape moves nothing) and out is buffer 1. A target with
// Target::native_window_copy runs it as a copy routine instead of compiling the kernel:
// row copies rather than a gather through clamped indices per element.
struct WindowCopy {
  Shape in;  // [N, C, s...]
  std::vector<int64_t> kernel, strides, dilations, pads_begin;  // per spatial dim
};

// A kernel that is one f32 depthwise conv (decompose's direct form, one input channel per
// output channel): out [N, C, o...] = sum over the kernel dims of window(in) * weight
// [C, k...], plus bias [C] where given, clamped to [lo, hi] where a maximum/relu or a
// minimum with a scalar constant follows; in is a kernel buffer or a reshape of one. A target
// with Target::native_depthwise runs it as a routine that vectorizes along output rows.
struct DepthwiseConv {
  Shape in;  // [N, C, s...], one or two spatial dims
  std::vector<int64_t> kernel, strides, dilations, pads_begin;
  int x = 0, weight = 0, bias = -1, out = 0;  // kernel buffers
  std::optional<double> lo, hi;
};

// A GEMM epilogue kernel reading its f32 accumulator (ProgramKernel::accumulator_input)
// that only adds a bias ([m, 1] along the rows, a conv's channels, or [n] along the columns)
// and clamps, out dense over the domain [..., m, n]. With Target::native_bias_clamp, a
// routine, in place where it can (GemmStep::c the output, unless a conv's: see program.cc):
// a generated kernel's loop over rows of a 2x2 map's 4 costs 15 instructions an element.
struct BiasClamp {
  int bias = -1, out = 0;  // kernel buffers (bias -1: none); the accumulator is the last
  bool per_row = true;     // the bias along m (else along n)
  std::optional<double> lo, hi;
};

// A kernel that is one f32 sum or mean over the trailing axes of a kernel input (or of a
// reshape of it): out[r] = sum (or mean) of in[r * n .. r * n + n). With
// Target::native_row_reduce, a routine: a generated reduction's loop nest per output costs a
// global average pool over a 2x2 map more than its 4 elements.
struct RowReduce {
  Shape in_shape;       // the reduced operand's (the input buffer's, or a reshape of it)
  int in = 0, out = 1;  // kernel buffers
  int axes = 1;         // the trailing axes of in_shape reduced
  bool mean = false;
};

struct ProgramKernel {
  kir::Kernel kernel;  // after the target's prepare_kernel
  // A GEMM kernel (kernel.gemm set) that reads its accumulator from one more, f32 buffer
  // (dense over the domain: a library computed it) instead of computing it (targets without
  // Target::accumulator_in_ir).
  bool accumulator_input = false;
  // Compiled only when a run needs it (the generated fallback of a library GEMM).
  bool on_demand = false;
  std::optional<WindowCopy> window_copy;  // run natively, never compiled (see WindowCopy)
  std::optional<DepthwiseConv> depthwise;  // likewise (see DepthwiseConv)
  std::optional<BiasClamp> bias_clamp;     // likewise (see BiasClamp)
  std::optional<RowReduce> row_reduce;     // likewise (see RowReduce)
};

// " (native depthwise conv)" and the like where a target runs the kernel as a routine, else "".
std::string_view native_note(const ProgramKernel& k);

struct KernelStep {
  int kernel = 0;            // Program::kernels
  std::vector<int> buffers;  // a program buffer per kernel buffer (then the accumulator's)
  // Per kernel buffer, the kernel buffer whose memory it is: itself, or for an output the
  // memory plan writes over a dead input, that input.
  std::vector<int> storage;
  bool in_place() const;  // some output overwrites an input: the step cannot run twice
};

struct GemmStep {
  int group = 0;
  GemmLibrary library = GemmLibrary::Blas;
  kir::Kernel lowered;  // the group's kernel as lowered: the GEMM's operands, sizes and epilogue
  std::optional<GemmLayout> layout;  // the library call (CublasLt)
  int a = -1, b = -1, c = -1, bias = -1;  // program buffers as the library reads and writes them
  // layout->residual: the buffer the library adds to its result (its C, beta = 1).
  int residual = -1;
  std::optional<KernelStep> gather_a, gather_b;  // run first, into scratch slots 1 and 2
  std::optional<KernelStep> epilogue;            // reads the f32 accumulator (scratch slot 0)
  // The group computed by `kernel` alone, where the library cannot run a call's shape or
  // pointers (CublasLt: no algorithm, or operands less aligned than the call assumed).
  std::optional<KernelStep> fallback;
};

struct CopyStep {
  int src = 0, dst = 0;  // program buffers
  Dim bytes;
};

// A call of a registered extern op (ir/extern_op.h): its function over dense buffers, the
// results in buffers of their own (never an operand's).
struct ExternStep {
  std::string name;          // the registered op
  std::vector<int> inputs;   // program buffers, one per operand
  std::vector<int> outputs;  // program buffers, one per result
};

// A collective (ir/ops_collective.h) as the communicator runs it over whole buffers, along
// axis 0 (decompose permutes another axis there): all_reduce sums `count` elements over
// the ranks; all_gather writes the ranks' `count` elements one after the other; reduce_scatter
// reads ranks * count elements and keeps the sum of chunk `rank`.
struct CollectiveStep {
  Op op = Op::AllReduce;
  DType dtype = DType::f32;
  int64_t ranks = 1;
  Dim count;  // elements per rank: the input's (all_reduce, all_gather) or the output's (reduce_scatter)
  int input = 0, output = 0;  // program buffers
  // Overlapped (the memory plan's CollectiveOverlap): the steps before `join` do not touch its
  // buffers' memory (the arena keeps them out), so the call waits for it only before step
  // `join` (Program::steps.size(): at its end). -1: the next step needs it.
  int join = -1;
};

struct Step {
  enum class Kind : uint8_t { Kernel, Gemm, Copy, Attention, Extern, Collective };
  Kind kind = Kind::Kernel;
  int index = 0;   // into kernel_steps, gemms, copies, attentions, externs or collectives
  int group = -1;  // the kernel group it runs (-1: an output copy)
};

// Immutable once built; the executor evaluates its symbolic sizes per call.
class Program {
 public:
  struct Value {  // an argument or output of the graph
    std::string name;
    DType dtype = DType::f32;
    Shape shape;
    bool param = false;  // a parameter passed at run time (read in place, never copied)
    bool state = false;  // a state argument: read and updated in place, never copied
    // An output that is state argument `state_arg` after the call's write: the caller gets
    // that argument's tensor back (no copy). -1: an ordinary output.
    int state_arg = -1;
  };

  std::string target;
  bool comm_stream = false;          // Target::comm_stream
  std::string graph;                 // the graph's name
  std::vector<std::string> symbols;  // the order of SymbolValues
  Bindings baked;                    // symbols that are constants of this specialization
  std::vector<Value> args, outputs;
  std::vector<ProgramBuffer> buffers;
  std::vector<ProgramKernel> kernels;
  std::vector<KernelStep> kernel_steps;
  std::vector<GemmStep> gemms;
  std::vector<CopyStep> copies;
  std::vector<AttentionStep> attentions;  // the device's fused routine (DeviceProgram::run_attention)
  // Every kernel's index checks (kir::IndexCheck), in the order of the check words: check i
  // owns words 2i, 2i + 1. The executor keeps them zero until one fires (runtime/executor.h).
  std::vector<kir::IndexCheck> checks;
  std::vector<ExternStep> externs;
  std::vector<CollectiveStep> collectives;  // over the communicator (ExecutorOptions::communicator)
  std::vector<Step> prep;   // weight prep, run before a call whose parameters changed
  std::vector<Step> steps;  // every call, in order

  // The arena offset of every Arena buffer index and the arena's size for these symbol
  // values (the memory plan's best fit). Errors name an unbound symbol.
  struct ArenaLayout {
    std::vector<int64_t> offsets;
    int64_t bytes = 0;
  };
  absl::StatusOr<ArenaLayout> arena_layout(const Bindings& b) const;
  Bindings bindings(std::span<const int64_t> values) const;  // `values` in `symbols` order
  // The buffers step `s` reads or writes (-1 for an absent operand: no bias, mask, ...).
  std::vector<int> buffers_of(const Step& s) const;

  // Deterministic text: buffers, steps with each GEMM's form, weight prep (program.txt).
  std::string to_string() const;
  // One line per step: what runs ("k3_mul elementwise", "cuBLASLt bf16 m=T ...",
  // "attention f32 H=8 KVH=2 D=64 scale=0.125 causal", "extern rms(b3, b4) -> b5 on cpu",
  // "all_reduce f32 b4 -> b5, ..., overlaps 3 steps on the comm stream, joined before group 9").
  std::string describe(const Step& s) const;

  // Counts for statistics: kernels compiled up front, GEMM steps, launches per call.
  int compiled_kernels() const;
  int launches() const;

 private:
  friend absl::StatusOr<std::shared_ptr<const Program>> build_program(std::shared_ptr<const CompiledModule>,
                                                                      const Target&, const Bindings&);
  std::shared_ptr<const CompiledModule> module_;  // for the memory plan
};

// Pre: `m` is complete (through the pipeline, kernels lowered). Post: the program of the
// specialization that bakes `baked`, for `t`. Errors name the group or kernel at fault.
absl::StatusOr<std::shared_ptr<const Program>> build_program(std::shared_ptr<const CompiledModule> m, const Target& t,
                                                             const Bindings& baked);

}  // namespace kiln
