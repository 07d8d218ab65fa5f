#include "tools/ppnctl/connect.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/tls_credentials.h"

namespace ppn::ppnctl {

absl::StatusOr<Connection> Connect(const Settings& settings, const std::string& service) {
  Connection c;
  c.endpoint = settings.Endpoint(service);
  if (c.endpoint.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no endpoint for ", service, ": pass --endpoint=HOST:PORT"));
  }
  std::string ca = settings.Get("ca");
  if (service == "tenant") {
    std::string file = settings.Get("token_file");
    if (!file.empty()) {
      absl::StatusOr<std::string> t = ReadFile(file);
      if (!t.ok()) return t.status();
      c.token = std::string(absl::StripAsciiWhitespace(*t));
    } else {
      c.token = settings.Environment("PPN_TOKEN").value_or("");
    }
    if (c.token.empty()) return absl::UnauthenticatedError("no token: set PPN_TOKEN or --token_file");
    absl::Status ok = CheckTlsFiles({ca, "", ""}, false);
    if (!ok.ok()) return absl::Status(ok.code(), absl::StrCat(ok.message(), " (set --ca)"));
    c.credentials = TlsChannelCredentials(ca);
    return c;
  }
  TlsFiles tls{ca, settings.Get("cert"), settings.Get("key")};
  absl::Status ok = CheckTlsFiles(tls);
  if (!ok.ok()) return absl::Status(ok.code(), absl::StrCat(ok.message(), " (set --ca, --cert and --key)"));
  c.credentials = MtlsChannelCredentials(tls);
  return c;
}

}  // namespace ppn::ppnctl
