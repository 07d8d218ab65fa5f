// ppnctl: the operator CLI. Every RPC of every service in proto/ is a command, derived at run
// time from the API's descriptors (compiled in); friendly verbs for daily work sit on top.
// Run `ppnctl help`.

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/tls_credentials.h"
#include "ledger/merkle.h"
#include "tools/ppnctl/api.h"
#include "tools/ppnctl/caller.h"
#include "tools/ppnctl/output.h"
#include "tools/ppnctl/ports.h"
#include "tools/ppnctl/request_builder.h"

namespace ppn::ppnctl {
namespace {

struct Options {
  std::map<std::string, std::string> globals;  // endpoint, ca, cert, key, token_file, output, timeout, config
  std::vector<std::pair<std::string, std::string>> fields;
  std::vector<std::string> words;
  bool help = false;
};

const char* kGlobals[] = {"endpoint", "ca", "cert", "key", "token_file", "output", "timeout", "config", "mesh"};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      o.help = true;
    } else if (a == "-o" && i + 1 < argc) {
      o.globals["output"] = argv[++i];
    } else if (absl::StartsWith(a, "--")) {
      std::string key = a.substr(2), value = "true";
      size_t eq = key.find('=');
      if (eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (i + 1 < argc && !absl::StartsWith(argv[i + 1], "--")) {
        value = argv[++i];
      }
      bool global = false;
      for (const char* g : kGlobals) global |= key == g;
      if (global) {
        o.globals[key] = value;
      } else {
        o.fields.emplace_back(key, value);
      }
    } else {
      o.words.push_back(a);
    }
  }
  return o;
}

// Settings: flag, then environment (PPN_<KEY>, PPN_<SERVICE>_ENDPOINT), then the config file
// (key=value lines; $PPNCTL_CONFIG or ~/.config/ppnctl/config), then defaults.
class Settings {
 public:
  explicit Settings(const Options& o) : flags_(o.globals) {
    std::string path = Flag("config");
    if (path.empty() && std::getenv("PPNCTL_CONFIG")) path = std::getenv("PPNCTL_CONFIG");
    if (path.empty() && std::getenv("HOME")) path = std::string(std::getenv("HOME")) + "/.config/ppnctl/config";
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      line = std::string(absl::StripAsciiWhitespace(line));
      if (line.empty() || line[0] == '#') continue;
      std::vector<std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
      if (kv.size() == 2)
        file_[std::string(absl::StripAsciiWhitespace(kv[0]))] = std::string(absl::StripAsciiWhitespace(kv[1]));
    }
  }
  std::string Flag(const std::string& k) const {
    auto it = flags_.find(k);
    return it == flags_.end() ? "" : it->second;
  }
  std::string Get(const std::string& key, const std::string& fallback) const {
    if (!Flag(key).empty()) return Flag(key);
    std::string env = "PPN_" + absl::AsciiStrToUpper(absl::StrReplaceAll(key, {{"-", "_"}}));
    if (std::getenv(env.c_str())) return std::getenv(env.c_str());
    auto it = file_.find(key);
    return it == file_.end() ? fallback : it->second;
  }
  std::string Endpoint(const std::string& service) const {
    if (!Flag("endpoint").empty()) return Flag("endpoint");
    auto d = DefaultEndpoints().find(service);
    return Get(service + "_endpoint", d == DefaultEndpoints().end() ? "" : d->second);
  }

 private:
  std::map<std::string, std::string> flags_, file_;
};

