#include "host_agent/vm_manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "google/protobuf/util/message_differencer.h"
#include "host_agent/adoption.h"
#include "host_agent/node_capacity.h"
#include "host_agent/node_probe.h"
#include "spdlog/spdlog.h"

namespace ppn::host {
namespace {

using ppn::host::v1::VmInstance;
using ppn::types::v1::VmSpec;
using ppn::types::v1::VmState;

constexpr absl::Duration kQmpTimeout = absl::Seconds(10);

bool IsLive(VmState s) {
  return s == ppn::types::v1::VM_STATE_RUNNING || s == ppn::types::v1::VM_STATE_STARTING ||
         s == ppn::types::v1::VM_STATE_MIGRATING || s == ppn::types::v1::VM_STATE_STOPPING ||
         s == ppn::types::v1::VM_STATE_PENDING;
}

std::vector<uint32_t> PortsOf(const StoredVm& vm) {
  std::vector<uint32_t> ports;
  for (const auto& p : vm.instance.forwarded_ports()) ports.push_back(p.host_port());
  if (vm.migration_port != 0) ports.push_back(vm.migration_port);
  return ports;
}

bool SameSpec(VmSpec a, VmSpec b) {
  a.clear_user_data();  // never stored
  b.clear_user_data();
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

std::vector<PrivateNic> PrivateNicsOf(const VmInstance& vm) {
  std::vector<PrivateNic> out;
  for (const auto& n : vm.private_nics()) out.push_back({n.network_id(), n.address(), n.prefix_length(), n.mac()});
  return out;
}

// A spawn's NICs: one per network the spec names, in its order, well-formed.
absl::Status CheckPrivateNics(const VmSpec& spec,
                              const google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>& nics) {
  bool match = nics.size() == spec.networks_size();
  for (int i = 0; match && i < nics.size(); ++i) match = nics[i].network_id() == spec.networks(i);
  if (!match) return absl::InvalidArgumentError("private_nics must hold one NIC per spec.networks entry, in order");
  std::vector<PrivateNic> out;
  for (const auto& n : nics) out.push_back({n.network_id(), n.address(), n.prefix_length(), n.mac()});
  return ValidatePrivateNics(out);
}

VmManager::Options Normalized(VmManager::Options o) {
  // QEMU command lines name the state directory: one spelling, so a restart recognises them.
  o.state_dir = std::filesystem::absolute(o.state_dir).lexically_normal().string();
  while (o.state_dir.size() > 1 && o.state_dir.back() == '/') o.state_dir.pop_back();
  return o;
}

EgressPolicy PolicyOf(const ppn::types::v1::EgressPolicy& p) {
  auto rules = [](const google::protobuf::RepeatedPtrField<ppn::types::v1::EgressRule>& in) {
    std::vector<EgressRule> out;
    for (const auto& r : in) {
      out.push_back({r.cidr(), r.port_first(), r.port_last() == 0 ? r.port_first() : r.port_last(),
                     r.protocol() == ppn::types::v1::PROTOCOL_UDP});
    }
    return out;
  };
  EgressPolicy out;
  out.internet = p.internet() != ppn::types::v1::INTERNET_ACCESS_DENIED;
  out.allow = rules(p.allow());
  out.deny = rules(p.deny());
  out.rate_limit_kbit = p.rate_limit_kbit();
  return out;
}

std::vector<PortForwardRule> ForwardRules(const VmInstance& vm) {
  std::vector<PortForwardRule> rules;
  for (const auto& p : vm.forwarded_ports())
    rules.push_back({p.host_port(), p.protocol() == ppn::types::v1::PROTOCOL_UDP});
  return rules;
}

// A guest hostname from a display name: letters, digits, dots and dashes, at most 63.
std::string HostnameOf(const VmSpec& spec, const std::string& vm_id) {
  std::string out;
  for (char c : spec.display_name().empty() ? vm_id : spec.display_name()) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') out.push_back(c);
  }
  if (out.empty()) out = vm_id;
  return out.substr(0, 63);
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

std::optional<RunAs> OwnerOf(const std::string& user) {
  if (user.empty()) return std::nullopt;
  absl::StatusOr<RunAs> r = LookupUser(user);
  return r.ok() ? std::optional<RunAs>(*std::move(r)) : std::nullopt;
}

}  // namespace

VmManager::VmManager(Options options, ImageCatalog catalog, Deps deps)
    : options_(Normalized(std::move(options))),
      catalog_(std::move(catalog)),
      store_(deps.store),
      clock_(deps.clock),
      spawner_(deps.spawner),
      qemu_user_(ResolveQemuUser(options_.qemu_user)),
      qemu_owner_(OwnerOf(qemu_user_)),
      network_(deps.network),
      node_status_(std::move(deps.node_status)),
      runtime_(spawner_, {options_.state_dir + "/vms", options_.qemu_binary, qemu_user_, qemu_owner_,
                          options_.hold_after_exec_for_test,
                          options_.migration_tls.cert.empty() ? "" : options_.state_dir + "/qemu-tls"}),
      ports_(options_.host_address, options_.port_first, options_.port_last, /*hold_sockets=*/network_ != nullptr),
      templates_(options_.state_dir + "/templates"),
      balloons_(options_.balloon_policy) {}

VmManager::~VmManager() {
  gate_.reset();  // no hand-off may run into a manager being destroyed
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    stop_cv_.SignalAll();
  }
  if (monitor_.joinable()) monitor_.join();
  if (readiness_.joinable()) readiness_.join();
  if (balloon_thread_.joinable()) balloon_thread_.join();
  if (template_maker_.joinable()) template_maker_.join();
  std::vector<std::thread> builds;
  {
    absl::MutexLock l(&mu_);
    builds.swap(template_threads_);
  }
  for (std::thread& t : builds) t.join();
}

ppn::types::v1::KvmSupport VmManager::kvm_support() const {
  if (options_.kvm_mode == KvmMode::kSimulate) return ppn::types::v1::KVM_SUPPORT_SIMULATED;
  return kvm_usable_ ? ppn::types::v1::KVM_SUPPORT_AVAILABLE : ppn::types::v1::KVM_SUPPORT_NONE;
}

absl::Status VmManager::NotHere(const std::string& vm_id) const {
  return absl::NotFoundError(absl::StrCat("vm ", vm_id, " is not on node ", options_.node_id));
}

absl::Status VmManager::Start() {
  std::error_code ec;
  std::filesystem::create_directories(runtime_.files().vms_dir(), ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", runtime_.files().vms_dir(), ": ", ec.message()));
  }
  if (qemu_owner_) PPN_RETURN_IF_ERROR(CheckQemuUserAccess(spawner_, *qemu_owner_, runtime_.files().vms_dir()));
  PPN_RETURN_IF_ERROR(WriteMigrationCredentials());
  ProbeNode();
  gate_ = std::make_unique<IncomingGate>([this](const std::string& vm_id, int fd) { StartIncoming(vm_id, fd); });
  PPN_RETURN_IF_ERROR(Adopt());
  // Adoption has killed any template boot a dead agent left; its build directory goes too.
  templates_.SweepBuilds();
  SpawnSpec version;
  version.argv = {options_.qemu_binary, "--version"};
  absl::StatusOr<RunResult> v = spawner_->Run(version, absl::Seconds(10));
  qemu_version_ = v.ok() ? std::string(absl::StripAsciiWhitespace(v->output.substr(0, v->output.find('\n')))) : "";
  monitor_ = std::thread([this] { MonitorLoop(); });
  readiness_ = std::thread([this] { ReadinessLoop(); });
  if (options_.balloon_interval > absl::ZeroDuration()) balloon_thread_ = std::thread([this] { BalloonLoop(); });
  if (options_.templates && !options_.template_images.empty()) {
    template_maker_ = std::thread([this] { MakeTemplatesAhead(); });
  }
  return absl::OkStatus();
}

void VmManager::MakeTemplatesAhead() {
  std::vector<std::string> wanted;
  for (const std::string& w : options_.template_images) {
    if (w != "all") {
      wanted.push_back(w);
      continue;
    }
    for (const std::string& name : catalog_.Names()) wanted.push_back(name);
  }
  for (const std::string& w : wanted) {
    {
      absl::MutexLock l(&mu_);
      if (stopping_) return;
    }
    std::vector<std::string> parts = absl::StrSplit(w, absl::MaxSplits('@', 1));
    uint32_t vcpus = 1, memory_mib = 128;
    if (parts.size() == 2) {
      std::vector<std::string> shape = absl::StrSplit(parts[1], 'x');
      if (shape.size() != 2 || !absl::SimpleAtoi(shape[0], &vcpus) || !absl::SimpleAtoi(shape[1], &memory_mib)) {
        spdlog::error("template.bad_shape want={} (IMAGE@VCPUSxMIB)", LogValue(w));
        continue;
      }
    }
    absl::StatusOr<Template> t = EnsureTemplate(parts[0], vcpus, memory_mib);
    if (!t.ok())
      spdlog::warn("template.not_made image={} error={}", LogValue(parts[0]), LogValue(t.status().message()));
  }
}

absl::StatusOr<Template> VmManager::EnsureTemplate(const std::string& image_name, uint32_t vcpus, uint32_t memory_mib) {
  PPN_ASSIGN_OR_RETURN(Image image, catalog_.Find(image_name));
  VmSpec spec;
  spec.set_image(image_name);
  spec.set_vcpus(vcpus);
  spec.set_memory_mib(memory_mib);
  return TemplateFor(image, spec, kvm_usable_ && options_.kvm_mode == KvmMode::kAuto, /*wait=*/true);
}

TemplateParams VmManager::TemplateParamsFor(const Image& image, const VmSpec& spec, bool kvm) const {
  TemplateParams p;
  p.image = image;
  p.vcpus = spec.vcpus();
  p.memory_mib = spec.memory_mib();
  p.disk_gib = spec.disk_gib();
  p.kvm = kvm;
  p.qemu_version = qemu_version_;
  // The devices are what the launcher would give this VM: a change there is a new template.
  LaunchSpec shape;
  shape.vm_id = "template";
  shape.vm_dir = "/template";
  shape.vcpus = p.vcpus;
  shape.memory_mib = p.memory_mib;
  shape.kvm = kvm;
  shape.image = image;
  std::vector<std::string> argv = BuildQemuArgs(shape);
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == "-machine" || argv[i] == "-device" || argv[i] == "-cpu") p.devices.push_back(argv[i + 1]);
  }
  return p;
}

