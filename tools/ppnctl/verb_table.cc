#include "tools/ppnctl/verb_table.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/ledger/v1/ledger_service.pb.h"
#include "ppn/tenancy/v1/tenant_admin.pb.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"
#include "tools/ppnctl/caller.h"
#include "tools/ppnctl/completion.h"
#include "tools/ppnctl/config_file.h"
#include "tools/ppnctl/connect.h"
#include "tools/ppnctl/egress.h"
#include "tools/ppnctl/grpc_ledger_reader.h"
#include "tools/ppnctl/help.h"
#include "tools/ppnctl/known_ledgers.h"
#include "tools/ppnctl/ledger_verify.h"
#include "tools/ppnctl/node_table.h"
#include "tools/ppnctl/output.h"
#include "tools/ppnctl/progress.h"
#include "tools/ppnctl/rpc_runner.h"
#include "tools/ppnctl/tenant_table.h"
#include "tools/ppnctl/vm_table.h"

namespace ppn::ppnctl {
namespace {

// `migrate` and `node drain` show their progress on one line of stderr (progress.h), then the
// final report; JSON and YAML get every message as it is, for scripts.
bool PrintMigrationProgress(const google::protobuf::Message& m, const Settings& settings) {
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok() || (*format != Format::kTable && *format != Format::kWide)) return false;
  const auto* field = m.GetDescriptor()->FindFieldByName("progress");
  ppn::types::v1::MigrationProgress progress;
  if (field == nullptr || !m.GetReflection()->HasField(m, field) ||
      !progress.ParseFromString(m.GetReflection()->GetMessage(m, field).SerializeAsString())) {
    StderrProgress().Finish();
    return false;
  }
  StderrProgress().Update(DescribeProgress(progress, isatty(2) == 0));
  if (!IsFinal(progress)) return true;
  StderrProgress().Finish();
  return false;
}

// `vm create --wait`: follows the new VM (WatchVm) on the progress line until it is RUNNING
// (exit 0) or will not get there (FAILED, DESTROYED, LOST: exit 1), within --timeout (default
// 5 minutes). Ctrl-C stops waiting (exit 130); the VM stays.
int WaitForVm(const Invocation& inv, const google::protobuf::Message& response) {
  using ppn::types::v1::VmState;
  ppn::tenancy::v1::CreateVmResponse created;
  if (!created.ParseFromString(response.SerializeAsString()) || created.vm().name().empty()) return 0;
  const std::string name = created.vm().name();
  auto state_name = [](VmState s) {
    return std::string(absl::StripPrefix(ppn::types::v1::VmState_Name(s), "VM_STATE_"));
  };
  auto settled = [](VmState s) {
    return s == ppn::types::v1::VM_STATE_RUNNING || s == ppn::types::v1::VM_STATE_FAILED ||
           s == ppn::types::v1::VM_STATE_DESTROYED || s == ppn::types::v1::VM_STATE_LOST;
  };
  VmState state = created.vm().state();
  absl::Time start = absl::Now();
  if (!settled(state)) {
    absl::Duration timeout = absl::Minutes(5);
    std::string t = inv.settings->Get("timeout");
    if (!t.empty() && !absl::ParseDuration(t, &timeout)) timeout = absl::Minutes(5);
    absl::StatusOr<const Command*> watch = Api::Get().Find("tenant", "watch-vm");
    if (!watch.ok()) return Fail(watch.status());
    absl::StatusOr<Connection> conn = Connect(*inv.settings, "tenant");
    if (!conn.ok()) return Fail(conn.status());
    ppn::tenancy::v1::WatchVmRequest request;
    request.set_name(name);
    StderrProgress().Update(absl::StrCat(name, " ", state_name(state), " (waiting)"));
    std::unique_ptr<google::protobuf::Message> dynamic = Api::Get().NewMessage((*watch)->method->input_type());
    dynamic->ParseFromString(request.SerializeAsString());
    absl::Status s = InvokeUntil(
        *conn, (*watch)->method, *dynamic,
        [&](const google::protobuf::Message& m) {
          ppn::tenancy::v1::WatchVmResponse update;
          if (!update.ParseFromString(m.SerializeAsString())) return true;
          state = update.vm().state();
          StderrProgress().Update(
              absl::StrCat(name, " ", state_name(state), " after ", absl::ToInt64Seconds(absl::Now() - start), "s"));
          return !settled(state);
        },
        timeout);
    StderrProgress().Finish();
    if (Interrupted()) return kExitInterrupted;
    if (!s.ok()) return Fail(s);
  }
  if (state == ppn::types::v1::VM_STATE_RUNNING) return 0;
  std::fprintf(stderr, "%s is %s: it will not run (ppnctl vm get %s)\n", name.c_str(), state_name(state).c_str(),
               name.c_str());
  return kExitFailed;
}

// `vm console` prints the guest's bytes made safe (ConsoleText), unless an output format was
// asked for (JSON keeps them base64, whole).
bool PrintConsole(const google::protobuf::Message& m, const Settings& settings) {
  if (settings.IsSet("output")) return false;
  ppn::tenancy::v1::GetConsoleOutputResponse out;
  if (!out.ParseFromString(m.SerializeAsString())) return false;
  std::fputs(ConsoleText(out.data()).c_str(), stdout);
  std::fflush(stdout);
  return true;
}

// `vm console -f`: after what GetConsoleOutput printed, follows the console (StreamConsole)
// from where it ended until Ctrl-C (exit 130) or the VM is destroyed (exit 0).
int FollowConsole(const Invocation& inv, const google::protobuf::Message& response) {
  ppn::tenancy::v1::GetConsoleOutputResponse first;
  if (!first.ParseFromString(response.SerializeAsString()) || inv.args.empty()) return 0;
  absl::StatusOr<const Command*> stream = Api::Get().Find("tenant", "stream-console");
  if (!stream.ok()) return Fail(stream.status());
  absl::StatusOr<Connection> conn = Connect(*inv.settings, "tenant");
  if (!conn.ok()) return Fail(conn.status());
  ppn::tenancy::v1::StreamConsoleRequest request;
  request.set_name(inv.args[0]);
  request.set_offset(first.next_offset());
  std::unique_ptr<google::protobuf::Message> dynamic = Api::Get().NewMessage((*stream)->method->input_type());
  dynamic->ParseFromString(request.SerializeAsString());
  const bool raw = inv.settings->IsSet("output");
  absl::Status s = InvokeUntil(
      *conn, (*stream)->method, *dynamic,
      [&](const google::protobuf::Message& m) {
        if (raw) {
          std::fputs(Render(m, *ParseFormat(inv.settings->Get("output"))).c_str(), stdout);
        } else {
          PrintConsole(m, *inv.settings);
        }
        std::fflush(stdout);
        return true;
      },
      absl::InfiniteDuration());
  if (Interrupted()) return kExitInterrupted;
  if (!s.ok()) return Fail(s);
  return 0;
}

// `ledger checkpoint` prints the signed note as it is, unless an output format was asked for.
bool PrintSignedNote(const google::protobuf::Message& m, const Settings& settings) {
  if (settings.IsSet("output")) return false;
  ppn::ledger::v1::GetCheckpointResponse checkpoint;
  if (!checkpoint.ParseFromString(m.SerializeAsString())) return false;
  std::fputs(checkpoint.signed_note().c_str(), stdout);
  return true;
}

// A tenant's VM (vm create, get, egress) prints as a one-row table (vm_table.h), then its
// memory, its egress policy and its traffic in words; JSON and YAML print the response whole.
bool PrintVm(const google::protobuf::Message& m, const Settings& settings) {
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok() || (*format != Format::kTable && *format != Format::kWide)) return false;
  const auto* field = m.GetDescriptor()->FindFieldByName("vm");
  if (field == nullptr || field->message_type() == nullptr ||
      field->message_type()->full_name() != ppn::tenancy::v1::Vm::descriptor()->full_name()) {
    return false;
  }
  ppn::tenancy::v1::ListVmsResponse one;
  if (!one.add_vms()->ParseFromString(m.GetReflection()->GetMessage(m, field).SerializeAsString())) return false;
  std::fputs(RenderVms(one, absl::Now(), *format == Format::kWide).c_str(), stdout);
  std::fputs(DescribeMemory(one.vms(0)).c_str(), stdout);
  std::fputs(DescribeNetwork(one.vms(0)).c_str(), stdout);
  std::fflush(stdout);
  return true;
}

