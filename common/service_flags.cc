#include "common/service_flags.h"

#include <signal.h>

#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/logging.h"
#include "common/spiffe_id.h"

ABSL_FLAG(std::string, mesh, "ppn.local", "Mesh name: the SPIFFE trust domain of every peer");
ABSL_FLAG(std::string, listen, "127.0.0.1:0", "host:port to serve on (port 0 picks one); several, comma-separated, serve on each");
ABSL_FLAG(std::string, tls_ca, "", "PEM file of the mesh CA certificate");
ABSL_FLAG(std::string, tls_cert, "", "PEM file of this service's certificate");
ABSL_FLAG(std::string, tls_key, "", "PEM file of this service's private key");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error or off");
ABSL_FLAG(std::string, log_file, "", "Also write the log to this file");
ABSL_FLAG(std::string, port_file, "", "Write the bound port here once serving (for port 0)");

namespace ppn {
namespace {

const char* g_service = "ppn";

[[noreturn]] void Die(const char* service, absl::string_view message) {
  std::fprintf(stderr, "%s: %.*s\n", service, static_cast<int>(message.size()), message.data());
  std::exit(2);
}

}  // namespace

void ExitWithError(absl::string_view message) { Die(g_service, message); }

ServiceFlags InitService(const char* service, int argc, char** argv) {
  g_service = service;
  absl::SetProgramUsageMessage(absl::StrCat("PPN ", service, " service"));
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) Die(service, absl::StrCat("unexpected argument \"", rest[1], "\""));

  // Handle SIGTERM/SIGINT synchronously in WaitForShutdownSignal(): block them before any
  // thread starts so every thread inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::Status logging = InitLogging(service, absl::GetFlag(FLAGS_log_level), absl::GetFlag(FLAGS_log_file));
  if (!logging.ok()) Die(service, logging.message());

  ServiceFlags flags;
  flags.mesh = absl::GetFlag(FLAGS_mesh);
  flags.listen = absl::GetFlag(FLAGS_listen);
  flags.tls = {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)};
  if (!IsValidIdPart(flags.mesh)) Die(service, "--mesh must be 1-63 characters of [a-z0-9.-]");
  if (flags.tls.ca_cert.empty() || flags.tls.cert.empty() || flags.tls.key.empty()) {
    Die(service, "--tls_ca, --tls_cert and --tls_key are required (make them with tools/pki)");
  }
  absl::Status tls = CheckTlsFiles(flags.tls);
  if (!tls.ok()) Die(service, tls.message());
  return flags;
}

absl::Status WritePortFile(int port) {
  std::string path = absl::GetFlag(FLAGS_port_file);
  if (path.empty()) return absl::OkStatus();
  return WriteFileAtomically(path, absl::StrCat(port, "\n"));
}

std::string WaitForShutdownSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  return sig == SIGTERM ? "SIGTERM" : "SIGINT";
}

}  // namespace ppn