absl::StatusOr<Connection> Connect(const Settings& s, const std::string& service) {
  Connection c;
  c.endpoint = s.Endpoint(service);
  if (c.endpoint.empty()) return absl::InvalidArgumentError("no endpoint: pass --endpoint=HOST:PORT");
  std::string ca = s.Get("ca", "state/pki/ca.pem");
  if (service == "tenant") {
    // Tenants authenticate with a bearer token, read from a file or the environment: never
    // from the command line, where ps would show it.
    std::string file = s.Get("token_file", "");
    if (!file.empty()) {
      absl::StatusOr<std::string> t = ReadFile(file);
      if (!t.ok()) return t.status();
      c.token = std::string(absl::StripAsciiWhitespace(*t));
    } else if (std::getenv("PPN_TOKEN")) {
      c.token = std::getenv("PPN_TOKEN");
    }
    if (c.token.empty()) return absl::UnauthenticatedError("no token: set PPN_TOKEN or --token_file");
    absl::Status ok = CheckTlsFiles({ca, "", ""}, false);
    if (!ok.ok()) return ok;
    c.credentials = TlsChannelCredentials(ca);
    return c;
  }
  TlsFiles tls{ca, s.Get("cert", "state/pki/operator.pem"), s.Get("key", "state/pki/operator.key")};
  absl::Status ok = CheckTlsFiles(tls);
  if (!ok.ok()) return absl::Status(ok.code(), absl::StrCat(ok.message(), " (set --ca, --cert and --key)"));
  c.credentials = MtlsChannelCredentials(tls);
  return c;
}

std::string FieldHelp(const Api& api, const google::protobuf::Descriptor* d, const std::string& prefix, int depth) {
  std::string out;
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    std::string type = f->is_map() ? "key=value" : f->type_name();
    if (f->enum_type()) type = "enum";
    if (f->message_type() && !f->is_map()) type = f->message_type()->name();
    std::string comment = absl::StrReplaceAll(api.Comment(f), {{"\n", " "}});
    absl::StrAppend(&out, "  --", prefix, f->name(), " (", f->is_repeated() && !f->is_map() ? "repeated " : "", type,
                    ")  ", comment, "\n");
    if (f->message_type() && !f->is_map() && !f->is_repeated() && depth < 2 &&
        !absl::StartsWith(f->message_type()->full_name(), "google.protobuf.")) {
      out += FieldHelp(api, f->message_type(), prefix + f->name() + ".", depth + 1);
    }
  }
  return out;
}

std::string RpcHelp(const Command& c) {
  const Api& api = Api::Get();
  std::string out =
      absl::StrCat("ppnctl ", c.service_command, " ", c.rpc_command, " [--field=value ...]",
                   c.method->server_streaming() ? "   (streams responses as they arrive)" : "", "\n\n",
                   api.Comment(c.method), "\n\nRequest fields (", c.method->input_type()->full_name(), "):\n");
  out += FieldHelp(api, c.method->input_type(), "", 0);
  return out;
}

std::string MainHelp() {
  const Api& api = Api::Get();
  std::string out =
      "ppnctl: the PPN operator CLI.\n\n"
      "Daily verbs:\n"
      "  vm create NAME [--spec.memory_mib=N] [--spec.image=I]   vm list | get NAME | destroy NAME   (tenant API)\n"
      "  node list | node drain NODE | node approve ADDR --code CODE\n"
      "  migrate VM [--to NODE]          pin VM NODE | unpin VM\n"
      "  ledger checkpoint | ledger tail [--start_index=N] | ledger verify\n"
      "  completion bash\n\n"
      "Every RPC (ppnctl SERVICE RPC --help for its fields):\n";
  std::string service;
  for (const Command& c : api.commands()) {
    if (c.service_command != service) {
      service = c.service_command;
      absl::StrAppend(&out, "  ", service, ":");
    }
    absl::StrAppend(&out, " ", c.rpc_command);
    if (&c == &api.commands().back() || (&c + 1)->service_command != service) out += "\n";
  }
  out +=
      "\nGlobal flags: --endpoint=HOST:PORT --ca=PEM --cert=PEM --key=PEM --token_file=FILE -o table|json|yaml\n"
      "  --timeout=30s --config=FILE. Also from PPN_CA, PPN_CERT, PPN_KEY, PPN_TOKEN, PPN_<SERVICE>_ENDPOINT, or\n"
      "  key=value lines in $PPNCTL_CONFIG or ~/.config/ppnctl/config (ca=, cert=, key=, fleet_endpoint=, ...).\n";
  return out;
}

