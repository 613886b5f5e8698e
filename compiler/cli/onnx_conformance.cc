// `kiln onnx-conformance [DIR] [--device D]`: runs the ONNX backend node tests through the
// reference evaluator (or a compiled backend) and prints the pass/fail/skip table.
#include <cstdio>
#include <string>

#include "compiler/cli/commands.h"
#include "compiler/compile.h"
#include "frontends/onnx/onnx_conformance.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln::cli {

void register_onnx_conformance(CLI::App& app) {
  auto dir = std::make_shared<std::string>(kOnnxNodeTestDir);
  auto device = std::make_shared<std::string>("reference");
  CLI::App* cmd = app.add_subcommand("onnx-conformance", "Run the ONNX backend node tests and print a table");
  cmd->add_option("DIR", *dir, str_cat("the node tests' directory (default ", kOnnxNodeTestDir, ")"));
  cmd->add_option("--device", *device, "what runs the imported graphs: reference (default), cpu or cuda")
      ->check(CLI::IsMember({"reference", "cpu", "cuda"}));
  cmd->callback([dir, device] {
    OnnxExecutor execute = reference_executor();
    if (*device != "reference") {
      Device d = *parse_device(*device);
      if (absl::Status s = device_available(d); !s.ok()) throw CliError(str_cat("--device ", *device, ": ", status_message(s)));
      // Each test graph compiled for the device and run once.
      execute = [d](const Graph& g, const TensorMap& inputs) -> absl::StatusOr<std::vector<HostTensor>> {
        KILN_ASSIGN_OR_RETURN(CompiledGraph cg, compile(g, {.device = d}));
        return run_host(cg, inputs);
      };
    }
    ConformanceReport report = check(run_onnx_conformance(*dir, execute));
    std::fputs(format_conformance_report(report).c_str(), stdout);
    std::fflush(stdout);
    if (report.failed > 0) throw CliError(str_cat(report.failed, " onnx node tests failed"));
  });
}

}  // namespace kiln::cli
