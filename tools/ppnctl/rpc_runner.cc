#include "tools/ppnctl/rpc_runner.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "tools/ppnctl/caller.h"
#include "tools/ppnctl/connect.h"
#include "tools/ppnctl/output.h"
#include "tools/ppnctl/progress.h"
#include "tools/ppnctl/request_builder.h"
#include "tools/ppnctl/suggest.h"

namespace ppn::ppnctl {
namespace {

std::string Alias(const Verb* verb, const std::string& flag) {
  if (verb == nullptr) return flag;
  for (const auto& [alias, field] : verb->aliases) {
    if (alias == flag) return field;
  }
  return flag;
}

ValueConverter Converter(const Verb* verb, const std::string& flag) {
  if (verb == nullptr) return nullptr;
  for (const auto& [alias, convert] : verb->converters) {
    if (alias == flag) return convert;
  }
  return nullptr;
}

std::string CommandName(const Invocation& inv) {
  return inv.verb != nullptr ? Usage(*inv.verb)
                             : absl::StrCat(inv.command->service_command, " ", inv.command->rpc_command);
}

}  // namespace

absl::StatusOr<std::unique_ptr<google::protobuf::Message>> BuildRequest(const Invocation& inv, const Api& api) {
  const google::protobuf::Descriptor* type = inv.command->method->input_type();
  std::unique_ptr<google::protobuf::Message> request = api.NewMessage(type);
  std::vector<std::pair<std::string, std::string>> flags;
  for (const auto& [name, value] : inv.flags) {
    std::string field = Alias(inv.verb, name);
    if (field != "json" && !IsFieldPath(type, field)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " for ppnctl ", CommandName(inv),
                                                     DidYouMean(name, AcceptedFlags(inv.verb, *inv.command), "--"),
                                                     "; --help lists its flags"));
    }
    ValueConverter convert = Converter(inv.verb, name);
    if (convert == nullptr) {
      flags.emplace_back(field, value);
      continue;
    }
    absl::StatusOr<std::string> converted = convert(value);
    if (!converted.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", converted.status().message()));
    }
    flags.emplace_back(field, *std::move(converted));
  }
  if (inv.verb != nullptr) {
    for (const auto& [field, value] : inv.verb->defaults) {
      bool overridden = false;
      for (const auto& f : flags) overridden |= f.first == field;
      if (!overridden) PPN_RETURN_IF_ERROR(SetField(request.get(), field, value));
    }
    for (size_t i = 0; i < inv.args.size() && i < inv.verb->arg_fields.size(); ++i) {
      PPN_RETURN_IF_ERROR(SetField(request.get(), inv.verb->arg_fields[i], inv.args[i]));
    }
  }
  for (const auto& [field, value] : flags) {
    PPN_RETURN_IF_ERROR(field == "json" ? MergeJson(request.get(), value) : SetField(request.get(), field, value));
  }
  return request;
}

int Fail(const absl::Status& status) {
  std::fputs(Explain(status).c_str(), stderr);
  return kExitFailed;
}

int UsageError(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
  return kExitUsage;
}

int RunRpc(const Invocation& invocation) {
  const Api& api = Api::Get();
  const Settings& settings = *invocation.settings;
  // The verb's own flags (--wait) are not the request's.
  Invocation inv = invocation;
  bool follow = false;
  if (inv.verb != nullptr && !inv.verb->local_flags.empty()) {
    inv.flags.clear();
    for (const auto& flag : invocation.flags) {
      const auto& local = inv.verb->local_flags;
      if (std::find(local.begin(), local.end(), flag.first) == local.end()) {
        inv.flags.push_back(flag);
      } else if (flag.second != "false") {
        follow = true;
      }
    }
  }
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> request = BuildRequest(inv, api);
  if (!request.ok()) return UsageError(request.status());
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok()) return UsageError(format.status());
  absl::Duration timeout = inv.command->method->server_streaming() ? absl::InfiniteDuration() : absl::Seconds(120);
  std::string t = settings.Get("timeout");
  if (!t.empty() && !absl::ParseDuration(t, &timeout)) {
    return UsageError(absl::InvalidArgumentError("--timeout wants a duration such as 30s"));
  }
  absl::StatusOr<Connection> conn = Connect(settings, inv.command->service_command);
  if (!conn.ok()) return Fail(conn.status());
  ResponsePrinter print = inv.verb != nullptr && inv.verb->print != nullptr ? inv.verb->print : inv.type_print;
  // The trace never shows a credential: the token only as "<redacted>", secret fields likewise.
  const bool verbose = settings.Get("verbose") == "true";
  if (verbose) {
    std::fprintf(stderr, "> %s /%s/%s\n", conn->endpoint.c_str(), inv.command->method->service()->full_name().c_str(),
                 inv.command->method->name().c_str());
    if (!conn->token.empty()) std::fputs("> authorization: Bearer <redacted>\n", stderr);
    std::fprintf(stderr, "> %s\n", RedactedJson(**request).c_str());
  }
  const bool yaml_stream = *format == Format::kYaml && inv.command->method->server_streaming();
  std::unique_ptr<google::protobuf::Message> last;
  absl::Status s = Invoke(
      *conn, inv.command->method, **request,
      [&](const google::protobuf::Message& m) {
        last.reset(m.New());
        last->CopyFrom(m);
        if (verbose) std::fprintf(stderr, "< %s\n", RedactedJson(m).c_str());
        if (yaml_stream) std::fputs("---\n", stdout);  // one YAML document per streamed message
        if (print != nullptr && print(m, settings)) return;
        std::fputs(Render(m, *format).c_str(), stdout);
        std::fflush(stdout);
      },
      timeout);
  StderrProgress().Finish();
  if (verbose) std::fprintf(stderr, "< status: %s\n", absl::StatusCodeToString(s.code()).c_str());
  if (s.code() == absl::StatusCode::kCancelled && Interrupted()) return kExitInterrupted;
  if (!s.ok()) return Fail(s);
  if (follow && inv.verb->follow_up != nullptr && last != nullptr) return inv.verb->follow_up(inv, *last);
  return 0;
}

}  // namespace ppn::ppnctl
