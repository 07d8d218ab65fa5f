#include "host_agent/testing/fake_qemu.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"

namespace ppn::host::testing {
namespace {

std::string ArgAfter(const SpawnSpec& spec, const std::string& flag) {
  for (size_t i = 0; i + 1 < spec.argv.size(); ++i) {
    if (spec.argv[i] == flag) return spec.argv[i + 1];
  }
  return "";
}

RunResult Ok(std::string output = "") { return RunResult{0, false, std::move(output)}; }

// The value of `key=` in a comma-separated QEMU option string.
std::string OptionOf(const std::string& options, const std::string& key) {
  for (absl::string_view part : absl::StrSplit(options, ',')) {
    if (absl::StartsWith(part, key + "=")) return std::string(part.substr(key.size() + 1));
  }
  return "";
}

}  // namespace

// The guest's end of the identity channel: one connection at a time, on its own thread.
class FakeQemu::GuestChannel {
 public:
  GuestChannel(const std::string& path, bool speak, bool say_ready, std::function<void(std::string)> on_identity)
      : speak_(speak), say_ready_(say_ready), on_identity_(std::move(on_identity)) {
    unlink(path.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listen_fd_, 4);
    thread_ = std::thread([this] { Serve(); });
  }
  ~GuestChannel() {
    shutdown(listen_fd_, SHUT_RDWR);
    {
      absl::MutexLock l(&mu_);
      if (conn_ >= 0) shutdown(conn_, SHUT_RDWR);
      closing_ = true;
    }
    thread_.join();
    close(listen_fd_);
  }

 private:
  void Serve() {
    while (true) {
      int c = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      {
        absl::MutexLock l(&mu_);
        if (closing_) {
          close(c);
          return;
        }
        conn_ = c;
      }
      if (speak_) send(c, "PPN-IDENTITY-READY 1\n", 21, MSG_NOSIGNAL);
      if (say_ready_) send(c, "PPN-READY\n", 10, MSG_NOSIGNAL);
      std::string got;
      char buf[4096];
      ssize_t n;
      while ((n = read(c, buf, sizeof(buf))) > 0) {
        got.append(buf, static_cast<size_t>(n));
        if (absl::StrContains(got, "end\n")) {
          on_identity_(got);
          std::string host = got.substr(9, got.find('\n') - 9);  // "hostname NAME\n..."
          std::string ok = "PPN-IDENTITY-OK " + host + "\n";
          if (speak_) send(c, ok.data(), ok.size(), MSG_NOSIGNAL);
          got.clear();
        }
      }
      absl::MutexLock l(&mu_);
      conn_ = -1;
      close(c);
    }
  }