// `vm list` prints the VM table (vm_table.h) unless JSON or YAML was asked for.
bool PrintVms(const google::protobuf::Message& m, const Settings& settings) {
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok() || (*format != Format::kTable && *format != Format::kWide)) return false;
  ppn::tenancy::v1::ListVmsResponse vms;
  if (m.GetDescriptor()->full_name() != vms.GetDescriptor()->full_name() ||
      !vms.ParseFromString(m.SerializeAsString())) {
    return false;
  }
  std::fputs(RenderVms(vms, absl::Now(), *format == Format::kWide).c_str(), stdout);
  std::fflush(stdout);
  return true;
}

// `node list` shows each node's tunnel (and with -o wide its peers), unless JSON or YAML was
// asked for.
bool PrintNodes(const google::protobuf::Message& m, const Settings& settings) {
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok() || (*format != Format::kTable && *format != Format::kWide)) return false;
  ppn::fleet::v1::ListNodesResponse nodes;
  if (m.GetDescriptor()->full_name() != nodes.GetDescriptor()->full_name() ||
      !nodes.ParseFromString(m.SerializeAsString())) {
    return false;
  }
  std::fputs(RenderNodes(nodes, absl::Now(), *format == Format::kWide).c_str(), stdout);
  std::fflush(stdout);
  return true;
}