absl::StatusOr<Template> VmManager::TemplateFor(const Image& image, const VmSpec& spec, bool kvm, bool wait) {
  TemplateParams params = TemplateParamsFor(image, spec, kvm);
  absl::StatusOr<std::string> key = TemplateKey(params, templates_.digests());
  if (!key.ok()) return absl::FailedPreconditionError(absl::StrCat("no template key: ", key.status().message()));
  absl::StatusOr<Template> found = templates_.Find(*key);
  if (found.ok()) return found;
  if (found.status().code() == absl::StatusCode::kDataLoss) {
    spdlog::warn("template.damaged key={} image={} error={}", *key, LogValue(image.name),
                 LogValue(found.status().message()));
  }
  auto make = [this, params, key = *key]() -> absl::StatusOr<Template> {
    absl::StatusOr<Template> made = MakeTemplate(params, key);
    absl::MutexLock l(&mu_);
    templates_making_.erase(key);
    if (made.ok()) {
      template_failures_.erase(key);
    } else {
      template_failures_[key] = {params.image.name, std::string(made.status().message()),
                                 clock_->Now() + options_.template_retry_interval};
    }
    return made;
  };
  {
    absl::MutexLock l(&mu_);
    auto it = template_failures_.find(*key);
    if (it != template_failures_.end() && clock_->Now() < it->second.retry_after) {
      return absl::FailedPreconditionError(it->second.why);
    }
    if (!wait) {
      if (templates_making_.insert(*key).second && !stopping_) {
        template_threads_.emplace_back([make] { make().IgnoreError(); });
      }
      return absl::UnavailableError(found.status().code() == absl::StatusCode::kDataLoss
                                        ? absl::StrCat(found.status().message(), "; it is being made again")
                                        : std::string("it is being made"));
    }
    templates_making_.insert(*key);
  }
  return make();
}

absl::StatusOr<Template> VmManager::MakeTemplate(const TemplateParams& params, const std::string& key) {
  absl::MutexLock one(&template_mu_);
  if (absl::StatusOr<Template> t = templates_.Find(key); t.ok()) return t;  // made meanwhile
  absl::Time t0 = absl::Now();
  PPN_ASSIGN_OR_RETURN(std::string build, templates_.NewBuildDir(key));
  // A VM id of its own: a restarted agent finds no record of it and kills it.
  std::string id = "template-" + key.substr(0, 12);
  VmSpec spec;
  spec.set_display_name("ppn-template");
  spec.set_image(params.image.name);
  spec.set_vcpus(params.vcpus);
  spec.set_memory_mib(params.memory_mib);
  spec.set_disk_gib(params.disk_gib);
  VmRuntime::Launch launch{id, spec, params.image, {}, params.kvm, false, ""};
  launch.memory_file = build + "/memory";
  launch.memory_shared = true;
  launch.restrict_network = true;  // the template's guest reaches nothing while it boots
  std::shared_ptr<Process> process;
  absl::StatusOr<Template> made = [&]() -> absl::StatusOr<Template> {
    PPN_RETURN_IF_ERROR(runtime_.Start(launch, &process));
    std::string dir = runtime_.files().Dir(id);
    Fd channel;
    PPN_ASSIGN_OR_RETURN(channel.fd, ConnectIdentityChannel(IdentitySocketPath(dir), absl::Seconds(10)));
    // In slices, so that an agent shutting down does not wait for a slow guest.
    absl::Time deadline = absl::Now() + options_.template_ready_timeout;
    absl::Status ready;
    do {
      {
        absl::MutexLock l(&mu_);
        if (stopping_) return absl::CancelledError("the agent is stopping");
      }
      ready = WaitForChannelLine(
          channel.fd, "PPN-IDENTITY-READY",
          std::min(absl::Milliseconds(500), std::max(deadline - absl::Now(), absl::Milliseconds(1))));
    } while (ready.code() == absl::StatusCode::kDeadlineExceeded && absl::Now() < deadline);
    if (!ready.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the guest of image ", params.image.name, " never said it was ready: ", ready.message()));
    }
    PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, runtime_.Connect(id, process.get(), kQmpTimeout));
    Fd state;
    state.fd = open((build + "/state").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (state.fd < 0) return absl::InternalError(absl::StrCat("cannot create ", build, "/state"));
    PPN_RETURN_IF_ERROR(SaveTemplateState(qmp.get(), state.fd, absl::Seconds(60)));
    if (fsync(state.fd) != 0) return absl::InternalError("cannot sync the template state");
    qmp->Execute("quit").IgnoreError();
    if (!process->WaitForExit(absl::Seconds(10))) return absl::InternalError("the template's QEMU did not quit");
    // The disk and seed the saved guest had open are every clone's backing files: root's, read-only.
    for (const auto& [from, to] :
         {std::pair{DiskPath(dir), build + "/disk.qcow2"}, {SeedPath(dir), build + "/seed.iso"}}) {
      if (rename(from.c_str(), to.c_str()) != 0) return absl::InternalError(absl::StrCat("cannot move ", from));
      if (chown(to.c_str(), geteuid(), getegid()) != 0 || chmod(to.c_str(), 0644) != 0) {
        return absl::InternalError(absl::StrCat("cannot take back ", to));
      }
    }
    chmod((build + "/memory").c_str(), 0600);  // QEMU maps it before it drops to its user
    return templates_.Install(build, key, params.image.name);
  }();
  runtime_.Discard(id, process.get()).IgnoreError();
  if (!made.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(build, ec);
    spdlog::warn("template.failed key={} image={} error={}", key, LogValue(params.image.name),
                 LogValue(made.status().message()));
    return made;
  }
  spdlog::info("template.made key={} image={} vcpus={} memory_mib={} ms={}", key, LogValue(params.image.name),
               params.vcpus, params.memory_mib, absl::ToInt64Milliseconds(absl::Now() - t0));
  return made;
}

absl::Status VmManager::Restore(const CreateRequest& r, VmRuntime::Launch launch, const Template& t,
                                std::shared_ptr<Process>* process) {
  launch.memory_file = t.memory_path();
  launch.memory_shared = false;  // copy-on-write: the template never changes
  launch.clone_disk = t.disk_path();
  launch.seed_path = t.seed_path();
  launch.vmgenid = NewVmGenerationId();
  launch.incoming = true;
  if (launch.vmgenid.empty()) return absl::InternalError("no randomness for a VM generation id");
  PPN_ASSIGN_OR_RETURN(GuestIdentity identity, NewIdentity(HostnameOf(r.spec, r.vm_id), r.spec.user_data()));
  absl::Time t0 = absl::Now();
  PPN_RETURN_IF_ERROR(runtime_.Start(launch, process));
  Fd channel;
  PPN_ASSIGN_OR_RETURN(channel.fd,
                       ConnectIdentityChannel(IdentitySocketPath(runtime_.files().Dir(r.vm_id)), absl::Seconds(10)));
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, runtime_.Connect(r.vm_id, process->get(), kQmpTimeout));
  Fd state;
  state.fd = open(t.state_path().c_str(), O_RDONLY | O_CLOEXEC);
  if (state.fd < 0) return absl::DataLossError(absl::StrCat("template ", t.key, " has no state file"));
  absl::Time started = absl::Now();
  PPN_RETURN_IF_ERROR(LoadTemplateState(qmp.get(), state.fd, absl::Seconds(30)));
  absl::Time loaded = absl::Now();
  // Written before the guest runs: its first read after the restore finds it.
  PPN_RETURN_IF_ERROR(WriteChannel(channel.fd, EncodeIdentity(identity)));
  PPN_RETURN_IF_ERROR(qmp->Execute("cont").status());
  // The guest answers with the hostname it applied: one that differs was garbled on the way,
  // and the identity goes again.
  const std::string taken_line = "PPN-IDENTITY-OK " + identity.hostname;
  for (int attempt = 1;; ++attempt) {
    std::string line;
    absl::Status taken = WaitForChannelLine(channel.fd, "PPN-IDENTITY-OK", options_.identity_timeout, &line);
    if (!taken.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("the clone did not take its identity: ", taken.message()));
    }
    if (line == taken_line) break;
    if (attempt == 3) return absl::FailedPreconditionError("the clone took a garbled identity three times");
    spdlog::warn("vm.identity_garbled vm={} attempt={}", LogValue(r.vm_id), attempt);
    PPN_RETURN_IF_ERROR(WriteChannel(channel.fd, EncodeIdentity(identity)));
  }
  spdlog::info("vm.restored vm={} template={} start_ms={} load_ms={} identity_ms={}", LogValue(r.vm_id), t.key,
               absl::ToInt64Milliseconds(started - t0), absl::ToInt64Milliseconds(loaded - started),
               absl::ToInt64Milliseconds(absl::Now() - loaded));
  return absl::OkStatus();
}

