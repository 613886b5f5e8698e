#include "runtime/cpu/jit.h"

#include <chrono>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "ir/log.h"
#include "ir/status.h"
#include "ir/str.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/ExecutionEngine/Orc/CompileUtils.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "runtime/kernel_cache.h"
#include "runtime/sha256.h"

namespace kiln::cpu {

namespace {

std::string llvm_message(llvm::Error e) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << e;
  return os.str();
}

std::string module_text(const llvm::Module& m) {
  std::string text;
  llvm::raw_string_ostream os(text);
  m.print(os, nullptr);
  return os.str();
}

// Names optimize()'s pipeline in the disk cache's key: change it with the pipeline.
constexpr const char* kPipeline = "O2 loop-vectorize slp-vectorize";

}  // namespace

struct CpuJit::Impl {
  std::mutex mu;
  absl::Status init_error;
  std::unique_ptr<llvm::orc::LLJIT> jit;
  std::unique_ptr<llvm::TargetMachine> tm;  // the host CPU, for the O2 pipeline and object code
  absl::flat_hash_map<std::string, JitKernel> cache;  // key: printed kernel + emit options
  // Object code on disk (runtime/kernel_cache.h, the CUDA cache's directory and format: an
  // entry's `cubin` is the ELF object, its `ptx` the optimized LLVM IR), keyed by the
  // unoptimized module's text, the pipeline, LLVM's version and the host CPU and features.
  KernelCache disk{KernelCache::directory_from_env()};

  Impl() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    auto jtmb = llvm::orc::JITTargetMachineBuilder::detectHost();
    if (!jtmb) {
      init_error = absl::InternalError(str_cat("LLVM: cannot detect the host CPU: ", llvm_message(jtmb.takeError())));
      return;
    }
    auto t = jtmb->createTargetMachine();
    if (!t) {
      init_error = absl::InternalError(str_cat("LLVM: no target machine for the host: ", llvm_message(t.takeError())));
      return;
    }
    tm = std::move(*t);
    auto j = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(std::move(*jtmb)).create();
    if (!j) {
      init_error = absl::InternalError(str_cat("LLVM: cannot create the JIT: ", llvm_message(j.takeError())));
      return;
    }
    jit = std::move(*j);
    // libm (sinf, cosf, powf) and memset/memcpy resolve from the process.
    auto gen = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(jit->getDataLayout().getGlobalPrefix());
    if (!gen) {
      init_error = absl::InternalError(str_cat("LLVM: process symbols: ", llvm_message(gen.takeError())));
      return;
    }
    jit->getMainJITDylib().addGenerator(std::move(*gen));
  }

  void optimize(llvm::Module& m) {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PipelineTuningOptions pto;
    pto.LoopVectorization = true;
    pto.SLPVectorization = true;
    llvm::PassBuilder pb(tm.get(), pto);
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O2);
    mpm.run(m, mam);
  }
};

CpuJit::CpuJit() : impl_(std::make_unique<Impl>()) {}

CpuJit& CpuJit::instance() {
  static CpuJit* jit = new CpuJit();  // never destroyed: kernels may run until exit
  return *jit;
}

absl::StatusOr<JitKernel> CpuJit::compile(const kir::Kernel& k, const EmitOptions& opts) {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> lock(im.mu);
  if (!im.init_error.ok()) return im.init_error;
  std::string key = kir::print_kernel(k) + opts.key(k);
  if (auto it = im.cache.find(key); it != im.cache.end()) {
    JitKernel hit = it->second;
    hit.cache_hit = true;
    hit.disk_hit = false;
    hit.codegen_ms = hit.compile_ms = 0;
    return hit;
  }

  auto start = std::chrono::steady_clock::now();
  auto ms_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
  };
  // The kernel's own name keeps dumps and profiles readable; the hash of its request keeps it
  // unique and the same in every process (it is part of the module the disk key hashes).
  std::string name = fmt::format("{}_{}", k.name, Sha256::hex(Sha256::hash(key)).substr(0, 16));
  auto ctx = std::make_unique<llvm::LLVMContext>();
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<llvm::Module> mod, emit_kernel(k, name, opts, *ctx));
  llvm::Module& m = *mod;
  m.setDataLayout(im.tm->createDataLayout());
  m.setTargetTriple(im.tm->getTargetTriple().str());
  const std::string pipeline[] = {kPipeline};
  std::string disk_key = kernel_cache_key(module_text(m), pipeline, "LLVM " LLVM_VERSION_STRING,
                                          str_cat(im.tm->getTargetCPU().str(), " ", im.tm->getTargetFeatureString().str()));
  JitKernel out;
  out.codegen_ms = ms_since(start);
  start = std::chrono::steady_clock::now();
  KernelCacheStats before = im.disk.stats();
  auto entry = im.disk.get_or_compile(disk_key, [&]() -> absl::StatusOr<CompiledKernel> {
    im.optimize(m);
    CompiledKernel c;
    c.ptx = module_text(m);
    llvm::orc::SimpleCompiler compile_object(*im.tm);
    auto object = compile_object(m);
    if (!object) return absl::InternalError(str_cat("kernel ", k.name, ": LLVM codegen: ", llvm_message(object.takeError())));
    c.cubin.assign((*object)->getBufferStart(), (*object)->getBufferSize());
    return c;
  });
  if (!entry.ok()) return entry.status();
  // This JIT's lock is held: no other lookup ran between the two reads of the statistics.
  KernelCacheStats after = im.disk.stats();
  out.disk_hit = after.disk_hits > before.disk_hits;
  out.cache_hit = !out.disk_hit && after.misses == before.misses;
  log_line(LogTopic::cache, out.disk_hit || out.cache_hit ? 2 : 1,
           str_cat("cpu kernel ", k.name, ": ", out.disk_hit ? "disk hit " : out.cache_hit ? "memory hit " : "compiled, stored as ",
                   im.disk.directory() ? im.disk.entry_path(disk_key).string() : disk_key));
  out.optimized_ir = std::make_shared<const std::string>((*entry)->ptx);
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy((*entry)->cubin, name);
  if (llvm::Error e = im.jit->addObjectFile(std::move(buffer)))
    return absl::InternalError(str_cat("kernel ", k.name, ": JIT: ", llvm_message(std::move(e))));
  auto addr = im.jit->lookup(name);
  if (!addr) return absl::InternalError(str_cat("kernel ", k.name, ": JIT: ", llvm_message(addr.takeError())));
  out.entry = addr->toPtr<KernelEntry>();
  out.symbols = dynamic_symbols(k, opts.baked);
  out.compile_ms = ms_since(start);
  im.cache.emplace(std::move(key), out);
  return out;
}

std::string CpuJit::host_cpu() const { return impl_->tm ? impl_->tm->getTargetCPU().str() : "unknown"; }

std::string CpuJit::target() const {
  if (!impl_->tm) return "LLVM " LLVM_VERSION_STRING ", no host target";
  return str_cat("LLVM " LLVM_VERSION_STRING ", ", impl_->tm->getTargetCPU().str(), ", features ",
                 Sha256::hex(Sha256::hash(impl_->tm->getTargetFeatureString().str())).substr(0, 8));
}

KernelCache& CpuJit::kernel_cache() { return impl_->disk; }

}  // namespace kiln::cpu