// `message` as a `T` when it is one and a table is asked for (JSON and YAML stay whole).
template <typename T>
std::optional<T> TableOf(const google::protobuf::Message& m, const Settings& settings) {
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok() || (*format != Format::kTable && *format != Format::kWide)) return std::nullopt;
  T out;
  if (m.GetDescriptor()->full_name() != T::descriptor()->full_name() || !out.ParseFromString(m.SerializeAsString())) {
    return std::nullopt;
  }
  return out;
}

bool Print(const std::string& text) {
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  return true;
}

bool PrintTenants(const google::protobuf::Message& m, const Settings& settings) {
  auto r = TableOf<ppn::tenancy::v1::ListTenantsResponse>(m, settings);
  return r.has_value() && Print(RenderTenants(*r));
}

bool PrintAddedTenant(const google::protobuf::Message& m, const Settings& settings) {
  auto r = TableOf<ppn::tenancy::v1::AddTenantResponse>(m, settings);
  if (!r.has_value()) return false;
  std::string id = r->tenant().token_ids_size() > 0 ? r->tenant().token_ids(0) : "";
  return Print(RenderNewToken(r->tenant().tenant_id(), r->token(), id));
}

bool PrintRotatedToken(const google::protobuf::Message& m, const Settings& settings) {
  auto r = TableOf<ppn::tenancy::v1::RotateTokenResponse>(m, settings);
  if (!r.has_value()) return false;
  std::string revoked = r->revoked_token_ids_size() == 0
                            ? ""
                            : absl::StrCat("revoked: ", absl::StrJoin(r->revoked_token_ids(), ", "), "\n");
  return Print(RenderNewToken(r->tenant_id(), r->token(), r->token_id()) + revoked);
}

// `fleet list-vms`: the operator's table across tenants (vm_table.h).
bool PrintFleetVms(const google::protobuf::Message& m, const Settings& settings) {
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok() || (*format != Format::kTable && *format != Format::kWide)) return false;
  ppn::fleet::v1::ListVmsResponse vms;
  if (m.GetDescriptor()->full_name() != vms.GetDescriptor()->full_name() ||
      !vms.ParseFromString(m.SerializeAsString())) {
    return false;
  }
  std::fputs(RenderFleetVms(vms, absl::Now(), *format == Format::kWide).c_str(), stdout);
  std::fflush(stdout);
  return true;
}

// `vm get|destroy --tenant T NAME`: the fleet's record of one VM as the operator's one-row
// table (NAME, TENANT, STATE, AGE, ADDRESS, NODE).
bool PrintFleetVm(const google::protobuf::Message& m, const Settings& settings) {
  absl::StatusOr<Format> format = ParseFormat(settings.Get("output"));
  if (!format.ok() || (*format != Format::kTable && *format != Format::kWide)) return false;
  const auto* field = m.GetDescriptor()->FindFieldByName("vm");
  if (field == nullptr || field->message_type() == nullptr ||
      field->message_type()->full_name() != ppn::fleet::v1::VmRecord::descriptor()->full_name()) {
    return false;
  }
  ppn::fleet::v1::ListVmsResponse one;
  if (!one.add_vms()->ParseFromString(m.GetReflection()->GetMessage(m, field).SerializeAsString())) return false;
  std::fputs(RenderFleetVms(one, absl::Now(), *format == Format::kWide).c_str(), stdout);
  std::fflush(stdout);
  return true;
}

// The operator's forms of the vm verbs (Verb::form): the fleet's RPCs, for any tenant's VMs,
// with the operator's certificate. Not listed on their own: the tenant verbs' help names them.
const Verb* OperatorList() {
  static const Verb* v = new Verb(Verb({"vm", "list"})
                                      .Flags("--all-tenants [--filter=F] [-o wide]")
                                      .Help("lists every tenant's VMs with their tenant and node (operator)")
                                      .Calls("fleet", "list-vms")
                                      .Prints(PrintFleetVms)
                                      .Then({"all-tenants"}, nullptr));
  return v;
}
const Verb* OperatorGet() {
  static const Verb* v = new Verb(Verb({"vm", "get"})
                                      .Args({"NAME"})
                                      .Flags("--tenant TENANT")
                                      .Help("shows a tenant's VM by its name or id (operator)")
                                      .Calls("fleet", "get-vm")
                                      .ArgFields({"vm_id"})
                                      .Alias("tenant", "tenant_id")
                                      .Prints(PrintFleetVm));
  return v;
}
const Verb* OperatorDestroy() {
  static const Verb* v = new Verb(Verb({"vm", "destroy"})
                                      .Args({"NAME"})
                                      .Flags("--tenant TENANT --force")
                                      .Help("destroys a tenant's VM by its name or id (operator; the ledger names you)")
                                      .Calls("fleet", "destroy-vm")
                                      .ArgFields({"vm_id"})
                                      .Alias("tenant", "tenant_id")
                                      .Requires({"force"})
                                      .Prints(PrintFleetVm)
                                      .Then({"force"}, nullptr));
  return v;
}