absl::Status VmManager::WriteMigrationCredentials() {
  const Options::MigrationTls& tls = options_.migration_tls;
  if (tls.cert.empty()) return absl::OkStatus();
  std::string dir = options_.state_dir + "/qemu-tls";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  chmod(dir.c_str(), 0700);  // root's alone: QEMU reads it before it drops to its user
  PPN_ASSIGN_OR_RETURN(std::string ca, ReadFile(tls.ca));
  PPN_ASSIGN_OR_RETURN(std::string cert, ReadFile(tls.cert));
  PPN_ASSIGN_OR_RETURN(std::string key, ReadFile(tls.key));
  for (const auto& [name, data, mode] :
       std::vector<std::tuple<const char*, const std::string*, mode_t>>{{"ca-cert.pem", &ca, 0644},
                                                                        {"server-cert.pem", &cert, 0644},
                                                                        {"client-cert.pem", &cert, 0644},
                                                                        {"server-key.pem", &key, 0600},
                                                                        {"client-key.pem", &key, 0600}}) {
    PPN_RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/", name), *data, mode));
  }
  return absl::OkStatus();
}

void VmManager::ProbeNode() {
  absl::StatusOr<Image> image = catalog_.Find(options_.kvm_probe_image);
  NodeFeatures f = ProbeNodeFeatures(
      spawner_, {options_.node_id, options_.kvm_mode, options_.qemu_binary, image.ok() ? &*image : nullptr,
                 options_.state_dir, options_.kvm_probe_timeout, options_.use_cgroups});
  kvm_usable_ = f.kvm_usable;
  capabilities_.set_cgroup_v2(!f.cgroup_root.empty());
  if (f.cgroup_root.empty()) cgroup_reason_ = f.cgroup_reason.empty() ? "no cgroup v2" : f.cgroup_reason;
  capabilities_.set_seccomp_sandbox(f.seccomp);
  capabilities_.set_unprivileged_qemu(!qemu_user_.empty() || geteuid() != 0);
  capabilities_.set_balloon(true);
  runtime_.SetNodeFeatures(f.cgroup_root, f.seccomp);
  spdlog::info("node.probed node={} kvm={} kvm_reason={} cgroup_v2={} cgroup_reason={} seccomp={} qemu_user={}",
               options_.node_id, kvm_usable_, LogValue(f.kvm_reason), capabilities_.cgroup_v2(),
               LogValue(f.cgroup_reason), f.seccomp, qemu_user_.empty() ? "(agent's)" : qemu_user_);
}

absl::Status VmManager::Adopt() {
  PPN_ASSIGN_OR_RETURN(std::vector<AdoptedVm> adopted, AdoptAtStart(store_, &runtime_));
  for (AdoptedVm& vm : adopted) {
    auto e = std::make_shared<Entry>();
    e->rec = std::move(vm.rec);
    e->process = std::move(vm.process);
    if (vm.incoming) e->ready_deadline = clock_->Now() + options_.default_ready_timeout;
    const VmSpec& spec = e->rec.instance.spec();
    absl::StatusOr<Image> image = catalog_.Find(spec.image());
    if (image.ok()) e->disk_virtual_bytes = runtime_.files().DiskVirtualBytes(*image, spec).value_or(0);
    absl::MutexLock l(&mu_);
    // A stopped VM keeps its forwarded ports for its next start.
    if (e->process != nullptr || e->rec.instance.state() == ppn::types::v1::VM_STATE_STOPPED) {
      ports_.Reserve(PortsOf(e->rec));
      e->ports_held = true;
    }
    PPN_RETURN_IF_ERROR(PersistLocked(e.get()));
    vms_[e->rec.instance.vm_id()] = e;
    // A guest still booting when the last agent stopped: watched again (one that said
    // PPN-READY while no agent listened is found by its port or the boot timeout).
    if (e->process != nullptr && e->rec.instance.state() == ppn::types::v1::VM_STATE_STARTING) WatchStartingLocked(e);
  }
  // A target still waiting for its stream waited on a listener that died with the last agent:
  // nothing can reach it now; the scheduler's retry prepares a new one.
  std::vector<std::shared_ptr<Entry>> waiting;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [_, e] : vms_) {
      if (e->rec.migration_port != 0) waiting.push_back(e);
    }
  }
  for (const auto& e : waiting) {
    absl::MutexLock op(&e->op);
    std::shared_ptr<Process> process;
    std::string vm_id;
    {
      absl::MutexLock l(&mu_);
      process = e->process;
      vm_id = e->rec.instance.vm_id();
    }
    absl::StatusOr<std::unique_ptr<QmpClient>> qmp = runtime_.Connect(vm_id, process.get(), absl::Seconds(2));
    absl::StatusOr<IncomingState> state = qmp.ok() ? QueryIncoming(qmp->get()) : qmp.status();
    if (state.ok() && *state == IncomingState::kWaiting) {
      Remove(e.get(), "its agent restarted before the migration stream arrived").IgnoreError();
    }
  }
  if (network_ == nullptr) return absl::OkStatus();
  // The networks of the VMs that run on; everything else of this node's goes (a crash left it).
  std::map<std::string, std::vector<PortForwardRule>> live;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [id, e] : vms_) {
      if (e->process == nullptr) continue;
      std::vector<PortForwardRule>& rules = live[id];
      for (const auto& p : e->rec.instance.forwarded_ports()) {
        rules.push_back({p.host_port(), p.protocol() == ppn::types::v1::PROTOCOL_UDP});
      }
    }
  }
  std::vector<std::string> removed;
  PPN_ASSIGN_OR_RETURN(auto links, network_->StartNode(live, &removed));
  std::map<std::string, std::set<std::string>> private_live;  // network → its VMs here
  {
    absl::MutexLock l(&mu_);
    for (const auto& [id, e] : vms_) {
      if (e->process == nullptr || links.count(id) == 0) continue;
      for (const auto& n : e->rec.instance.private_nics()) private_live[n.network_id()].insert(id);
    }
  }
  for (const std::string& name : network_->private_networks().Sweep(private_live)) removed.push_back(name);
  std::vector<PrivateNic> tunnelled;  // one per network still used here: its tunnel is taken over
  {
    std::set<std::string> seen;
    absl::MutexLock l(&mu_);
    for (const auto& [id, e] : vms_) {
      if (e->process == nullptr || links.count(id) == 0) continue;
      for (const PrivateNic& n : PrivateNicsOf(e->rec.instance)) {
        if (seen.insert(n.network_id).second) tunnelled.push_back(n);
      }
    }
  }
  MakeTunnels(tunnelled);
  for (const std::string& name : removed) spdlog::info("vm.network_removed name={} reason=\"no such VM\"", name);
  absl::MutexLock l(&mu_);
  for (const auto& [id, e] : vms_) {
    auto it = links.find(id);
    if (it != links.end()) e->link = it->second;
    if (it == links.end() && e->process != nullptr) {
      spdlog::error("vm.network_missing vm={}: its QEMU runs but its namespace is gone", LogValue(id));
    }
  }
  return absl::OkStatus();
}

absl::Status VmManager::PersistLocked(Entry* e) {
  ++version_;  // every change of a record is persisted: heartbeats follow them
  changed_cv_.SignalAll();
  return store_->Put(e->rec);
}

uint64_t VmManager::version() {
  absl::MutexLock l(&mu_);
  return version_;
}

uint64_t VmManager::WaitForChange(uint64_t version, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  absl::Time deadline = absl::Now() + timeout;
  while (version_ == version && !stopping_ && absl::Now() < deadline) {
    changed_cv_.WaitWithDeadline(&mu_, deadline);
  }
  return version_;
}

void VmManager::WatchStartingLocked(const std::shared_ptr<Entry>& e) {
  const VmInstance& vm = e->rec.instance;
  GuestReadiness::Target target;
  target.channel_socket = IdentitySocketPath(runtime_.files().Dir(vm.vm_id()));
  if (absl::StatusOr<Image> image = catalog_.Find(vm.spec().image()); image.ok() && !image->ready_marker.empty()) {
    target.console_log = ConsoleLogPath(runtime_.files().Dir(vm.vm_id()));
    target.console_marker = image->ready_marker;
  }
  for (const auto& p : vm.forwarded_ports()) {
    if (p.protocol() == ppn::types::v1::PROTOCOL_UDP) continue;
    target.probe_host = p.host_address();
    target.probe_port = p.host_port();
    break;
  }
  absl::Time since = clock_->Now();
  if (IsValidTimestamp(vm.start_time())) {
    since = absl::FromUnixSeconds(vm.start_time().seconds()) + absl::Nanoseconds(vm.start_time().nanos());
  }
  starting_[vm.vm_id()] = Starting{e, std::make_shared<GuestReadiness>(std::move(target)), since};
}

