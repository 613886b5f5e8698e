// What `kiln --version` reports: kiln's version and the commit it was built from, the CUDA
// toolkit, NVRTC, driver and LLVM it uses, and the devices this process finds.
#pragma once

#include <string>
#include <vector>

namespace kiln {

struct VersionInfo {
  std::string version;      // "0.1"
  std::string git;          // `git describe --always --dirty` at build time
  std::string compiler;     // the C++ compiler that built kiln
  std::string cuda;         // CUDA toolkit at build time, or why there is no CUDA backend
  std::string nvrtc;        // NVRTC loaded now, or why not
  std::string driver;       // the CUDA driver's version, or why none is usable
  std::string cudnn, nccl;  // the libraries loaded on use (attention, collectives), or why not
  std::string llvm;         // LLVM of the CPU backend, or why there is none
  std::vector<std::string> devices;  // "cpu (16 threads)", "cuda:0 NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB"
};

VersionInfo version_info();
std::string version_text(const VersionInfo& v);  // one "name: value" line each

}  // namespace kiln