int RunHelp(const Invocation& inv) {
  const Api& api = Api::Get();
  if (inv.args.empty()) {
    std::fputs(MainHelp(Verbs(), api).c_str(), stdout);
    return 0;
  }
  absl::StatusOr<Resolved> r = Resolve(Verbs(), api, inv.args);
  if (!r.ok()) return UsageError(r.status());
  std::fputs(HelpFor(*r, Verbs(), api).c_str(), stdout);
  return 0;
}

// The version is a constant of the source, not asked of any service: `version` works offline.
constexpr char kVersion[] = "0.16.0";

int RunVersion(const Invocation&) {
  std::printf("ppnctl %s (API: %zu services, %zu RPCs compiled in)\n", kVersion, Api::Get().Services().size(),
              Api::Get().commands().size());
  return 0;
}

int RunCompletion(const Invocation& inv) {
  bool zsh = !inv.verb->words.empty() && inv.verb->words.back() == "zsh";
  std::fputs((zsh ? ZshCompletion(Verbs(), Api::Get()) : BashCompletion(Verbs(), Api::Get())).c_str(), stdout);
  return 0;
}

// `__complete vms|nodes`: the names the shell completes, one a line, asked of the mesh with a
// short deadline. Whatever fails prints nothing and exits 0: a completion must never show an
// error in the middle of the line being typed. Read-only: it only lists.
int RunComplete(const Invocation& inv) {
  const Api& api = Api::Get();
  bool nodes = inv.args[0] == "nodes";
  if (!nodes && inv.args[0] != "vms") return 0;
  absl::StatusOr<const Command*> found = nodes ? api.Find("fleet", "list-nodes") : api.Find("tenant", "list-vms");
  if (!found.ok()) return 0;
  const Command* command = *found;
  absl::StatusOr<Connection> conn = Connect(*inv.settings, command->service_command);
  if (!conn.ok()) return 0;
  std::unique_ptr<google::protobuf::Message> request = api.NewMessage(command->method->input_type());
  std::string names;
  (void)Invoke(
      *conn, command->method, *request,
      [&](const google::protobuf::Message& m) {
        if (nodes) {
          ppn::fleet::v1::ListNodesResponse r;
          if (!r.ParseFromString(m.SerializeAsString())) return;
          for (const auto& n : r.nodes()) absl::StrAppend(&names, n.node_id(), "\n");
        } else {
          ppn::tenancy::v1::ListVmsResponse r;
          if (!r.ParseFromString(m.SerializeAsString())) return;
          for (const auto& vm : r.vms()) absl::StrAppend(&names, vm.name(), "\n");
        }
      },
      absl::Seconds(2));
  std::fputs(names.c_str(), stdout);
  return 0;
}

// The config file as it is on disk (empty when there is none yet).
absl::StatusOr<ConfigFile> ReadConfig(const Settings& settings) {
  if (settings.config_path().empty()) {
    return absl::InvalidArgumentError("no config file: set HOME, XDG_CONFIG_HOME or --config");
  }
  absl::StatusOr<std::string> text = ReadFile(settings.config_path());
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) return ConfigFile{};
    return text.status();
  }
  return ParseConfig(*text, settings.config_path());
}