  const bool speak_;
  const bool say_ready_;
  const std::function<void(std::string)> on_identity_;
  int listen_fd_ = -1;
  std::thread thread_;
  absl::Mutex mu_;
  int conn_ ABSL_GUARDED_BY(mu_) = -1;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

FakeQemu::FakeQemu(ppn::testing::FakeProcessSpawner* spawner) : spawner_(spawner) {
  spawner_->OnSpawn("qemu-system-x86_64", [this](const SpawnSpec& spec, pid_t pid) { return Launch(spec, pid); });
  spawner_->OnRun("qemu-img", [this](const SpawnSpec& spec) -> absl::StatusOr<RunResult> {
    if (spec.argv.size() > 1 && spec.argv[1] == "info") {
      absl::MutexLock l(&mu_);
      return Ok(absl::StrCat("{\"virtual-size\": ", image_bytes_, "}"));
    }
    // create ... -F FORMAT PATH [SIZE]
    for (size_t i = 0; i + 2 < spec.argv.size(); ++i) {
      if (spec.argv[i] == "-F") WriteFileAtomically(spec.argv[i + 2], "QFI\xfb").IgnoreError();
    }
    return Ok();
  });
  spawner_->OnRun("genisoimage", [](const SpawnSpec& spec) -> absl::StatusOr<RunResult> {
    WriteFileAtomically(ArgAfter(spec, "-output"), "CD001").IgnoreError();
    return Ok();
  });
}

FakeQemu::~FakeQemu() {
  std::map<std::string, Vm> vms;
  {
    absl::MutexLock l(&mu_);
    vms.swap(vms_);
  }
  for (auto& [_, vm] : vms) {
    if (vm.qmp) vm.qmp->Close();
  }
}

absl::Status FakeQemu::Launch(const SpawnSpec& spec, pid_t pid) {
  std::string name = ArgAfter(spec, "-name");
  std::string vm_id = absl::StartsWith(name, "ppn-") ? name.substr(4) : name;
  std::string qmp_arg = ArgAfter(spec, "-qmp");  // unix:PATH,server=on,wait=off
  std::string socket = qmp_arg.substr(5, qmp_arg.find(',') - 5);
  std::function<void(const std::string&, pid_t)> on_exec;
  std::string fail;
  {
    absl::MutexLock l(&mu_);
    on_exec = on_exec_;
    fail.swap(fail_next_);
  }
  if (on_exec) on_exec(vm_id, pid);
  if (!fail.empty()) {
    WriteFileAtomically(spec.output_path, fail + "\n").IgnoreError();
    spawner_->Exit(pid);  // right after its exec, before it ever answers QMP
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<FakeQmpServer>> qmp = FakeQmpServer::Start(socket);
  if (!qmp.ok()) return qmp.status();
  std::shared_ptr<FakeQmpServer> server = *std::move(qmp);
  InstallHandlers(vm_id, server.get());
  std::shared_ptr<GuestChannel> channel;
  for (size_t i = 0; i + 1 < spec.argv.size(); ++i) {
    const std::string& a = spec.argv[i + 1];
    if (spec.argv[i] == "-chardev" && absl::StartsWith(a, "socket,id=identity0,")) {
      bool speak, say_ready;
      {
        absl::MutexLock l(&mu_);
        speak = speak_identity_;
        say_ready = say_ready_;
      }
      channel =
          std::make_shared<GuestChannel>(OptionOf(a, "path"), speak, say_ready, [this, vm_id](std::string identity) {
            absl::MutexLock l(&mu_);
            identities_[vm_id].push_back(std::move(identity));
          });
    }
    // A template being made: its RAM lands in the file.
    if (spec.argv[i] == "-object" && absl::StartsWith(a, "memory-backend-file,") && OptionOf(a, "share") == "on") {
      WriteFileAtomically(OptionOf(a, "mem-path"), "guest memory").IgnoreError();
    }
  }
  {
    absl::MutexLock l(&mu_);
    Vm& vm = vms_[vm_id];
    vm = Vm{};
    vm.pid = pid;
    vm.qmp = server;
    vm.channel = channel;
    vm.run_state = ArgAfter(spec, "-incoming").empty() ? "running" : "inmigrate";
  }
  spawner_->OnExit(pid, [this, vm_id, pid] {
    std::shared_ptr<FakeQmpServer> qmp;
    std::shared_ptr<GuestChannel> channel;
    {
      absl::MutexLock l(&mu_);
      auto it = vms_.find(vm_id);
      if (it == vms_.end() || it->second.pid != pid) return;
      qmp = it->second.qmp;
      channel.swap(it->second.channel);
      it->second.pid = 0;
    }
    qmp->Close();
    channel.reset();
  });
  return absl::OkStatus();
}

void FakeQemu::InstallHandlers(const std::string& vm_id, FakeQmpServer* qmp) {
  auto state = [this, vm_id](const std::function<nlohmann::json(Vm&)>& f) {
    absl::MutexLock l(&mu_);
    return f(vms_[vm_id]);
  };
  qmp->Handle("query-status", [state](const nlohmann::json&) {
    return state([](Vm& vm) {
      return FakeQmpServer::Return({{"status", vm.run_state}, {"running", vm.run_state == "running"}});
    });
  });
  qmp->Handle("cont", [state](const nlohmann::json&) {
    return state([](Vm& vm) {
      if (vm.run_state == "paused" || vm.run_state == "postmigrate") vm.run_state = "running";
      return FakeQmpServer::Return();
    });
  });
  qmp->Handle("stop", [state](const nlohmann::json&) {
    return state([](Vm& vm) {
      vm.run_state = "paused";
      return FakeQmpServer::Return();
    });
  });
  auto exit = [this, vm_id](const nlohmann::json&) {
    spawner_->Exit(Pid(vm_id));  // closes the QMP server once this reply is out
    return FakeQmpServer::Return();
  };
  qmp->Handle("quit", exit);
  qmp->Handle("system_powerdown", [this, vm_id, exit](const nlohmann::json& args) {
    // Only a running guest sees the ACPI button.
    return RunState(vm_id) == "running" ? exit(args) : FakeQmpServer::Return();
  });
  qmp->Handle("system_reset", [this, vm_id](const nlohmann::json&) {
    absl::MutexLock l(&mu_);
    ++resets_[vm_id];
    return FakeQmpServer::Return();
  });
  qmp->Handle("migrate", [state](const nlohmann::json&) {
    return state([](Vm& vm) {
      vm.migration = "active";
      vm.next = 0;
      return FakeQmpServer::Return();
    });
  });
  qmp->Handle("migrate_cancel", [state](const nlohmann::json&) {
    return state([](Vm& vm) {
      if (vm.migration == "active") vm.migration = "cancelled";
      return FakeQmpServer::Return();
    });
  });
  qmp->Handle("query-migrate",
              [this, vm_id](const nlohmann::json&) { return FakeQmpServer::Return(QueryMigrate(vm_id)); });
  // A template's device state loads at once (an ordinary incoming migration waits for the test).
  qmp->Handle("migrate-incoming", [state](const nlohmann::json& args) {
    return state([&](Vm& vm) {
      if (vm.run_state == "inmigrate" && args.value("uri", "") == "fd:ppn-template") vm.run_state = "paused";
      return FakeQmpServer::Return();
    });
  });
  qmp->Handle("balloon", [state](const nlohmann::json& args) {
    return state([&](Vm& vm) {
      vm.balloon_bytes = args.value("value", uint64_t{0});
      return FakeQmpServer::Return();
    });
  });
  qmp->Handle("query-balloon", [state](const nlohmann::json&) {
    return state([](Vm& vm) { return FakeQmpServer::Return({{"actual", vm.balloon_bytes}}); });
  });
}

nlohmann::json FakeQemu::QueryMigrate(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  Vm& vm = vms_[vm_id];
  if (vm.run_state == "inmigrate" || vm.migration.empty()) {
    return vm.migration.empty() ? nlohmann::json::object() : nlohmann::json{{"status", vm.migration}};
  }
  if (vm.migration != "active") return {{"status", vm.migration}};
  std::vector<nlohmann::json> script = vm.script;
  if (script.empty()) {
    script = {{{"status", "active"}, {"ram", {{"transferred", 1000}, {"remaining", 9000}, {"total", 10000}}}},
              {{"status", "completed"}, {"ram", {{"transferred", 10000}}}, {"total-time", 1200}, {"downtime", 30}}};
  }
  nlohmann::json answer = script[std::min(vm.next, script.size() - 1)];
  ++vm.next;
  std::string status = answer.value("status", "");
  if (status == "completed") {
    vm.migration = status;
    vm.run_state = "postmigrate";
  } else if (status == "failed" || status == "cancelled") {
    vm.migration = status;
  }
  return answer;
}

pid_t FakeQemu::Pid(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  auto it = vms_.find(vm_id);
  return it == vms_.end() ? 0 : it->second.pid;
}

int FakeQemu::CountAlive(const std::string& vm_id) { return spawner_->CountAlive("ppn-" + vm_id + " "); }

FakeQmpServer* FakeQemu::Qmp(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  auto it = vms_.find(vm_id);
  return it == vms_.end() || it->second.pid == 0 ? nullptr : it->second.qmp.get();
}

void FakeQemu::FailNextStart(const std::string& why) {
  absl::MutexLock l(&mu_);
  fail_next_ = why;
}

void FakeQemu::OnExec(std::function<void(const std::string&, pid_t)> hook) {
  absl::MutexLock l(&mu_);
  on_exec_ = std::move(hook);
}

void FakeQemu::set_image_bytes(uint64_t bytes) {
  absl::MutexLock l(&mu_);
  image_bytes_ = bytes;
}

void FakeQemu::SetRunState(const std::string& vm_id, const std::string& state) {
  absl::MutexLock l(&mu_);
  vms_[vm_id].run_state = state;
}

std::string FakeQemu::RunState(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  return vms_[vm_id].run_state;
}

void FakeQemu::ScriptMigration(const std::string& vm_id, std::vector<nlohmann::json> answers) {
  absl::MutexLock l(&mu_);
  vms_[vm_id].script = std::move(answers);
}

void FakeQemu::IncomingConnected(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  vms_[vm_id].migration = "active";
}

void FakeQemu::SetMigrationStatus(const std::string& vm_id, const std::string& status) {
  absl::MutexLock l(&mu_);
  vms_[vm_id].migration = status;
  vms_[vm_id].next = 0;
}

void FakeQemu::set_guests_speak_identity(bool on) {
  absl::MutexLock l(&mu_);
  speak_identity_ = on;
}

std::vector<std::string> FakeQemu::IdentitiesOf(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  return identities_[vm_id];
}

void FakeQemu::IncomingCompleted(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  vms_[vm_id].migration = "completed";
  vms_[vm_id].run_state = "running";
}

}  // namespace ppn::host::testing