void VmManager::MarkReadyLocked(Entry* e, absl::Time ready, const std::string& why, const std::string& state_message) {
  VmInstance& vm = e->rec.instance;
  absl::Time started = ready;
  if (IsValidTimestamp(vm.start_time())) {
    started = absl::FromUnixSeconds(vm.start_time().seconds()) + absl::Nanoseconds(vm.start_time().nanos());
  }
  vm.set_state(ppn::types::v1::VM_STATE_RUNNING);
  if (!state_message.empty()) vm.set_state_message(state_message);
  *vm.mutable_ready_time() = ToProtoTimestamp(ready);
  *vm.mutable_boot_duration() = ToProtoDuration(std::max(ready - started, absl::ZeroDuration()));
  absl::Status s = PersistLocked(e);
  if (!s.ok()) spdlog::error("vm.store_failed vm={} error={}", LogValue(vm.vm_id()), LogValue(s.message()));
  spdlog::info("vm.ready vm={} tenant={} how={} boot_ms={}", LogValue(vm.vm_id()), LogValue(vm.tenant_id()),
               LogValue(why), absl::ToInt64Milliseconds(ready - started));
}

void VmManager::ReadinessLoop() {
  absl::MutexLock l(&mu_);
  while (!stopping_) {
    stop_cv_.WaitWithTimeout(&mu_, options_.readiness_interval);
    if (stopping_) break;
    std::vector<std::pair<std::string, Starting>> todo(starting_.begin(), starting_.end());
    mu_.Unlock();
    std::vector<std::pair<std::string, std::string>> ready;  // vm → why
    for (auto& [id, s] : todo) {
      if (std::optional<std::string> why = s.watch->Poll(absl::Now())) ready.emplace_back(id, *why);
    }
    mu_.Lock();
    const absl::Time now = clock_->Now();
    for (const auto& [id, why] : ready) {
      auto it = starting_.find(id);
      if (it == starting_.end()) continue;
      auto vm = vms_.find(id);
      if (vm != vms_.end() && vm->second == it->second.e &&
          it->second.e->rec.instance.state() == ppn::types::v1::VM_STATE_STARTING) {
        MarkReadyLocked(it->second.e.get(), now, why, "");
      }
    }
    for (auto it = starting_.begin(); it != starting_.end();) {
      auto vm = vms_.find(it->first);
      bool current = vm != vms_.end() && vm->second == it->second.e &&
                     it->second.e->rec.instance.state() == ppn::types::v1::VM_STATE_STARTING;
      if (current && now - it->second.since > options_.boot_timeout) {
        MarkReadyLocked(it->second.e.get(), now, "boot timeout",
                        absl::StrCat("the guest gave no sign of being ready within ",
                                     absl::FormatDuration(options_.boot_timeout), " (docs/guest-channel.md)"));
        current = false;
      }
      it = current ? std::next(it) : starting_.erase(it);
    }
  }
}

void VmManager::ReleasePortsLocked(Entry* e) {
  if (e->ports_held) ports_.Release(PortsOf(e->rec));
  e->ports_held = false;
}

uint64_t VmManager::TotalMib() const {
  return options_.advertised_memory_mib != 0 ? options_.advertised_memory_mib : ReadMemoryInfo().total_mib;
}

uint64_t VmManager::CommittedMibLocked() const {
  uint64_t sum = 0;
  for (const auto& [_, e] : vms_) {
    // A FAILED VM whose QEMU still runs (one that stopped answering QMP) still holds its memory.
    // A VM that can grow (virtio-mem) holds its maximum: ResizeVm never finds the node full.
    const VmSpec& spec = e->rec.instance.spec();
    if (IsLive(e->rec.instance.state()) || e->process != nullptr)
      sum += std::max(spec.memory_mib(), spec.max_memory_mib());
  }
  return sum;
}

uint64_t VmManager::DiskAvailableMibLocked() const {
  std::vector<OverlayUse> overlays;
  for (const auto& [id, e] : vms_) {
    uint64_t allocated = runtime_.files().DiskAllocatedBytes(id);
    // Only a running QEMU can grow its overlay; a dead one holds what it has.
    overlays.push_back({IsLive(e->rec.instance.state()) ? e->disk_virtual_bytes : allocated, allocated});
  }
  return DiskAvailableMib(ReadDiskSpace(options_.state_dir), options_.advertised_disk_mib, overlays);
}

std::shared_ptr<VmManager::Entry> VmManager::Find(const std::string& vm_id) {
  absl::MutexLock l(&mu_);
  auto it = vms_.find(vm_id);
  return it == vms_.end() ? nullptr : it->second;
}

absl::StatusOr<VmInstance> VmManager::Spawn(
    const VmId& vm_id, const TenantId& tenant, const VmSpec& spec,
    const google::protobuf::RepeatedPtrField<ppn::types::v1::PrivateNic>& private_nics) {
  CreateRequest r{vm_id.value(),
                  tenant.value(),
                  spec,
                  /*incoming=*/false,
                  kvm_usable_ && options_.kvm_mode == KvmMode::kAuto,
                  absl::ZeroDuration(),
                  "",
                  private_nics};
  PPN_ASSIGN_OR_RETURN(Created created, Create(r));
  return created.vm;
}

absl::StatusOr<VmManager::Created> VmManager::Create(const CreateRequest& r) {
  absl::Time t0 = absl::Now();
  PPN_RETURN_IF_ERROR(ValidateVmId(r.vm_id));
  PPN_RETURN_IF_ERROR(ValidateTenantId(r.tenant_id));
  PPN_RETURN_IF_ERROR(ValidateVmSpec(r.spec));
  PPN_RETURN_IF_ERROR(CheckPrivateNics(r.spec, r.private_nics));
  if (!r.private_nics.empty() && network_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", options_.node_id, " runs its VMs without network isolation (--network=user): no private networks"));
  }
  PPN_ASSIGN_OR_RETURN(Image image, catalog_.Find(r.spec.image()));
  PPN_ASSIGN_OR_RETURN(uint64_t disk_bytes, runtime_.files().DiskVirtualBytes(image, r.spec));
  std::shared_ptr<Entry> e;
  while (e == nullptr) {
    if (std::shared_ptr<Entry> existing = Find(r.vm_id)) {
      absl::MutexLock op(&existing->op);  // an operation under way on it finishes first
      PPN_ASSIGN_OR_RETURN(std::optional<VmInstance> same, CreateExisting(r, existing.get()));
      if (same.has_value()) return Created{*std::move(same), 0};
      continue;
    }
    // Never a second QEMU for one VM id, whatever this process believes; nothing touched yet.
    if (std::map<std::string, std::vector<pid_t>> running = runtime_.FindQemus(); running.count(r.vm_id) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("a QEMU process for vm ", r.vm_id, " is already running (pid ", running[r.vm_id][0], ")"));
    }
    auto fresh = std::make_shared<Entry>();
    fresh->op.Lock();  // held until this create ends: a second create of the id waits for it
    absl::MutexLock l(&mu_);
    if (vms_.count(r.vm_id) != 0) {
      fresh->op.Unlock();
      continue;
    }
    absl::Status s = ReserveLocked(r, disk_bytes, fresh.get());
    if (s.ok()) {
      s = PersistLocked(fresh.get());  // the intent, before anything runs
      if (s.ok()) vms_[r.vm_id] = fresh;
      if (!s.ok()) ReleasePortsLocked(fresh.get());
    }
    if (!s.ok()) {
      fresh->op.Unlock();
      return s;
    }
    e = fresh;
  }
  struct Unlock {
    absl::Mutex* mu;
    ~Unlock() { mu->Unlock(); }
  } unlock{&e->op};
  absl::Status s = StartQemu(r, image, e.get());
  {
    absl::MutexLock l(&mu_);
    last_spawn_overhead_ = absl::Now() - t0;
  }
  Created created;
  std::string ticket;
  if (s.ok() && r.incoming) {
    // The agent, not QEMU, listens: only the source that was told the ticket gets through.
    ticket = NewMigrationTicket();
    uint32_t port;
    {
      absl::MutexLock l(&mu_);
      port = e->rec.migration_port;
    }
    ports_.HandOver(port);
    s = ticket.empty() ? absl::InternalError("no randomness for a migration ticket")
                       : gate_->Open(r.vm_id, options_.host_address, port, ticket);
  }
  if (s.ok()) {
    absl::MutexLock l(&mu_);
    VmInstance& vm = e->rec.instance;
    // A restored guest is ready (its template was saved ready, and it took its identity); a
    // booted one is STARTING until it says so.
    const bool restored = absl::StartsWith(vm.state_message(), "restored from template");
    vm.set_state(r.incoming ? ppn::types::v1::VM_STATE_MIGRATING
                            : (restored ? ppn::types::v1::VM_STATE_RUNNING : ppn::types::v1::VM_STATE_STARTING));
    if (r.incoming) vm.set_state_message("waiting for an incoming migration");
    if (r.incoming) e->ready_deadline = clock_->Now() + r.ready_timeout;
    vm.set_accelerator(r.kvm ? ppn::types::v1::ACCELERATOR_KVM : ppn::types::v1::ACCELERATOR_TCG);
    vm.set_pid(e->process->pid());
    const absl::Time now = clock_->Now();
    *vm.mutable_start_time() = ToProtoTimestamp(now);
    if (restored) {
      *vm.mutable_ready_time() = ToProtoTimestamp(now);
      *vm.mutable_boot_duration() = ToProtoDuration(absl::ZeroDuration());
    }
    vm.set_console_log_path(ConsoleLogPath(runtime_.files().Dir(r.vm_id)));
    s = PersistLocked(e.get());
    if (s.ok() && !r.incoming && !restored) WatchStartingLocked(e);
    created = Created{vm, e->rec.migration_port, ticket};
  }
  if (!s.ok()) {
    Remove(e.get(), "the create failed").IgnoreError();
    return s;
  }
  spdlog::info("{} vm={} tenant={} pid={} accel={} memory_mib={} ms={}",
               r.incoming ? "vm.incoming_prepared" : "vm.spawned", LogValue(r.vm_id), LogValue(r.tenant_id),
               created.vm.pid(), r.kvm ? "kvm" : "tcg", r.spec.memory_mib(),
               absl::ToInt64Milliseconds(absl::Now() - t0));
  return created;
}

