#pragma once

// Flags every PPN server binary shares, and their startup checks. Service-specific flags are
// defined in each main.cc.
//   --mesh=ppn.local --listen=127.0.0.1:7001 --tls_ca=ca.pem --tls_cert=x.pem --tls_key=x.key
//   --log_level=info --log_file= --port_file=

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "common/tls_credentials.h"

ABSL_DECLARE_FLAG(std::string, mesh);
ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, log_file);
ABSL_DECLARE_FLAG(std::string, port_file);

namespace ppn {

struct ServiceFlags {
  std::string mesh;
  std::string listen;
  TlsFiles tls;
};

// Parses argv, sets up logging as `service`, and checks the shared flags (TLS files readable
// and matching). On any error prints one line to stderr and exits with status 2.
ServiceFlags InitService(const char* service, int argc, char** argv);

// Prints "<service>: <message>" to stderr and exits with status 2: bad configuration at
// startup. Uses the name given to InitService.
[[noreturn]] void ExitWithError(absl::string_view message);

// Writes the bound port to --port_file (if set) atomically, so a harness that started the
// server on port 0 can find it. Returns an error naming the file.
absl::Status WritePortFile(int port);

// Blocks until SIGTERM or SIGINT; returns the signal's name for the shutdown log line.
// Call InitService first: it blocks those signals in every thread.
std::string WaitForShutdownSignal();

}  // namespace ppn
