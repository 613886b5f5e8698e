// kiln's latency on the model zoo (test/onnx/zoo): each enabled model imported, compiled for
// a device and called on its committed inputs of one size set, back to back.
// bench/cpu/zoo_compare.py runs it beside onnxruntime on the same inputs and thread counts,
// bench/cuda/zoo_torch.py beside PyTorch eager and torch.compile on the GPU.
//   kiln_bench_zoo [--zoo DIR] [--rounds N] [--round-ms MS] [--size-set NAME] [--models a,b]
//                  [--device cpu|cuda] [--mode default|reduce-overhead|max-autotune] [--float bf16|f16]
//                  [--clock wall|cpu]
// The CPU's thread count is the CPU backend's (KILN_CPU_THREADS, default: all cores). Rounds
// interleave the models; a round's time is the mean per call over calls lasting at least
// --round-ms, up to the device having finished them (the round ends by reading an output
// back). One JSON line per model: "KILN_ZOO {...}" with every round's microseconds.
// --clock cpu times rounds in the process's CPU time (CLOCK_PROCESS_CPUTIME_ID) instead of
// wall time: at 1 thread, the cost of a call on a machine that other jobs keep busy.
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/npy.h"
#include "ir/str.h"
#include "passes/convert_float.h"
#include "runtime/cpu/device.h"

using namespace kiln;
using json = nlohmann::json;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "kiln_bench_zoo: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T check(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) die(str_cat(what, ": ", status_message(v.status())));
  return *std::move(v);
}

// Milliseconds on the chosen clock: steady wall time, or the process's CPU time.
double now_ms(bool cpu_clock) {
  if (!cpu_clock)
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

struct Model {
  std::string name, size_set;
  CompiledGraph cg;
  std::vector<Tensor> args, outputs;
  std::vector<double> round_us;
};

}  // namespace

int main(int argc, char** argv) {
  std::string zoo = std::string(KILN_SOURCE_DIR) + "/test/onnx/zoo", size_set, only, float_type;
  Device device = Device::Cpu;
  Mode mode = Mode::Default;
  int rounds = 7;
  double round_ms = 200;
  bool cpu_clock = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : (die(str_cat(a, " needs a value")), ""); };
    if (a == "--zoo") zoo = next();
    else if (a == "--rounds") rounds = std::atoi(next().c_str());
    else if (a == "--round-ms") round_ms = std::atof(next().c_str());
    else if (a == "--size-set") size_set = next();
    else if (a == "--models") only = "," + next() + ",";
    else if (a == "--device") {
      std::string d = next();
      if (d != "cpu" && d != "cuda") die("--device: cpu or cuda");
      device = d == "cpu" ? Device::Cpu : Device::Cuda;
    } else if (a == "--mode") {
      std::string m = next();
      if (m == "default") mode = Mode::Default;
      else if (m == "reduce-overhead") mode = Mode::ReduceOverhead;
      else if (m == "max-autotune") mode = Mode::MaxAutotune;
      else die("--mode: default, reduce-overhead or max-autotune");
    } else if (a == "--float") {
      float_type = next();
      if (float_type != "bf16" && float_type != "f16") die("--float: bf16 or f16");
    }
    else if (a == "--clock") {
      std::string c = next();
      if (c != "wall" && c != "cpu") die("--clock: wall or cpu");
      cpu_clock = c == "cpu";
    }
    else die(str_cat("unknown argument ", a));
  }
  std::ifstream f(zoo + "/manifest.json");
  json manifest = json::parse(f, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("models")) die(str_cat("cannot read ", zoo, "/manifest.json"));

  std::vector<Model> models;
  for (const json& m : manifest["models"]) {
    std::string name = m.value("name", "");
    if (m.value("status", "") != "enabled" || (!only.empty() && only.find("," + name + ",") == std::string::npos))
      continue;
    const json* set = &m["size_sets"].back();
    for (const json& s : m["size_sets"])
      if (s.value("name", "") == size_set) set = &s;
    Graph g = check(import_onnx_file(zoo + "/" + m["model"].get<std::string>()), name);
    if (!float_type.empty()) g = check(convert_float(g, *parse_dtype(float_type)), name);
    Model model{name, set->value("name", ""), check(compile(g, {.mode = mode, .device = device}), name), {}, {}, {}};
    for (const Value* v : model.cg.module().args) {
      auto it = (*set)["inputs"].find(v->name());
      if (it == (*set)["inputs"].end()) die(str_cat(name, ": no input file for %", v->name()));
      HostTensor h = check(read_npy(zoo + "/" + it->get<std::string>()), name);
      if (h.dtype() != v->dtype()) {  // f32 inputs of a model stored in bf16/f16
        HostTensor narrow(v->dtype(), h.shape());
        for (int64_t i = 0; i < h.numel(); ++i) narrow.set(i, h.get(i));
        h = std::move(narrow);
      }
      model.args.push_back(check(Tensor::from_host(h, device == Device::Cpu ? DeviceId::cpu() : DeviceId::cuda()), name));
    }
    model.outputs = check((model.cg)(model.args), name);  // compiles and warms up (tunes, captures)
    check((model.cg)(model.args), name);
    models.push_back(std::move(model));
  }
  if (models.empty()) die("no enabled model matches");
  for (int r = 0; r < rounds; ++r)
    for (Model& m : models) {
      int calls = 0;
      double t0 = now_ms(cpu_clock), ms = 0;
      do {
        absl::Status s = m.cg.run(m.args, m.outputs);
        if (!s.ok()) die(str_cat(m.name, ": ", status_message(s)));
        ++calls;
        ms = now_ms(cpu_clock) - t0;
      } while (ms < round_ms);
      check(m.outputs[0].to_host(), m.name);  // waits for the device
      ms = now_ms(cpu_clock) - t0;
      m.round_us.push_back(ms * 1e3 / calls);
    }
  const char* threads = std::getenv("KILN_CPU_THREADS");
  for (const Model& m : models)
    std::printf("KILN_ZOO %s\n", json{{"model", m.name}, {"size_set", m.size_set}, {"threads", threads ? threads : "all"},
                                       {"device", device == Device::Cpu ? "cpu" : "cuda"}, {"mode", mode_name(mode)},
                                       {"float", float_type.empty() ? "f32" : float_type},
                                       {"clock", cpu_clock ? "cpu" : "wall"}, {"round_us", m.round_us},
                                       {"machine", cpu::host_description()}}
                                     .dump()
                                     .c_str());
  return 0;
}