absl::StatusOr<std::optional<VmInstance>> VmManager::CreateExisting(const CreateRequest& r, Entry* e) {
  {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(r.vm_id);
    if (it == vms_.end() || it->second.get() != e) return std::nullopt;  // gone meanwhile
    const VmInstance& vm = e->rec.instance;
    absl::Status exists =
        absl::AlreadyExistsError(absl::StrCat("vm ", r.vm_id, " already exists on node ", options_.node_id));
    bool incoming = e->rec.migration_port != 0;
    if (vm.tenant_id() != r.tenant_id || incoming != r.incoming) return exists;
    if (!r.incoming) {
      if (!SameSpec(vm.spec(), r.spec)) return exists;
      if (vm.state() == ppn::types::v1::VM_STATE_RUNNING || vm.state() == ppn::types::v1::VM_STATE_STARTING) {
        return std::optional<VmInstance>(vm);
      }
      return absl::FailedPreconditionError(absl::StrCat("vm ", r.vm_id, " is ",
                                                        ppn::types::v1::VmState_Name(vm.state()), " on node ",
                                                        options_.node_id, "; destroy it first"));
    }
  }
  PPN_RETURN_IF_ERROR(ReplaceWaitingTarget(e));
  return std::nullopt;
}

absl::Status VmManager::ReserveLocked(const CreateRequest& r, uint64_t disk_bytes, Entry* e) {
  // Part of what balloons took back counts as free, as the fleet counts it when it places.
  uint64_t committed = CommittedMibLocked();
  uint64_t credit = std::min(committed, ReclaimedCreditMib(ReclaimedMibLocked()));
  PPN_RETURN_IF_ERROR(CheckMemoryRoom(options_.node_id, TotalMib(), options_.safety_margin_mib, committed - credit,
                                      std::max(r.spec.memory_mib(), r.spec.max_memory_mib())));
  PPN_RETURN_IF_ERROR(CheckDiskRoom(options_.node_id, DiskAvailableMibLocked(), disk_bytes));
  PPN_ASSIGN_OR_RETURN(std::vector<uint32_t> ports,
                       ports_.Allocate(r.spec.port_forwards_size() + (r.incoming ? 1 : 0)));
  e->ports_held = true;
  VmInstance& vm = e->rec.instance;
  vm.set_vm_id(r.vm_id);
  vm.set_tenant_id(r.tenant_id);
  vm.set_state(ppn::types::v1::VM_STATE_PENDING);
  *vm.mutable_spec() = r.spec;
  vm.mutable_spec()->clear_user_data();
  for (int i = 0; i < r.spec.port_forwards_size(); ++i) {
    auto* p = vm.add_forwarded_ports();
    p->set_guest_port(r.spec.port_forwards(i).guest_port());
    p->set_protocol(r.spec.port_forwards(i).protocol() == ppn::types::v1::PROTOCOL_UDP ? ppn::types::v1::PROTOCOL_UDP
                                                                                       : ppn::types::v1::PROTOCOL_TCP);
    p->set_host_address(options_.host_address);
    p->set_host_port(ports[i]);
  }
  for (const auto& n : r.private_nics) {
    auto* nic = vm.add_private_nics();
    *nic = n;
    if (nic->mac().empty()) nic->set_mac(PrivateNetworks::MacFor(r.vm_id, n.network_id()));
  }
  if (r.incoming) e->rec.migration_port = ports.back();
  e->migration_source = r.migration_source;
  e->disk_virtual_bytes = disk_bytes;
  return absl::OkStatus();
}

absl::Status VmManager::StartQemu(const CreateRequest& r, const Image& image, Entry* e) {
  if (network_ != nullptr) PPN_RETURN_IF_ERROR(MakeNetwork(e));
  // Rotated certificates reach the next QEMU started.
  PPN_RETURN_IF_ERROR(WriteMigrationCredentials());
  VmRuntime::Launch launch{r.vm_id, r.spec, image, {}, r.kvm, r.incoming, ""};
  {
    absl::MutexLock l(&mu_);
    FillLaunchLocked(e, &launch);
  }
  std::string how;
  // A template's saved machine has no virtio-mem device: a VM that can grow boots.
  if (!r.incoming && options_.templates && r.spec.max_memory_mib() <= r.spec.memory_mib()) {
    absl::Time t0 = absl::Now();
    absl::StatusOr<Template> t = TemplateFor(image, r.spec, r.kvm, /*wait=*/false);
    if (t.ok()) {
      std::shared_ptr<Process> process;
      absl::Status restored = Restore(r, launch, *t, &process);
      {
        absl::MutexLock l(&mu_);
        e->process = process;
      }
      if (restored.ok()) {
        absl::MutexLock l(&mu_);
        e->rec.instance.set_state_message(absl::StrCat("restored from template ", t->key.substr(0, 12), " in ",
                                                       absl::ToInt64Milliseconds(absl::Now() - t0), " ms"));
        return absl::OkStatus();
      }
      // Never a half-restored guest: it goes, and the VM boots.
      PPN_RETURN_IF_ERROR(runtime_.Discard(r.vm_id, process.get()));
      {
        absl::MutexLock l(&mu_);
        e->process.reset();
      }
      how = absl::StrCat("cold boot: restoring template ", t->key.substr(0, 12), " failed: ", restored.message());
      spdlog::warn("vm.restore_failed vm={} template={} error={}", LogValue(r.vm_id), t->key,
                   LogValue(restored.message()));
    } else {
      how = absl::StrCat("cold boot: no template of image ", image.name, ": ", t.status().message());
    }
  }
  std::shared_ptr<Process> process;
  absl::Status s = runtime_.Start(launch, &process);
  absl::MutexLock l(&mu_);
  e->process = process;  // even on error: Remove() ends it
  if (!how.empty()) e->rec.instance.set_state_message(how);
  return s;
}

absl::Status VmManager::MakeNetwork(Entry* e) {
  std::string vm_id;
  EgressPolicy policy;
  std::vector<PortForwardRule> forwards;
  std::vector<PrivateNic> nics;
  {
    absl::MutexLock l(&mu_);
    vm_id = e->rec.instance.vm_id();
    policy = PolicyOf(e->rec.instance.spec().egress());
    forwards = ForwardRules(e->rec.instance);
    nics = PrivateNicsOf(e->rec.instance);
  }
  PPN_ASSIGN_OR_RETURN(VmLink link, network_->Acquire(vm_id));
  {
    absl::MutexLock l(&mu_);
    e->link = link;  // from here on Remove() undoes it, whatever fails next
  }
  PPN_RETURN_IF_ERROR(network_->Create(link, policy));
  PPN_RETURN_IF_ERROR(network_->private_networks().Attach(vm_id, link.netns, nics, qemu_user_));
  MakeTunnels(nics);
  return network_->AddForwards(link, forwards);
}

void VmManager::MakeTunnels(const std::vector<PrivateNic>& nics) {
  TunnelOptions o;
  o.keys_dir = options_.state_dir + "/private-networks";
  o.mesh_address = options_.host_address;
  for (const PrivateNic& n : nics) {
    absl::StatusOr<NetworkTunnel> t =
        network_->private_networks().Tunnel(n.network_id, NetworkCidr(n.address, n.prefix_length), o);
    if (!t.ok()) {
      spdlog::warn("vm.private_network_tunnel_failed network={} error={}", n.network_id,
                   LogValue(t.status().message()));
    }
  }
}

absl::Status VmManager::SetNetworkPeers(const ppn::host::v1::SetNetworkPeersRequest& request) {
  if (network_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("node ", options_.node_id, " has no private networks"));
  }
  std::vector<NetworkPeer> peers;
  for (const auto& p : request.peers()) {
    peers.push_back({p.public_key(), p.endpoint(), {p.addresses().begin(), p.addresses().end()}});
  }
  PPN_RETURN_IF_ERROR(network_->private_networks().SetPeers(request.network_id(), peers, request.fingerprint()));
  spdlog::info("vm.private_network_peers network={} peers={}", LogValue(request.network_id()), peers.size());
  return absl::OkStatus();
}

void VmManager::DropNetwork(Entry* e) {
  std::optional<VmLink> link;
  std::vector<PortForwardRule> forwards;
  std::vector<PrivateNic> nics;
  std::string vm_id;
  {
    absl::MutexLock l(&mu_);
    link.swap(e->link);
    forwards = ForwardRules(e->rec.instance);
    nics = PrivateNicsOf(e->rec.instance);
    vm_id = e->rec.instance.vm_id();
  }
  if (!link || network_ == nullptr) return;
  network_->private_networks().Detach(vm_id, nics);
  absl::Status s = network_->Remove(*link, forwards);
  if (!s.ok()) spdlog::error("vm.network_left vm={} error={}", LogValue(link->netns), LogValue(s.message()));
  network_->Release(*link);
}

