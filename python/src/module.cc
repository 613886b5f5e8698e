// kiln's Python extension (kiln._kiln): graphs (parse, print, ONNX import, the reference
// evaluator), compile() and CompiledGraph, and tensors crossing the boundary through DLPack
// capsules without copies. The Python layer (python/kiln/*.py) builds the user-facing API
// on these; every kiln error arrives there as kiln.KilnError carrying kiln's message.
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "runtime/tensor.h"

namespace nb = nanobind;

namespace kiln {
namespace {

// kiln.KilnError, created at import time; every failed absl::Status is raised as it.
nb::object g_error_type;

[[noreturn]] void raise(const absl::Status& s) {
  PyErr_SetString(g_error_type.ptr(), std::string(s.message()).c_str());
  throw nb::python_error();
}
void check(const absl::Status& s) {
  if (!s.ok()) raise(s);
}
template <typename T>
T take(absl::StatusOr<T> v) {
  if (!v.ok()) raise(v.status());
  return *std::move(v);
}

// A graph shared between Python objects (CompiledGraph keeps the graph it compiled).
struct PyGraph {
  std::shared_ptr<Graph> g;
};

PyGraph wrap_graph(Graph g) { return PyGraph{std::make_shared<Graph>(std::move(g))}; }

// One argument of a graph as Python sees it: (name, "bf16[B, 16]", role).
struct ArgInfo {
  std::string name, type, role;
};

ArgInfo arg_info(const Value* v) {
  std::string role = v->is_param() ? "param" : v->is_state() ? "state" : "input";
  return {v->name(), v->type().to_string(), role};
}

// ---- DLPack capsules ------------------------------------------------------------------------

constexpr const char* kCapsule = "dltensor";
constexpr const char* kUsedCapsule = "used_dltensor";

void capsule_destructor(PyObject* cap) {
  // A capsule nobody consumed still owns its tensor (the DLPack protocol's rule).
  if (PyCapsule_IsValid(cap, kCapsule)) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kCapsule));
    if (m && m->deleter) m->deleter(m);
  }
}

// Takes the tensor of a "dltensor" capsule (an object's __dlpack__() result) without copying.
Tensor from_capsule(nb::handle cap) {
  if (!PyCapsule_IsValid(cap.ptr(), kCapsule))
    raise(absl::InvalidArgumentError("expected an unused DLPack capsule named 'dltensor'"));
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), kCapsule));
  Tensor t = take(Tensor::from_dlpack(m));
  PyCapsule_SetName(cap.ptr(), kUsedCapsule);  // ours now: the capsule must not delete it
  return t;
}

nb::object to_capsule(const Tensor& t) {
  DLManagedTensor* m = take(t.to_dlpack());
  PyObject* cap = PyCapsule_New(m, kCapsule, capsule_destructor);
  if (!cap) {
    m->deleter(m);
    throw nb::python_error();
  }
  return nb::steal(cap);
}

// ---- CompiledGraph ------------------------------------------------------------------------

struct PyCompiled {
  CompiledGraph cg;
  PyGraph source;
};

CallOptions call_options(uintptr_t stream) { return CallOptions{.stream = reinterpret_cast<void*>(stream)}; }

Bindings to_bindings(const std::map<std::string, int64_t>& b) {
  Bindings out;
  for (const auto& [k, v] : b) out[k] = v;
  return out;
}

std::vector<Tensor> call(PyCompiled& c, const std::vector<Tensor>& args, uintptr_t stream) {
  absl::StatusOr<std::vector<Tensor>> out;
  {
    nb::gil_scoped_release release;  // compiles and runs may take long; other threads go on
    out = c.cg(args, call_options(stream));
  }
  return take(std::move(out));
}

PyCompiled compile_graph(const PyGraph& g, const std::string& mode, const std::string& device, bool dynamic,
                         const std::string& dump_dir, bool compile_only, bool fused_attention, int cuda_device) {
  std::optional<Mode> m = parse_mode(mode);
  if (!m) raise(absl::InvalidArgumentError("unknown mode '" + mode + "' (expected default, reduce-overhead or max-autotune)"));
  std::optional<Device> d = parse_device(device);
  if (!d) raise(absl::InvalidArgumentError("unknown device '" + device + "' (expected auto, cpu or cuda)"));
  CompileOptions opts{.mode = *m, .device = *d, .dynamic = dynamic, .dump_dir = dump_dir,
                      .cuda_device = cuda_device, .compile_only = compile_only,
                      .fused_attention = fused_attention};
  absl::StatusOr<CompiledGraph> cg;
  {
    nb::gil_scoped_release release;
    cg = compile(*g.g, opts);
  }
  return PyCompiled{take(std::move(cg)), g};
}

}  // namespace
}  // namespace kiln