// A path relative to here, made absolute: a context must work from any directory.
std::string Absolute(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

int RunSetContext(const Invocation& inv) {
  const Settings& settings = *inv.settings;
  absl::StatusOr<ConfigFile> config = ReadConfig(settings);
  if (!config.ok()) return Fail(config.status());
  ConfigFile::Keys keys;
  for (const char* name : {"endpoint", "ca", "cert", "key", "token_file"}) {
    std::optional<std::string> v = settings.Flag(name);
    if (!v.has_value()) continue;
    keys[name] = std::string(name) == "endpoint" ? *v : Absolute(*v);
  }
  absl::Status set = SetContext(&*config, inv.args[0], keys);
  if (!set.ok()) return UsageError(set);
  absl::Status saved = SaveConfig(*config, settings.config_path());
  if (!saved.ok()) return Fail(saved);
  std::printf("context \"%s\" written to %s\n", inv.args[0].c_str(), settings.config_path().c_str());
  return 0;
}

int RunUseContext(const Invocation& inv) {
  absl::StatusOr<ConfigFile> config = ReadConfig(*inv.settings);
  if (!config.ok()) return Fail(config.status());
  absl::Status used = UseContext(&*config, inv.args[0]);
  if (!used.ok()) return Fail(used);
  absl::Status saved = SaveConfig(*config, inv.settings->config_path());
  if (!saved.ok()) return Fail(saved);
  std::printf("using context \"%s\"\n", inv.args[0].c_str());
  return 0;
}

int RunGetContexts(const Invocation& inv) {
  absl::StatusOr<ConfigFile> config = ReadConfig(*inv.settings);
  if (!config.ok()) return Fail(config.status());
  std::fputs(RenderContexts(*config).c_str(), stdout);
  return 0;
}

int RunCurrentContext(const Invocation& inv) {
  if (inv.settings->context().empty()) {
    std::fputs("no current context (ppnctl config use-context NAME)\n", stderr);
    return kExitFailed;
  }
  std::printf("%s\n", inv.settings->context().c_str());
  return 0;
}

int RunLedgerVerify(const Invocation& inv) {
  const Settings& settings = *inv.settings;
  std::string path = settings.Get("known_ledgers");
  if (path.empty()) {
    return UsageError(absl::InvalidArgumentError(
        "ledger verify remembers ledgers in --known_ledgers=FILE (default ~/.config/ppnctl/known_ledgers, "
        "but HOME is not set)"));
  }
  absl::StatusOr<KnownLedgers> known = KnownLedgers::Load(path);
  if (!known.ok()) return Fail(known.status());
  absl::StatusOr<Connection> conn = Connect(settings, "ledger");
  if (!conn.ok()) return Fail(conn.status());
  std::unique_ptr<LedgerReader> reader = NewGrpcLedgerReader(*conn);
  absl::StatusOr<LedgerVerifyReport> report =
      VerifyLedger(*reader, {conn->endpoint, settings.Get("ledger_key")}, &*known);
  if (!report.ok()) return Fail(report.status());
  if (!report->ok) {
    std::printf("FAILED %s\n", report->problem.c_str());
    return kExitFailed;
  }
  absl::Status saved = known->Save();
  if (!saved.ok()) {
    return Fail(absl::Status(saved.code(), absl::StrCat("the ledger verifies, but what was verified cannot be "
                                                        "remembered: ",
                                                        saved.message())));
  }
  if (report->first_use) {
    std::fprintf(stderr,
                 "first use: pinned key %s for ledger %s (in %s; check it against the key the ledger "
                 "logs at start)\n",
                 report->verifier_key.c_str(), report->origin.c_str(), path.c_str());
  }
  std::string consistent = report->consistent_with == 0 ? ""
                                                        : absl::StrCat("; consistent with the checkpoint of size ",
                                                                       report->consistent_with, " verified before");
  std::printf("OK %llu entries of ledger %s reproduce its checkpoint, signed by key %s%s\n%s",
              static_cast<unsigned long long>(report->tree_size), report->origin.c_str(), report->verifier_key.c_str(),
              consistent.c_str(), report->signed_note.c_str());
  return 0;
}

}  // namespace

ResponsePrinter PrinterForType(const std::string& full_name) {
  if (full_name == ppn::fleet::v1::ListVmsResponse::descriptor()->full_name()) return PrintFleetVms;
  if (full_name == ppn::tenancy::v1::ListVmsResponse::descriptor()->full_name()) return PrintVms;
  if (full_name == ppn::fleet::v1::ListNodesResponse::descriptor()->full_name()) return PrintNodes;
  if (full_name == ppn::tenancy::v1::ListTenantsResponse::descriptor()->full_name()) return PrintTenants;
  return nullptr;
}