absl::StatusOr<VmInstance> VmManager::UpdateVmNetwork(const std::string& vm_id,
                                                      const ppn::types::v1::EgressPolicy& egress) {
  PPN_RETURN_IF_ERROR(ppn::ValidateEgressPolicy(egress));
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  std::optional<VmLink> link;
  {
    absl::MutexLock l(&mu_);
    if (vms_.count(vm_id) == 0) return NotHere(vm_id);
    if (e->rec.instance.state() != ppn::types::v1::VM_STATE_RUNNING || e->process == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not running"));
    }
    link = e->link;
  }
  if (!link) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", options_.node_id, " runs its VMs without network isolation: no policy to change"));
  }
  PPN_RETURN_IF_ERROR(network_->ApplyPolicy(*link, PolicyOf(egress)));
  absl::MutexLock l(&mu_);
  *e->rec.instance.mutable_spec()->mutable_egress() = egress;
  absl::Status s = PersistLocked(e.get());
  // The rules are in force now; a restart keeps them (the namespace outlives the agent).
  if (!s.ok()) spdlog::error("vm.store_failed vm={} error={}", LogValue(vm_id), LogValue(s.message()));
  spdlog::info("vm.network_updated vm={} internet={} allow={} deny={} rate_kbit={}", LogValue(vm_id),
               egress.internet() != ppn::types::v1::INTERNET_ACCESS_DENIED, egress.allow_size(), egress.deny_size(),
               egress.rate_limit_kbit());
  return e->rec.instance;
}

absl::Status VmManager::Remove(Entry* e, const std::string& why) {
  std::shared_ptr<Process> process;
  std::string vm_id, tenant;
  {
    absl::MutexLock l(&mu_);
    process = e->process;
    vm_id = e->rec.instance.vm_id();
    tenant = e->rec.instance.tenant_id();
  }
  PPN_RETURN_IF_ERROR(runtime_.Discard(vm_id, process.get()));
  gate_->Close(vm_id);
  DropNetwork(e);
  absl::Status deleted = store_->Delete(vm_id);
  absl::MutexLock l(&mu_);
  ReleasePortsLocked(e);
  e->process.reset();
  e->rec.instance.set_pid(0);
  if (!deleted.ok()) {
    // Kept, so that a retried destroy can finish the job.
    e->rec.instance.set_state(ppn::types::v1::VM_STATE_STOPPING);
    return deleted;
  }
  auto it = vms_.find(vm_id);
  if (it != vms_.end() && it->second.get() == e) vms_.erase(it);
  spdlog::info("vm.removed vm={} tenant={} reason={}", LogValue(vm_id), LogValue(tenant), LogValue(why));
  return absl::OkStatus();
}

absl::StatusOr<VmInstance> VmManager::Destroy(const std::string& vm_id, absl::Duration grace) {
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  std::shared_ptr<Process> process;
  VmInstance vm;
  {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end() || it->second != e) return NotHere(vm_id);
    process = e->process;
    // A paused copy cannot power down, and its guest lives elsewhere or nowhere: no grace.
    if (e->rec.instance.migrated_out()) grace = absl::Nanoseconds(1);
    e->rec.instance.set_state(ppn::types::v1::VM_STATE_STOPPING);
    vm = e->rec.instance;
  }
  PPN_RETURN_IF_ERROR(
      runtime_.Stop(vm_id, process.get(), grace > absl::ZeroDuration() ? grace : options_.default_grace));
  PPN_RETURN_IF_ERROR(Remove(e.get(), "destroyed"));
  vm.set_state(ppn::types::v1::VM_STATE_DESTROYED);
  vm.set_pid(0);
  spdlog::info("vm.destroyed vm={} tenant={}", LogValue(vm_id), LogValue(vm.tenant_id()));
  return vm;
}

namespace {

constexpr absl::Duration kStopGrace = absl::Seconds(30);  // StopVm's and RebootVm's default

std::string StateName(VmState s) {
  return std::string(absl::StripPrefix(ppn::types::v1::VmState_Name(s), "VM_STATE_"));
}

}  // namespace

absl::StatusOr<VmInstance> VmManager::Stop(const std::string& vm_id, absl::Duration grace) {
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  std::shared_ptr<Process> process;
  {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end() || it->second != e) return NotHere(vm_id);
    const VmInstance& vm = e->rec.instance;
    if (vm.state() == ppn::types::v1::VM_STATE_STOPPED) return vm;
    if ((vm.state() != ppn::types::v1::VM_STATE_RUNNING && vm.state() != ppn::types::v1::VM_STATE_STARTING) ||
        e->rec.migration_port != 0 || vm.migrated_out()) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is ", StateName(vm.state()), "; only a running VM can be stopped"));
    }
    process = e->process;
    e->rec.instance.set_state(ppn::types::v1::VM_STATE_STOPPING);
  }
  if (grace <= absl::ZeroDuration()) grace = kStopGrace;
  bool graceful = false;
  absl::Status stopped = runtime_.Stop(vm_id, process.get(), grace, &graceful);
  if (!stopped.ok()) {
    absl::MutexLock l(&mu_);
    e->rec.instance.set_state(ppn::types::v1::VM_STATE_FAILED);
    e->rec.instance.set_state_message(std::string(stopped.message()));
    PersistLocked(e.get()).IgnoreError();
    return stopped;
  }
  DropNetwork(e.get());
  absl::MutexLock l(&mu_);
  e->process.reset();
  VmInstance& vm = e->rec.instance;
  vm.set_state(ppn::types::v1::VM_STATE_STOPPED);
  vm.set_state_message(graceful
                           ? "powered off by its guest (ACPI)"
                           : absl::StrCat("killed: the guest did not power off within ", absl::FormatDuration(grace)));
  vm.set_pid(0);
  vm.clear_ready_time();
  vm.clear_boot_duration();
  PPN_RETURN_IF_ERROR(PersistLocked(e.get()));
  spdlog::info("vm.stopped vm={} tenant={} graceful={}", LogValue(vm_id), LogValue(vm.tenant_id()), graceful);
  return vm;
}

void VmManager::FillLaunchLocked(Entry* e, VmRuntime::Launch* launch) {
  std::vector<PrivateNic> nics = PrivateNicsOf(e->rec.instance);
  for (size_t i = 0; i < nics.size(); ++i) launch->taps.push_back({PrivateNetworks::TapName(i), nics[i].mac});
  launch->network_config = RenderNetworkConfig(nics);
  for (const auto& f : e->rec.instance.forwarded_ports()) {
    // In its namespace QEMU listens on the namespace's address; the node forwards its mesh
    // address's port there.
    launch->forwards.push_back({e->link ? e->link->netns_ip : f.host_address(), f.host_port(), f.guest_port(),
                                f.protocol() == ppn::types::v1::PROTOCOL_UDP});
  }
  if (e->link) launch->netns = e->link->netns;
}

absl::Status VmManager::BootStopped(const std::shared_ptr<Entry>& e) {
  std::string vm_id;
  VmSpec spec;
  {
    absl::MutexLock l(&mu_);
    vm_id = e->rec.instance.vm_id();
    spec = e->rec.instance.spec();
  }
  PPN_ASSIGN_OR_RETURN(Image image, catalog_.Find(spec.image()));
  if (network_ != nullptr) PPN_RETURN_IF_ERROR(MakeNetwork(e.get()));
  PPN_RETURN_IF_ERROR(WriteMigrationCredentials());
  const bool kvm = kvm_usable_ && options_.kvm_mode == KvmMode::kAuto;
  VmRuntime::Launch launch{vm_id, spec, image, {}, kvm, false, ""};
  launch.reuse_files = true;  // its overlay and seed, as it left them
  {
    absl::MutexLock l(&mu_);
    FillLaunchLocked(e.get(), &launch);
  }
  std::shared_ptr<Process> process;
  absl::Status s = runtime_.Start(launch, &process);
  absl::MutexLock l(&mu_);
  e->process = process;  // even on error: the caller ends it
  PPN_RETURN_IF_ERROR(s);
  VmInstance& vm = e->rec.instance;
  vm.set_state(ppn::types::v1::VM_STATE_STARTING);
  vm.set_state_message("cold boot of its kept disk");
  vm.set_accelerator(kvm ? ppn::types::v1::ACCELERATOR_KVM : ppn::types::v1::ACCELERATOR_TCG);
  vm.set_pid(process->pid());
  *vm.mutable_start_time() = ToProtoTimestamp(clock_->Now());
  vm.clear_ready_time();
  vm.clear_boot_duration();
  PPN_RETURN_IF_ERROR(PersistLocked(e.get()));
  WatchStartingLocked(e);
  return absl::OkStatus();
}