std::string Completion() {
  const Api& api = Api::Get();
  std::map<std::string, std::vector<std::string>> rpcs;
  for (const Command& c : api.commands()) rpcs[c.service_command].push_back(c.rpc_command);
  std::string out =
      "# bash completion for ppnctl: source <(ppnctl completion bash)\n_ppnctl() {\n"
      "  local cur=${COMP_WORDS[COMP_CWORD]}\n  case $COMP_CWORD in\n";
  std::vector<std::string> first = {"vm", "node", "migrate", "pin", "unpin", "ledger", "completion", "help"};
  for (const auto& [s, _] : rpcs) first.push_back(s);
  absl::StrAppend(&out, "  1) COMPREPLY=($(compgen -W \"", absl::StrJoin(first, " "),
                  "\" -- \"$cur\")) ;;\n  2) case ${COMP_WORDS[1]} in\n");
  absl::StrAppend(&out, "       vm) COMPREPLY=($(compgen -W \"create list get destroy\" -- \"$cur\")) ;;\n",
                  "       node) COMPREPLY=($(compgen -W \"list drain approve\" -- \"$cur\")) ;;\n",
                  "       ledger) COMPREPLY=($(compgen -W \"checkpoint tail verify\" -- \"$cur\")) ;;\n");
  for (const auto& [s, r] : rpcs)
    absl::StrAppend(&out, "       ", s, ") COMPREPLY=($(compgen -W \"", absl::StrJoin(r, " "), "\" -- \"$cur\")) ;;\n");
  out += "     esac ;;\n  *) case ${COMP_WORDS[1]} in\n";
  for (const auto& [s, r] : rpcs) {
    for (const auto& rpc : r) {
      const Command* c = *api.Find(s, rpc);
      std::vector<std::string> flags;
      for (int i = 0; i < c->method->input_type()->field_count(); ++i)
        flags.push_back("--" + c->method->input_type()->field(i)->name() + "=");
      absl::StrAppend(&out, "       ", s, ") [ \"${COMP_WORDS[2]}\" = ", rpc, " ] && COMPREPLY=($(compgen -W \"",
                      absl::StrJoin(flags, " "), "\" -- \"$cur\")) ;;\n");
    }
  }
  out += "     esac ;;\n  esac\n}\ncomplete -o nospace -F _ppnctl ppnctl\n";
  return out;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "%s", Explain(s).c_str());
  return 1;
}

// Runs one RPC with `fields` as its request, printing each response.
int Run(const Settings& settings, const std::string& service, const std::string& rpc,
        const std::vector<std::pair<std::string, std::string>>& fields,
        const std::function<bool(const google::protobuf::Message&)>& custom_print = nullptr) {
  const Api& api = Api::Get();
  absl::StatusOr<const Command*> cmd = api.Find(service, rpc);
  if (!cmd.ok()) return Fail(cmd.status());
  std::unique_ptr<google::protobuf::Message> request = api.NewMessage((*cmd)->method->input_type());
  for (const auto& [k, v] : fields) {
    absl::Status s = k == "json" ? MergeJson(request.get(), v) : SetField(request.get(), k, v);
    if (!s.ok()) return Fail(s);
  }
  absl::StatusOr<Format> format = ParseFormat(settings.Flag("output"));
  if (!format.ok()) return Fail(format.status());
  absl::Duration timeout = (*cmd)->method->server_streaming() ? absl::InfiniteDuration() : absl::Seconds(120);
  if (!settings.Flag("timeout").empty() && !absl::ParseDuration(settings.Flag("timeout"), &timeout)) {
    return Fail(absl::InvalidArgumentError("--timeout wants a duration such as 30s"));
  }
  absl::StatusOr<Connection> conn = Connect(settings, (*cmd)->service_command);
  if (!conn.ok()) return Fail(conn.status());
  absl::Status s = Invoke(
      *conn, (*cmd)->method, *request,
      [&](const google::protobuf::Message& m) {
        if (custom_print && custom_print(m)) return;
        std::fputs(Render(m, *format).c_str(), stdout);
        std::fflush(stdout);
      },
      timeout);
  if (!s.ok()) return Fail(s);
  return 0;
}