NB_MODULE(_kiln, mod) {
  using namespace kiln;
  mod.doc() = "kiln's native core; use the `kiln` package instead.";
  g_error_type = nb::borrow(PyErr_NewExceptionWithDoc(
      "kiln.KilnError", "An error reported by kiln (its message names the place and what was expected).",
      PyExc_RuntimeError, nullptr));
  mod.attr("KilnError") = g_error_type;

  nb::class_<ArgInfo>(mod, "ArgInfo")
      .def_ro("name", &ArgInfo::name)
      .def_ro("type", &ArgInfo::type)
      .def_ro("role", &ArgInfo::role)
      .def("__repr__", [](const ArgInfo& a) { return "%" + a.name + ": " + a.type + (a.role == "input" ? "" : " " + a.role); });

  nb::class_<PyGraph>(mod, "Graph")
      .def_prop_ro("name", [](const PyGraph& g) { return g.g->name(); })
      .def("args", [](const PyGraph& g) {
        std::vector<ArgInfo> out;
        for (const Value* v : g.g->args()) out.push_back(arg_info(v));
        return out;
      })
      .def("outputs", [](const PyGraph& g) {
        std::vector<std::string> out;
        for (const Value* v : g.g->outputs()) out.push_back(v->type().to_string());
        return out;
      })
      .def("symbols", [](const PyGraph& g) { return g.g->symbols(); })
      .def_prop_ro("num_nodes", [](const PyGraph& g) { return g.g->num_nodes(); })
      .def("to_text", [](const PyGraph& g) { return print_graph(*g.g); });

  mod.def("parse", [](const std::string& text, const std::string& filename) { return wrap_graph(take(parse_graph(text, filename))); },
          nb::arg("text"), nb::arg("filename") = "<input>");
  mod.def("parse_file", [](const std::string& path) { return wrap_graph(take(parse_graph_file(path))); });
  mod.def("import_onnx", [](const std::string& path) { return wrap_graph(take(import_onnx_file(path))); });

  nb::class_<Tensor>(mod, "Tensor")
      .def(nb::init<>())  // empty: an output slot run_into allocates
      .def_prop_ro("dtype", [](const Tensor& t) { return std::string(dtype_name(t.dtype())); })
      .def_prop_ro("shape", [](const Tensor& t) { return t.shape(); })
      .def_prop_ro("device", [](const Tensor& t) { return device_name(t.device()); })
      .def_prop_ro("device_index", [](const Tensor& t) { return t.device().index; })
      .def_prop_ro("is_cuda", [](const Tensor& t) { return t.device().type == DeviceType::cuda; })
      .def_prop_ro("data_ptr", [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data()); })
      .def("__repr__", [](const Tensor& t) { return "kiln.Tensor(" + t.type_string() + ")"; })
      .def("capsule", [](const Tensor& t) { return to_capsule(t); });
  mod.def("tensor_from_capsule", [](nb::handle cap) { return from_capsule(cap); });
  // A host copy of `t` as a new tensor (for CUDA tensors without a framework at hand).
  mod.def("to_host", [](const Tensor& t, uintptr_t stream) {
    HostTensor h = take(t.to_host(reinterpret_cast<void*>(stream)));
    return take(Tensor::from_host(h));
  }, nb::arg("t"), nb::arg("stream") = 0);

  // The reference evaluator (ir/reference.h), the oracle of every test: args by name.
  mod.def("evaluate", [](const PyGraph& g, const std::map<std::string, Tensor>& args) {
    TensorMap host;
    for (const auto& [name, t] : args) host[name] = take(t.to_host());
    std::vector<HostTensor> out;
    {
      nb::gil_scoped_release release;
      out = take(evaluate(*g.g, host));
    }
    std::vector<Tensor> res;
    for (const HostTensor& h : out) res.push_back(take(Tensor::from_host(h)));
    return res;
  });

  nb::class_<PyCompiled>(mod, "CompiledGraph")
      .def("__call__", &call, nb::arg("args"), nb::arg("stream") = 0)
      .def("synchronize", [](PyCompiled& c, uintptr_t stream) { check(c.cg.synchronize(call_options(stream))); },
           nb::arg("stream") = 0)
      .def("stats_json", [](const PyCompiled& c) { return c.cg.stats().to_json(); })
      .def("stats_text", [](const PyCompiled& c) { return c.cg.stats().to_text(); })
      .def("specializations", [](const PyCompiled& c) { return c.cg.specializations(); })
      .def("warm_up", [](PyCompiled& c, const std::map<std::string, int64_t>& b) {
        absl::Status s;
        {
          nb::gil_scoped_release release;
          s = c.cg.warm_up(to_bindings(b));
        }
        check(s);
      })
      .def("static_slots", [](PyCompiled& c, const std::map<std::string, int64_t>& b) {
        StaticSlots s = take(c.cg.static_slots(to_bindings(b)));
        return std::make_pair(s.inputs, s.outputs);
      })
      .def("run_into", [](PyCompiled& c, const std::vector<Tensor>& args, std::vector<Tensor> outputs, uintptr_t stream) {
        absl::Status s;
        {
          nb::gil_scoped_release release;
          s = c.cg.run(args, outputs, call_options(stream));
        }
        check(s);
        return outputs;
      }, nb::arg("args"), nb::arg("outputs"), nb::arg("stream") = 0)
      .def("memory", [](const PyCompiled& c) {
        CompiledGraph::Memory m = c.cg.memory();
        return std::map<std::string, int64_t>{{"arena", m.held.arena}, {"scratch", m.held.scratch},
                                              {"weight_prep", m.held.weight_prep}, {"constants", m.held.constants},
                                              {"parameters", m.parameters}, {"weight_store", m.weight_store}};
      })
      .def("parameters_changed", [](PyCompiled& c) { c.cg.parameters_changed(); })
      .def_prop_ro("device", [](const PyCompiled& c) { return device_name(c.cg.device()); })
      .def_prop_ro("graph", [](const PyCompiled& c) { return c.source; })
      .def("optimized_graph_text", [](const PyCompiled& c) { return print_graph(c.cg.graph()); });

  mod.def("compile", &compile_graph, nb::arg("graph"), nb::arg("mode"), nb::arg("device"), nb::arg("dynamic"),
          nb::arg("dump_dir"), nb::arg("compile_only"), nb::arg("fused_attention"), nb::arg("cuda_device"));
  mod.def("device_available", [](const std::string& device) -> std::optional<std::string> {
    std::optional<Device> d = parse_device(device);
    if (!d) raise(absl::InvalidArgumentError("unknown device '" + device + "'"));
    absl::Status s = device_available(*d);
    if (s.ok()) return std::nullopt;
    return std::string(s.message());
  });
}