absl::StatusOr<VmInstance> VmManager::StartStopped(const std::string& vm_id) {
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end() || it->second != e) return NotHere(vm_id);
    VmInstance& vm = e->rec.instance;
    if (vm.state() == ppn::types::v1::VM_STATE_RUNNING || vm.state() == ppn::types::v1::VM_STATE_STARTING) return vm;
    if (vm.state() != ppn::types::v1::VM_STATE_STOPPED) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is ", StateName(vm.state()), "; only a stopped VM can be started"));
    }
    PPN_RETURN_IF_ERROR(CheckMemoryRoom(options_.node_id, TotalMib(), options_.safety_margin_mib, CommittedMibLocked(),
                                        vm.spec().memory_mib()));
    // STARTING holds its memory from now on; a crash here leaves a record adoption fails,
    // files kept, never one it removes.
    vm.set_state(ppn::types::v1::VM_STATE_STARTING);
    PPN_RETURN_IF_ERROR(PersistLocked(e.get()));
  }
  absl::Status s = BootStopped(e);
  if (!s.ok()) {
    std::shared_ptr<Process> process;
    {
      absl::MutexLock l(&mu_);
      process = e->process;
    }
    if (process != nullptr && process->Alive()) {
      process->Signal(SIGKILL);
      process->WaitForExit(absl::Seconds(10));
    }
    DropNetwork(e.get());
    absl::MutexLock l(&mu_);
    e->process.reset();
    e->rec.instance.set_state(ppn::types::v1::VM_STATE_STOPPED);
    e->rec.instance.set_state_message(absl::StrCat("the last start failed: ", s.message()));
    e->rec.instance.set_pid(0);
    PersistLocked(e.get()).IgnoreError();
    return s;
  }
  absl::MutexLock l(&mu_);
  spdlog::info("vm.started vm={} tenant={}", LogValue(vm_id), LogValue(e->rec.instance.tenant_id()));
  return e->rec.instance;
}

absl::StatusOr<VmInstance> VmManager::Reboot(const std::string& vm_id, absl::Duration grace, std::string* how) {
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  std::shared_ptr<Process> process;
  {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end() || it->second != e) return NotHere(vm_id);
    const VmInstance& vm = e->rec.instance;
    if ((vm.state() != ppn::types::v1::VM_STATE_RUNNING && vm.state() != ppn::types::v1::VM_STATE_STARTING) ||
        e->rec.migration_port != 0 || vm.migrated_out() || e->process == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("vm ", vm_id, " is ", StateName(vm.state()), "; only a running VM can be rebooted"));
    }
    process = e->process;
  }
  if (grace <= absl::ZeroDuration()) grace = kStopGrace;
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, runtime_.Connect(vm_id, process.get(), kQmpTimeout));
  // QEMU has no ACPI reboot request: the guest is asked to power off (ACPI) and booted again,
  // and one that does not power off in time is reset like a machine's reset button.
  PPN_RETURN_IF_ERROR(qmp->Execute("system_powerdown").status());
  if (process->WaitForExit(grace)) {
    qmp.reset();
    DropNetwork(e.get());
    {
      absl::MutexLock l(&mu_);
      e->process.reset();
    }
    absl::Status booted = BootStopped(e);
    if (!booted.ok()) {
      absl::MutexLock l(&mu_);
      if (e->process != nullptr && e->process->Alive()) e->process->Signal(SIGKILL);
      e->process.reset();
      e->rec.instance.set_state(ppn::types::v1::VM_STATE_STOPPED);
      e->rec.instance.set_state_message(
          absl::StrCat("it powered off for a reboot but did not start: ", booted.message()));
      e->rec.instance.set_pid(0);
      PersistLocked(e.get()).IgnoreError();
      return booted;
    }
    *how = "the guest powered off (ACPI) and booted again";
  } else {
    PPN_RETURN_IF_ERROR(qmp->Execute("system_reset").status());
    *how = absl::StrCat("reset (QMP system_reset): the guest did not power off within ", absl::FormatDuration(grace));
    absl::MutexLock l(&mu_);
    VmInstance& vm = e->rec.instance;
    vm.set_state(ppn::types::v1::VM_STATE_STARTING);
    vm.set_state_message(*how);
    *vm.mutable_start_time() = ToProtoTimestamp(clock_->Now());
    vm.clear_ready_time();
    vm.clear_boot_duration();
    PPN_RETURN_IF_ERROR(PersistLocked(e.get()));
    WatchStartingLocked(e);
  }
  absl::MutexLock l(&mu_);
  e->rec.instance.set_state_message(*how);
  spdlog::info("vm.rebooted vm={} tenant={} how={}", LogValue(vm_id), LogValue(e->rec.instance.tenant_id()),
               LogValue(*how));
  return e->rec.instance;
}

absl::StatusOr<std::string> VmManager::ReadConsole(const std::string& vm_id, uint64_t offset, size_t max_bytes,
                                                   uint64_t* next_offset) {
  if (Find(vm_id) == nullptr) return NotHere(vm_id);
  const std::string path = ConsoleLogPath(runtime_.files().Dir(vm_id));
  Fd fd;
  fd.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd.fd < 0) {  // QEMU has not made it yet
    *next_offset = 0;
    return std::string();
  }
  struct stat st {};
  if (fstat(fd.fd, &st) != 0) return absl::InternalError("cannot stat the console log");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset > size) offset = size;  // past the end: the log began again
  std::string out(std::min<uint64_t>(max_bytes, size - offset), '\0');
  ssize_t n = out.empty() ? 0 : pread(fd.fd, out.data(), out.size(), static_cast<off_t>(offset));
  if (n < 0) return absl::InternalError("cannot read the console log");
  out.resize(static_cast<size_t>(n));
  *next_offset = offset + static_cast<uint64_t>(n);
  return out;
}

std::vector<VmInstance> VmManager::List() {
  SettleAllIncoming();  // report a finished incoming migration as RUNNING, not a second later
  absl::MutexLock l(&mu_);
  std::vector<VmInstance> out;
  for (const auto& [_, e] : vms_) out.push_back(e->rec.instance);
  return out;
}

ppn::host::v1::Heartbeat VmManager::MakeHeartbeat() {
  SettleAllIncoming();
  ppn::host::v1::Heartbeat hb;
  hb.set_node_id(options_.node_id);
  *hb.mutable_send_time() = ToProtoTimestamp(clock_->Now());
  uint64_t total = TotalMib();
  hb.set_total_memory_mib(total);
  hb.set_safety_margin_mib(options_.safety_margin_mib);
  hb.set_cpus(CpuCount());
  hb.set_load_average(LoadAverage());
  hb.set_kvm(kvm_support());
  *hb.mutable_capabilities() = capabilities_;
  hb.mutable_capabilities()->set_network_isolation(network_ != nullptr);
  if (network_ != nullptr) {
    for (const auto& [t, fingerprint] : network_->private_networks().Tunnels()) {
      auto* out = hb.add_network_tunnels();
      out->set_network_id(t.network_id);
      out->set_public_key(t.public_key);
      out->set_endpoint(t.endpoint);
      out->set_peers_fingerprint(fingerprint);
    }
  }
  if (network_ == nullptr) {
    hb.add_warnings(
        "no network isolation (--network=user): guests share the node's network namespace and can reach its "
        "services, its loopback and other guests' forwarded ports");
  }
  {
    absl::MutexLock l(&mu_);
    for (const auto& [key, f] : template_failures_) {
      hb.add_warnings(
          absl::StrCat("no template of image ", f.image, " (", key.substr(0, 12), "): ", f.why, "; its creates boot"));
    }
  }
  if (!cgroup_reason_.empty()) {
    hb.add_warnings(absl::StrCat("no per-VM cgroups (", cgroup_reason_,
                                 "): VMs get no cpu.weight by vCPUs and no memory.max; only QEMU's -m bounds a guest"));
  }
  hb.set_mesh_address(options_.host_address);
  hb.set_disk_total_mib(DiskTotalMib(ReadDiskSpace(options_.state_dir), options_.advertised_disk_mib));
  for (const std::string& name : catalog_.Names()) hb.add_images(name);
  if (node_status_) node_status_(&hb);
  absl::MutexLock l(&mu_);
  uint64_t reserved = options_.safety_margin_mib + CommittedMibLocked();
  hb.set_available_memory_mib(total > reserved ? total - reserved : 0);
  hb.set_reclaimed_memory_mib(ReclaimedMibLocked());
  hb.set_disk_available_mib(DiskAvailableMibLocked());
  for (const auto& [_, e] : vms_) {
    VmInstance* vm = hb.add_vms();
    *vm = e->rec.instance;
    if (e->balloon_actual_mib > 0 || e->size_mib > 0) *vm->mutable_memory() = MemoryOf(*e);
    if (e->link) {
      LinkCounters c = network_->Counters(*e->link);
      vm->mutable_network()->set_tx_bytes(c.tx_bytes);
      vm->mutable_network()->set_rx_bytes(c.rx_bytes);
      vm->mutable_network()->set_tx_packets(c.tx_packets);
      vm->mutable_network()->set_rx_packets(c.rx_packets);
    }
  }
  return hb;
}

absl::StatusOr<uint64_t> VmManager::Balloon(const std::string& vm_id, std::optional<uint64_t> target_mib,
                                            uint64_t* memory_mib) {
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  SettleIncoming(e.get());
  std::shared_ptr<Process> process;
  {
    absl::MutexLock l(&mu_);
    // A guest still booting has its balloon device already.
    if (e->rec.instance.state() != ppn::types::v1::VM_STATE_RUNNING &&
        e->rec.instance.state() != ppn::types::v1::VM_STATE_STARTING) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not running"));
    }
    *memory_mib = e->rec.instance.spec().memory_mib();
    process = e->process;
  }
  if (target_mib.has_value() && (*target_mib < 16 || *target_mib > *memory_mib)) {
    return absl::InvalidArgumentError(absl::StrCat("balloon target must be 16-", *memory_mib, " MiB"));
  }
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, runtime_.Connect(vm_id, process.get(), kQmpTimeout));
  if (target_mib.has_value()) {
    PPN_RETURN_IF_ERROR(qmp->Execute("balloon", {{"value", *target_mib << 20}}).status());
    absl::MutexLock l(&mu_);
    e->balloon_by_hand = *target_mib < *memory_mib;
    e->balloon_target_mib = *target_mib;
  }
  PPN_ASSIGN_OR_RETURN(nlohmann::json info, qmp->Execute("query-balloon"));
  uint64_t actual = info.value("actual", uint64_t{0}) >> 20;
  absl::MutexLock l(&mu_);
  e->balloon_actual_mib = actual;
  return actual;
}