// `migrate` prints a live progress line on a terminal, then the final report.
bool PrintProgress(const google::protobuf::Message& m) {
  const auto* d = m.GetDescriptor();
  const auto* field = d->FindFieldByName("progress");
  if (field == nullptr || !isatty(2)) return false;
  const auto& p = m.GetReflection()->GetMessage(m, field);
  const auto* pd = p.GetDescriptor();
  const auto* r = p.GetReflection();
  std::string phase = r->GetEnum(p, pd->FindFieldByName("phase"))->name();
  uint64_t done = r->GetUInt64(p, pd->FindFieldByName("transferred_bytes"));
  uint64_t left = r->GetUInt64(p, pd->FindFieldByName("remaining_bytes"));
  bool final = absl::EndsWith(phase, "COMPLETED") || absl::EndsWith(phase, "FAILED");
  int pct = done + left == 0 ? 0 : static_cast<int>(100 * done / (done + left));
  std::string bar(pct / 5, '#');
  std::fprintf(stderr, "\r%-28s [%-20s] %3d%%  %llu MiB sent", phase.c_str(), bar.c_str(), final ? 100 : pct,
               static_cast<unsigned long long>(done >> 20));
  if (final) std::fprintf(stderr, "\n");
  return !final;
}

int LedgerVerify(const Settings& settings) {
  // Fetch the signed checkpoint and every entry; recompute the root from the leaf hashes.
  const Api& api = Api::Get();
  absl::StatusOr<Connection> conn = Connect(settings, "ledger");
  if (!conn.ok()) return Fail(conn.status());
  std::unique_ptr<google::protobuf::Message> req =
      api.NewMessage((*api.Find("ledger", "get-checkpoint"))->method->input_type());
  uint64_t size = 0;
  std::string root, note;
  absl::Status s = Invoke(
      *conn, (*api.Find("ledger", "get-checkpoint"))->method, *req,
      [&](const google::protobuf::Message& m) {
        const auto* d = m.GetDescriptor();
        size = m.GetReflection()->GetUInt64(m, d->FindFieldByName("tree_size"));
        root = m.GetReflection()->GetString(m, d->FindFieldByName("root_hash"));
        note = m.GetReflection()->GetString(m, d->FindFieldByName("signed_note"));
      },
      absl::Seconds(30));
  if (!s.ok()) return Fail(s);
  ledger::CompactRange range;
  const Command* get = *api.Find("ledger", "get-entries");
  while (range.size() < size) {
    std::unique_ptr<google::protobuf::Message> page = api.NewMessage(get->method->input_type());
    (void)SetField(page.get(), "start_index", absl::StrCat(range.size()));
    (void)SetField(page.get(), "page_size", "1000");
    size_t before = range.size();
    s = Invoke(
        *conn, get->method, *page,
        [&](const google::protobuf::Message& m) {
          const auto* entries = m.GetDescriptor()->FindFieldByName("entries");
          for (int i = 0; i < m.GetReflection()->FieldSize(m, entries) && range.size() < size; ++i) {
            const auto& e = m.GetReflection()->GetRepeatedMessage(m, entries, i);
            range.AppendLeafHash(e.GetReflection()->GetString(e, e.GetDescriptor()->FindFieldByName("leaf_hash")));
          }
        },
        absl::Seconds(60));
    if (!s.ok()) return Fail(s);
    if (range.size() == before) break;
  }
  if (range.size() != size || range.Root() != root) {
    std::printf("FAILED the entries served do not reproduce the checkpoint's root at size %llu\n",
                static_cast<unsigned long long>(size));
    return 1;
  }
  std::printf("OK %llu entries reproduce the signed checkpoint's root\n%s", static_cast<unsigned long long>(size),
              note.c_str());
  return 0;
}