const std::vector<Verb>& Verbs() {
  static const auto* verbs = new std::vector<Verb>{
      Verb({"vm", "create"})
          .Args({"NAME"})
          .Flags("[--spec.memory_mib=N] [--spec.image=I] [--wait]")
          .Help("creates a VM named NAME for your tenant (tenant API: PPN_TOKEN or --token_file); --wait: until "
                "it runs")
          .Details(
              "NAME is the VM's id within your tenant ([a-z][a-z0-9-]{0,62}, unique among your VMs that\n"
              "exist): vm get, destroy, egress and watch take it, or the generated vm_id. Another tenant may\n"
              "use the same name; nothing of theirs is ever visible. --spec.labels='{\"env\":\"ci\"}' sets labels\n"
              "that vm list --filter=labels.env=ci selects.")
          .Calls("tenant", "create-vm")
          .ArgFields({"vm_id"})
          .Defaults({{"spec.vcpus", "1"},
                     {"spec.memory_mib", "128"},
                     {"spec.image", "ppn-test-guest"},
                     {"spec.port_forwards", "{\"guest_port\":80}"}})
          .Alias("internet", "spec.egress.internet", InternetFlagValue)
          .Alias("allow", "spec.egress.allow", AllowFlagValue)
          .Alias("deny", "spec.egress.deny", DenyFlagValue)
          .Alias("rate-limit-kbit", "spec.egress.rate_limit_kbit")
          .Alias("network", "spec.networks")
          .Prints(PrintVm)
          .Then({"wait"}, WaitForVm),
      Verb({"vm", "list"})
          .Flags("[--filter='state=RUNNING AND labels.env=ci'] [-o wide] [--all-tenants]")
          .Help("lists your tenant's VMs: name, state, age, address (-o wide: size, image, expiry, id)")
          .Details("--filter takes terms joined by AND: state=STATE (RUNNING, UNKNOWN, ...), name=NAME and\n"
                   "labels.KEY=VALUE (values bare or \"quoted\"); anything else is refused saying where.\n"
                   "Operator: --all-tenants lists every tenant's VMs with TENANT and NODE columns (the fleet's\n"
                   "ListVms, with the operator's certificate).")
          .Calls("tenant", "list-vms")
          .OperatorForm("all-tenants", OperatorList())
          .Prints(PrintVms),
      Verb({"vm", "get"})
          .Args({"NAME"})
          .Help("shows one of your VMs, what it may reach and its traffic (NAME: its name or id)")
          .Details("Operator: vm get --tenant TENANT NAME shows any tenant's VM with its node.")
          .Calls("tenant", "get-vm")
          .ArgFields({"name"})
          .OperatorForm("tenant", OperatorGet())
          .Prints(PrintVm),
      Verb({"vm", "egress"})
          .Args({"NAME"})
          .Flags("[--internet=allow|deny] [--allow=CIDR[:PORT[-PORT]][/udp]]... [--deny=CIDR[:PORT[-PORT]][/udp]]... "
                 "[--rate-limit-kbit=N]")
          .Help("replaces what one of your running VMs may reach, live (NAME: its name or id)")
          .Details("Replaces the VM's whole egress policy while it runs; new connections follow it at once.\n"
                   "Each --allow and --deny adds one rule, CIDR[:PORT[-PORT]][/udp] (TCP unless /udp), e.g.\n"
                   "203.0.113.0/24, 198.51.100.7:443 or 10.1.0.0/16:5000-5100/udp. --internet=deny blocks all but\n"
                   "the allow list; deny rules win over allow rules. Your tenant's policy still holds: the VM\n"
                   "gets the narrower of the two, and an allow rule beyond your tenant's is refused. With no\n"
                   "flags the VM goes back to your tenant's policy. Whatever it says, a VM never reaches its\n"
                   "host, the mesh, link-local addresses or any other VM.")
          .Calls("tenant", "update-vm-network")
          .ArgFields({"name"})
          .Alias("internet", "egress.internet", InternetFlagValue)
          .Alias("allow", "egress.allow", AllowFlagValue)
          .Alias("deny", "egress.deny", DenyFlagValue)
          .Alias("rate-limit-kbit", "egress.rate_limit_kbit")
          .Prints(PrintVm),
      Verb({"vm", "stop"})
          .Args({"NAME"})
          .Flags("[--grace=30s]")
          .Help("powers one of your VMs off, keeping its disk (ACPI; off for good after --grace)")
          .Details("The guest gets an ACPI power-off and --grace (default 30s, at most 10m) to shut down,\n"
                   "then it is switched off. Its disk, identity and address stay: `vm start` boots it again.\n"
                   "A stopped VM counts against your VM quota, not against your vCPUs or memory.")
          .Calls("tenant", "stop-vm")
          .ArgFields({"name"})
          .Alias("grace", "grace_period")
          .Prints(PrintVm),
      Verb({"vm", "start"})
          .Args({"NAME"})
          .Flags("[--fresh-disk]")
          .Help("boots one of your stopped VMs again, with its disk")
          .Details("It boots on its host, with its disk. If that host is gone, the start is refused unless\n"
                   "--fresh-disk is given: then it boots on another host from its image, with a fresh disk\n"
                   "(its old disk is not carried over; it keeps its id, name, labels, networks and relay\n"
                   "ports). While its host is alive --fresh-disk changes nothing.")
          .Calls("tenant", "start-vm")
          .ArgFields({"name"})
          .Alias("fresh-disk", "fresh_disk")
          .Prints(PrintVm),
      Verb({"vm", "reboot"})
          .Args({"NAME"})
          .Flags("[--grace=30s]")
          .Help("reboots one of your VMs (ACPI power-off and boot; a reset if it has not shut down after --grace)")
          .Calls("tenant", "reboot-vm")
          .ArgFields({"name"})
          .Alias("grace", "grace_period")
          .Prints(PrintVm),
      Verb({"vm", "console"})
          .Args({"NAME"})
          .Flags("[-f] [--offset=N]")
          .Help("prints one of your VMs' serial console (its first MiB from --offset); -f follows it")
          .Details("Control characters and bytes beyond ASCII print as \\xNN: what the guest writes never drives\n"
                   "your terminal. -o json gives the bytes as they are (base64) with next_offset.")
          .Calls("tenant", "get-console-output")
          .ArgFields({"name"})
          .Defaults({{"max_bytes", "1048576"}})
          .Prints(PrintConsole)
          .Then({"follow"}, FollowConsole),
      Verb({"vm", "destroy"})
          .Args({"NAME"})
          .Flags("[--tenant TENANT --force]")
          .Help("destroys one of your VMs (NAME: its name or id), also one whose host is down")
          .Details("A VM whose host is unreachable (UNKNOWN) or lost is destroyed at once: it stops counting\n"
                   "against your quota, and its host removes it when it returns.\n"
                   "Operator: vm destroy --tenant TENANT NAME --force destroys any tenant's VM; the ledger's\n"
                   "vm.destroy entry names your certificate (who=operator identity=spiffe://...).")
          .Calls("tenant", "destroy-vm")
          .ArgFields({"name"})
          .OperatorForm("tenant", OperatorDestroy()),
      Verb({"node", "list"})
          .Flags("[-o wide]")
          .Help("lists the nodes of the pool and their WireGuard tunnels (-o wide: each node's peers)")
          .Details("TUNNEL is up (configured from the whole ledger), down (the node says why, below the\n"
                   "table) or none (the node runs without WireGuard: the one-machine mesh). HANDSHAKE is the\n"
                   "age of the latest WireGuard handshake with any of its peers.")
          .Calls("fleet", "list-nodes")
          .Prints(PrintNodes),
      Verb({"node", "cordon"})
          .Args({"NODE"})
          .Flags("[--reason TEXT]")
          .Help("stops placing new VMs and incoming migrations on NODE (what runs there stays)")
          .Calls("fleet", "cordon-node")
          .ArgFields({"node_id"}),
      Verb({"node", "uncordon"})
          .Args({"NODE"})
          .Help("makes NODE a placement target again")
          .Calls("fleet", "uncordon-node")
          .ArgFields({"node_id"}),
      Verb({"node", "drain"})
          .Args({"NODE"})
          .Flags("[--dry_run]")
          .Help("cordons NODE and moves every VM off it (pinned ones stay; each move reports how it ended)")
          .Calls("scheduler", "drain")
          .ArgFields({"node_id"})
          .Prints(PrintMigrationProgress),
      Verb({"node", "approve"})
          .Args({"ADDR"})
          .Flags("--code CODE")
          .Help("admits the joining node at ADDR that shows CODE")
          .Calls("pairing-admin", "approve-node")
          .ArgFields({"joiner_address"}),
      Verb({"node", "revoke"})
          .Args({"NODE"})
          .Flags("--reason TEXT")
          .Help("revokes NODE: every service refuses its certificate from now on")
          .Details("Appends node.revoke to the ledger (with the reason and your identity). From then on every\n"
                   "service of the mesh refuses the node's certificate, the fleet never places a VM there and\n"
                   "every node drops it from its WireGuard peers. The name is never issued again: the machine\n"
                   "comes back only through a new ceremony under a new name. To move the VMs that can still\n"
                   "move (the node is up and reachable), run `ppnctl node drain NODE` first.")
          .Calls("pairing-admin", "revoke-node")
          .ArgFields({"node_name"}),
      Verb({"tenant", "add"})
          .Args({"NAME"})
          .Flags("[--limits.max_vms=N] [--limits.max_vcpus=N] [--limits.max_memory_mib=N] [--limits.max_disk_gib=N] "
                 "[--limits.requests_per_second=R --limits.burst=N]")
          .Help("adds a tenant to the tenant proxy, live, and prints its first token once")
          .Details("Calls the proxy's TenantAdmin on its operator listener (--admin_listen; tenant-admin_endpoint),\n"
                   "never the tenant port. The proxy writes its config file and serves the tenant at once. The\n"
                   "token is printed once: the proxy keeps only its SHA-256.")
          .Calls("tenant-admin", "add-tenant")
          .ArgFields({"tenant_id"})
          .Prints(PrintAddedTenant),
      Verb({"tenant", "list"})
          .Help("lists the proxy's tenants: usage against each limit, rate limit, token ids")
          .Calls("tenant-admin", "list-tenants")
          .Prints(PrintTenants),
      Verb({"tenant", "rotate-token"})
          .Args({"NAME"})
          .Flags("[--keep_existing]")
          .Help("issues a new token for NAME (printed once) and revokes its others unless --keep_existing")
          .Calls("tenant-admin", "rotate-token")
          .ArgFields({"tenant_id"})
          .Prints(PrintRotatedToken),
      Verb({"tenant", "revoke-token"})
          .Args({"NAME", "TOKEN_ID"})
          .Help("revokes one of NAME's tokens by its id (the 8 hex digits tenant list and the logs show)")
          .Calls("tenant-admin", "revoke-token")
          .ArgFields({"tenant_id", "token_id"}),
      Verb({"tenant", "set-limits"})
          .Args({"NAME"})
          .Flags("--limits.max_vms=N [--limits.max_vcpus=N] [--limits.max_memory_mib=N] [--limits.max_disk_gib=N] "
                 "[--limits.requests_per_second=R --limits.burst=N]")
          .Help("replaces NAME's limits, live (unset fields become 0)")
          .Calls("tenant-admin", "set-limits")
          .ArgFields({"tenant_id"}),
      Verb({"migrate"})
          .Args({"VM"})
          .Flags("[--to NODE]")
          .Help("live-migrates VM (to NODE, or where placement says)")
          .Calls("scheduler", "migrate")
          .ArgFields({"vm_id"})
          .Alias("to", "target_node_id")
          .Prints(PrintMigrationProgress),
      Verb({"pin"})
          .Args({"VM", "NODE"})
          .Help("keeps VM on NODE (drain and rebalance leave it)")
          .Calls("scheduler", "pin")
          .ArgFields({"vm_id", "node_id"}),
      Verb({"unpin"}).Args({"VM"}).Help("lets VM move again").Calls("scheduler", "unpin").ArgFields({"vm_id"}),
      Verb({"ledger", "checkpoint"})
          .Help("prints the ledger's signed checkpoint")
          .Calls("ledger", "get-checkpoint")
          .Prints(PrintSignedNote),
      Verb({"ledger", "tail"})
          .Flags("[--start_index=N]")
          .Help("streams ledger entries as they are appended")
          .Calls("ledger", "watch-entries"),
      Verb({"ledger", "verify"})
          .Flags("[--ledger_key=KEY]")
          .Help("checks the ledger against its pinned key and what was verified before")
          .Details("Recomputes every entry's leaf hash from the entry and the root from them, checks the\n"
                   "checkpoint's signature against the ledger's pinned key (--ledger_key, or the key pinned in\n"
                   "--known_ledgers on first use, like ssh's known_hosts), and checks with the ledger's RFC 9162\n"
                   "consistency proof that the checkpoint extends the one verified before. A different ledger, a\n"
                   "replaced key, or a history truncated or rewritten since fails. Exit 0 and \"OK ...\", or 1 and\n"
                   "\"FAILED ...\".")
          .Runs(RunLedgerVerify),
      Verb({"completion", "bash"}).Help("prints bash completion: source <(ppnctl completion bash)").Runs(RunCompletion),
      Verb({"completion", "zsh"}).Help("prints zsh completion: source <(ppnctl completion zsh)").Runs(RunCompletion),
      Verb({"__complete"}).Args({"vms|nodes"}).Help("live names for the shell's completion").Runs(RunComplete),
      Verb({"config", "set-context"})
          .Args({"NAME"})
          .Flags("[--endpoint=HOST:PORT] [--ca=PEM] [--cert=PEM --key=PEM | --token-file=FILE]")
          .Help("creates or updates a context of the config file (only the settings given change)")
          .Details("A context is a named set of settings, like kubectl's: the one in use (use-context, or\n"
                   "--context / $PPN_CONTEXT) applies after flags and the environment and before the file's\n"
                   "other settings and the defaults. Paths are stored absolute; the file is written atomically\n"
                   "with mode 0600. A token itself is never stored, only the file that holds it.")
          .Runs(RunSetContext),
      Verb({"config", "use-context"}).Args({"NAME"}).Help("makes NAME the current context").Runs(RunUseContext),
      Verb({"config", "get-contexts"})
          .Help("lists the contexts of the config file (* marks the current one)")
          .Runs(RunGetContexts),
      Verb({"config", "current-context"}).Help("prints the context in use").Runs(RunCurrentContext),
      Verb({"version"}).Help("prints ppnctl's version and the API it was built with (calls nothing)").Runs(RunVersion),
      Verb({"help"}).Args({"VERB..."}).Help("prints help (-h or --help anywhere does too)").Runs(RunHelp),
  };
  return *verbs;
}

}  // namespace ppn::ppnctl