uint64_t VmManager::ReclaimedMibLocked() const {
  uint64_t sum = 0;
  for (const auto& [_, e] : vms_) {
    uint64_t base = e->rec.instance.spec().memory_mib();
    if (e->rec.instance.state() != ppn::types::v1::VM_STATE_RUNNING || e->balloon_actual_mib == 0) continue;
    if (e->balloon_actual_mib < base) sum += base - e->balloon_actual_mib;
  }
  return sum;
}

ppn::types::v1::MemoryStatus VmManager::MemoryOf(const Entry& e) {
  const VmSpec& spec = e.rec.instance.spec();
  ppn::types::v1::MemoryStatus m;
  uint64_t base = spec.memory_mib();
  uint64_t plugged = e.size_mib > base ? e.size_mib - base : 0;
  // The balloon works on the boot memory only; virtio-mem's blocks come on top.
  m.set_actual_mib((e.balloon_actual_mib > 0 ? e.balloon_actual_mib : base) + plugged);
  m.set_balloon_target_mib(e.balloon_target_mib);
  m.set_max_mib(std::max<uint64_t>(base, spec.max_memory_mib()));
  if (spec.max_memory_mib() > base) m.set_size_mib(std::max(e.size_mib, base));
  return m;
}

absl::StatusOr<VmInstance> VmManager::ResizeVm(const std::string& vm_id, uint64_t memory_mib) {
  std::shared_ptr<Entry> e = Find(vm_id);
  if (e == nullptr) return NotHere(vm_id);
  absl::MutexLock op(&e->op);
  std::shared_ptr<Process> process;
  uint64_t base, max;
  {
    absl::MutexLock l(&mu_);
    const VmInstance& vm = e->rec.instance;
    if (vm.state() != ppn::types::v1::VM_STATE_RUNNING || e->rec.migration_port != 0) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is not running"));
    }
    base = vm.spec().memory_mib();
    max = vm.spec().max_memory_mib();
    process = e->process;
  }
  if (max <= base) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", vm_id, " was created without max_memory_mib: it cannot change size while it runs"));
  }
  if (memory_mib < base || memory_mib > max || (memory_mib - base) % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory_mib must be ", base, "-", max, " MiB (", base, " plus a multiple of 2)"));
  }
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp, runtime_.Connect(vm_id, process.get(), kQmpTimeout));
  PPN_RETURN_IF_ERROR(qmp->Execute("qom-set", {{"path", "/machine/peripheral/vmem0"},
                                               {"property", "requested-size"},
                                               {"value", (memory_mib - base) << 20}})
                          .status());
  absl::MutexLock l(&mu_);
  e->size_mib = memory_mib;
  spdlog::info("vm.resized vm={} memory_mib={}", LogValue(vm_id), memory_mib);
  VmInstance out = e->rec.instance;
  *out.mutable_memory() = MemoryOf(*e);
  return out;
}

void VmManager::RunBalloonsOnce() {
  absl::MutexLock b(&balloon_mu_);
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [_, e] : vms_) entries.push_back(e);
  }
  std::set<std::string> here;
  for (const auto& e : entries) {
    {
      absl::MutexLock l(&mu_);
      here.insert(e->rec.instance.vm_id());
    }
    if (!e->op.TryLock()) continue;  // a migration or destroy owns the VM (and its QMP socket)
    BalloonOne(e.get());
    e->op.Unlock();
  }
  for (const std::string& gone : balloons_.VmIds()) {
    if (here.count(gone) == 0) balloons_.Forget(gone);
  }
}

void VmManager::BalloonOne(Entry* e) {
  std::string vm_id;
  std::shared_ptr<Process> process;
  uint64_t memory_mib, min_memory_mib;
  {
    absl::MutexLock l(&mu_);
    const VmInstance& vm = e->rec.instance;
    if (vm.state() != ppn::types::v1::VM_STATE_RUNNING || e->rec.migration_port != 0 || e->process == nullptr) {
      return;
    }
    if (e->balloon_by_hand) return;
    vm_id = vm.vm_id();
    process = e->process;
    memory_mib = vm.spec().memory_mib();
    min_memory_mib = vm.spec().min_memory_mib();
  }
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = runtime_.Connect(vm_id, process.get(), absl::Seconds(2));
  if (!qmp.ok()) return;  // the monitor notices a QEMU that died
  const std::string path = "/machine/peripheral/balloon0";
  if (!e->stats_polling) {
    absl::StatusOr<nlohmann::json> set =
        (*qmp)->Execute("qom-set",
                        {{"path", path},
                         {"property", "guest-stats-polling-interval"},
                         {"value", std::max<int64_t>(1, absl::ToInt64Seconds(options_.guest_stats_interval))}},
                        kQmpTimeout);
    if (!set.ok()) {
      spdlog::warn("vm.balloon_stats_failed vm={} error={}", LogValue(vm_id), LogValue(set.status().message()));
      return;
    }
    e->stats_polling = true;
  }
  absl::StatusOr<nlohmann::json> info = (*qmp)->Execute("query-balloon", nullptr, kQmpTimeout);
  if (!info.ok()) return;
  BalloonReading r;
  r.memory_mib = memory_mib;
  r.actual_mib = info->value("actual", uint64_t{0}) >> 20;
  absl::StatusOr<nlohmann::json> stats =
      (*qmp)->Execute("qom-get", {{"path", path}, {"property", "guest-stats"}}, kQmpTimeout);
  absl::Time now = clock_->Now();
  if (stats.ok()) ParseGuestStats(*stats, now, 3 * options_.guest_stats_interval, &r);
  BalloonDecision d = balloons_.Decide(vm_id, min_memory_mib, r, now);
  if (d.target_mib) {
    absl::Status sent = (*qmp)->Execute("balloon", {{"value", *d.target_mib << 20}}, kQmpTimeout).status();
    if (!sent.ok()) {
      balloons_.Forget(vm_id);  // sent again next time
      spdlog::warn("vm.balloon_failed vm={} error={}", LogValue(vm_id), LogValue(sent.message()));
    } else {
      spdlog::info("vm.balloon vm={} target_mib={} actual_mib={} available_mib={} reason={}", LogValue(vm_id),
                   *d.target_mib, r.actual_mib, r.has_stats ? absl::StrCat(r.available_mib) : "unknown", d.reason);
    }
  }
  absl::MutexLock l(&mu_);
  e->balloon_actual_mib = r.actual_mib;
  e->balloon_target_mib = balloons_.TargetMib(vm_id).value_or(0);
}

void VmManager::BalloonLoop() {
  absl::MutexLock l(&mu_);
  while (!stopping_) {
    stop_cv_.WaitWithTimeout(&mu_, options_.balloon_interval);
    if (stopping_) break;
    mu_.Unlock();
    RunBalloonsOnce();
    mu_.Lock();
  }
}

void VmManager::RunOnce() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [_, e] : vms_) entries.push_back(e);
  }
  for (const auto& e : entries) {
    if (!e->op.TryLock()) continue;  // an operation is under way; it owns the state
    std::string vm_id;
    std::shared_ptr<Process> process;
    VmState state;
    bool incoming;
    {
      absl::MutexLock l(&mu_);
      vm_id = e->rec.instance.vm_id();
      process = e->process;
      state = e->rec.instance.state();
      incoming = e->rec.migration_port != 0;
    }
    if (incoming) {
      SettleIncoming(e.get());
    } else if ((state == ppn::types::v1::VM_STATE_RUNNING || state == ppn::types::v1::VM_STATE_STARTING ||
                state == ppn::types::v1::VM_STATE_MIGRATING) &&
               (process == nullptr || !process->Alive())) {
      std::string why = ReadFileTail(QemuLogPath(runtime_.files().Dir(vm_id)), 300);
      DropNetwork(e.get());  // a dead guest keeps its record (FAILED), not its network
      absl::MutexLock l(&mu_);
      ReleasePortsLocked(e.get());
      e->process.reset();
      e->rec.instance.set_state(ppn::types::v1::VM_STATE_FAILED);
      e->rec.instance.set_state_message(absl::StrCat("QEMU exited unexpectedly: ", why));
      e->rec.instance.set_pid(0);
      e->rec.instance.set_migrated_out(false);
      absl::Status s = PersistLocked(e.get());
      if (!s.ok()) spdlog::error("vm.store_failed vm={} error={}", LogValue(vm_id), LogValue(s.message()));
      spdlog::warn("vm.died vm={} tenant={}", LogValue(vm_id), LogValue(e->rec.instance.tenant_id()));
    }
    e->op.Unlock();
  }
}

void VmManager::MonitorLoop() {
  absl::MutexLock l(&mu_);
  while (!stopping_) {
    stop_cv_.WaitWithTimeout(&mu_, options_.monitor_interval);
    if (stopping_) break;
    mu_.Unlock();
    RunOnce();
    mu_.Lock();
  }
}

}  // namespace ppn::host