int Main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  Settings settings(o);
  const std::vector<std::string>& w = o.words;
  if (w.empty() || w[0] == "help") {
    std::fputs(MainHelp().c_str(), stdout);
    return w.empty() && !o.help ? 2 : 0;
  }
  if (w[0] == "completion") {
    std::fputs(Completion().c_str(), stdout);
    return 0;
  }
  auto with = [&](std::vector<std::pair<std::string, std::string>> extra) {
    extra.insert(extra.end(), o.fields.begin(), o.fields.end());
    return extra;
  };
  auto need = [&](size_t n, const char* usage) {
    if (w.size() >= n) return true;
    std::fprintf(stderr, "usage: ppnctl %s\n", usage);
    return false;
  };
  if (w[0] == "vm" && w.size() >= 2) {
    if (w[1] == "create" && need(3, "vm create NAME [--spec.memory_mib=128] [--spec.image=...]")) {
      return Run(settings, "tenant", "create-vm",
                 with({{"spec.display_name", w[2]},
                       {"spec.vcpus", "1"},
                       {"spec.memory_mib", "128"},
                       {"spec.image", "ppn-test-guest"},
                       {"spec.port_forwards", "{\"guest_port\":80}"}}));
    }
    if (w[1] == "list") return Run(settings, "tenant", "list-vms", o.fields);
    if (w[1] == "get" && need(3, "vm get NAME")) return Run(settings, "tenant", "get-vm", with({{"name", w[2]}}));
    if (w[1] == "destroy" && need(3, "vm destroy NAME"))
      return Run(settings, "tenant", "destroy-vm", with({{"name", w[2]}}));
    return 2;
  }
  if (w[0] == "node" && w.size() >= 2) {
    if (w[1] == "list") return Run(settings, "fleet", "list-nodes", o.fields);
    if (w[1] == "drain" && need(3, "node drain NODE"))
      return Run(settings, "scheduler", "drain", with({{"node_id", w[2]}}));
    if (w[1] == "approve" && need(3, "node approve ADDR --code CODE")) {
      return Run(settings, "pairing-admin", "approve-node", with({{"joiner_address", w[2]}}));
    }
    return 2;
  }
  if (w[0] == "migrate" && need(2, "migrate VM [--to NODE]")) {
    std::vector<std::pair<std::string, std::string>> f = {{"vm_id", w[1]}};
    for (const auto& [k, v] : o.fields) f.emplace_back(k == "to" ? "target_node_id" : k, v);
    return Run(settings, "scheduler", "migrate", f, PrintProgress);
  }
  if (w[0] == "pin" && need(3, "pin VM NODE"))
    return Run(settings, "scheduler", "pin", with({{"vm_id", w[1]}, {"node_id", w[2]}}));
  if (w[0] == "unpin" && need(2, "unpin VM")) return Run(settings, "scheduler", "unpin", with({{"vm_id", w[1]}}));
  // "ledger" is also a service: only these three words are verbs, the rest are its RPCs.
  if (w[0] == "ledger" && w.size() >= 2 && (w[1] == "checkpoint" || w[1] == "tail" || w[1] == "verify")) {
    if (w[1] == "checkpoint") {
      return Run(settings, "ledger", "get-checkpoint", o.fields, [&](const google::protobuf::Message& m) {
        if (!settings.Flag("output").empty()) return false;
        std::fputs(m.GetReflection()->GetString(m, m.GetDescriptor()->FindFieldByName("signed_note")).c_str(), stdout);
        return true;
      });
    }
    if (w[1] == "tail") return Run(settings, "ledger", "watch-entries", o.fields);
    return LedgerVerify(settings);
  }
  // The generated layer: SERVICE RPC [--field=value ...].
  if (w.size() < 2) {
    absl::StatusOr<const Command*> probe = Api::Get().Find(w[0], "");
    std::fprintf(stderr, "%s\n", std::string(probe.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<const Command*> cmd = Api::Get().Find(w[0], w[1]);
  if (!cmd.ok()) {
    std::fprintf(stderr, "%s\n", std::string(cmd.status().message()).c_str());
    return 2;
  }
  if (o.help) {
    std::fputs(RpcHelp(**cmd).c_str(), stdout);
    return 0;
  }
  return Run(settings, (*cmd)->service_command, (*cmd)->rpc_command, o.fields);
}

}  // namespace
}  // namespace ppn::ppnctl

int main(int argc, char** argv) { return ppn::ppnctl::Main(argc, argv); }
