#include "tenant_proxy/proxy_core.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "common/vm_spec.h"
#include "spdlog/spdlog.h"
#include "tenant_proxy/quota.h"

namespace ppn::proxy {
namespace {

using ppn::fleet::v1::VmRecord;
using ppn::tenancy::v1::Vm;

constexpr size_t kMaxRequestIdBytes = 64;
constexpr char kForwarding[] = "forwarding to the fleet";

// What an audit record keeps of an egress policy: its shape, not its destinations.
std::map<std::string, std::string> EgressShape(const ppn::types::v1::EgressPolicy& p) {
  return {{"egress_internet", p.internet() == ppn::types::v1::INTERNET_ACCESS_DENIED ? "denied" : "allowed"},
          {"egress_allow_rules", absl::StrCat(p.allow_size())},
          {"egress_deny_rules", absl::StrCat(p.deny_size())},
          {"egress_rate_limit_kbit", absl::StrCat(p.rate_limit_kbit())}};
}

}  // namespace

// A FleetWatch that gives its tenant's stream slot back when destroyed.
class ProxyCore::SlottedWatch final : public FleetWatch {
 public:
  SlottedWatch(ProxyCore* core, std::string tenant_id, std::unique_ptr<FleetWatch> inner)
      : core_(core), tenant_id_(std::move(tenant_id)), inner_(std::move(inner)) {}
  ~SlottedWatch() override {
    inner_.reset();
    core_->ReleaseWatch(tenant_id_);
  }
  void Start() override { inner_->Start(); }
  void ReadNext() override { inner_->ReadNext(); }
  void Cancel() override { inner_->Cancel(); }

 private:
  ProxyCore* const core_;
  const std::string tenant_id_;
  std::unique_ptr<FleetWatch> inner_;
};

namespace {

// The fleet's and agents' messages name nodes, paths and QEMU's output; a tenant gets the same
// few words for a state whatever caused it.
std::string TenantStateMessage(ppn::types::v1::VmState state) {
  switch (state) {
    case ppn::types::v1::VM_STATE_PENDING:
    case ppn::types::v1::VM_STATE_STARTING: return "starting";
    case ppn::types::v1::VM_STATE_MIGRATING: return "moving to another host; it keeps running";
    case ppn::types::v1::VM_STATE_STOPPING: return "stopping";
    case ppn::types::v1::VM_STATE_STOPPED: return "powered off; its disk is kept and StartVm boots it again";
    case ppn::types::v1::VM_STATE_FAILED: return "the VM failed: it could not start or stopped unexpectedly";
    case ppn::types::v1::VM_STATE_UNKNOWN: return "the VM's host is unreachable";
    case ppn::types::v1::VM_STATE_LOST: return "the VM was lost: its host no longer runs it";
    default: return "";
  }
}

}  // namespace

Vm TenantView(const VmRecord& r) {
  Vm vm;
  vm.set_name("vms/" + (r.name().empty() ? r.vm_id() : r.name()));
  vm.set_vm_id(r.vm_id());
  *vm.mutable_spec() = r.spec();
  vm.mutable_spec()->clear_user_data();
  vm.set_state(r.state());
  vm.set_state_message(TenantStateMessage(r.state()));
  *vm.mutable_forwarded_ports() = r.forwarded_ports();
  for (auto& port : *vm.mutable_forwarded_ports()) {
    // With a relay a tenant reaches its VM only through the relay's stable address, which
    // outlives every move; the node's own address must not leak.
    if (!port.public_address().empty()) {
      port.set_host_address(port.public_address());
      port.set_host_port(port.public_port());
    }
  }
  vm.set_accelerator(r.accelerator());
  *vm.mutable_create_time() = r.create_time();
  if (r.has_expire_time()) *vm.mutable_expire_time() = r.expire_time();
  *vm.mutable_network() = r.network();
  *vm.mutable_private_nics() = r.private_nics();
  if (r.has_ready_time()) *vm.mutable_ready_time() = r.ready_time();
  if (r.has_boot_duration()) *vm.mutable_boot_duration() = r.boot_duration();
  if (r.has_memory()) *vm.mutable_memory() = r.memory();
  return vm;
}

absl::StatusOr<std::string> ParseVmName(const std::string& name) {
  absl::string_view id = name;
  absl::ConsumePrefix(&id, "vms/");
  bool ok = !id.empty() && id.size() <= 64;
  for (char c : id) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (!ok) return absl::InvalidArgumentError("name must be \"vms/<vm_id>\" (ids are [a-z0-9-], at most 64)");
  return std::string(id);
}

ProxyCore::ProxyCore(const ppn::tenancy::v1::ProxyConfig& config, Deps deps, ProxyOptions options)
    : deps_(deps), options_(options) {
  ApplyConfig(config);
}

void ProxyCore::ApplyConfig(const ppn::tenancy::v1::ProxyConfig& config) {
  std::map<std::string, std::shared_ptr<const TenantSettings>> settings;
  for (const auto& t : config.tenants()) {
    settings[t.tenant_id()] = std::make_shared<const TenantSettings>(TenantSettings{t.limits(), t.egress()});
  }
  absl::MutexLock l(&settings_mu_);
  settings_.swap(settings);
}

absl::StatusOr<Tenant> ProxyCore::Admit(const Authenticated& who, absl::Duration* retry_after) {
  *retry_after = absl::ZeroDuration();
  std::shared_ptr<const TenantSettings> settings;
  {
    absl::MutexLock l(&settings_mu_);
    auto it = settings_.find(who.tenant_id);
    if (it == settings_.end()) return absl::UnauthenticatedError("not authenticated");
    settings = it->second;
  }
  const ppn::tenancy::v1::Limits& limits = settings->limits;
  RateDecision rate = deps_.limiter->Admit(who.tenant_id, limits.requests_per_second(), limits.burst());
  if (!rate.admitted) {
    metrics::Default().CounterAdd("ppn_proxy_rate_limited_total", "Tenant requests refused by the rate limit.", {});
    *retry_after = rate.retry_after;
    // One record per tenant per window, not one per refusal: refused calls must not grow the
    // permanent ledger.
    deps_.audit->CountRateLimited(who.tenant_id);
    return absl::ResourceExhaustedError(absl::StrCat("rate limit of ", limits.requests_per_second(),
                                                     " requests/s (burst ", limits.burst(), ") reached; retry in ",
                                                     absl::ToInt64Milliseconds(rate.retry_after), " ms"));
  }
  return Tenant{TenantId(who.tenant_id), who.token_id, &settings->limits, &settings->egress, settings};
}

absl::Status ProxyCore::Finish(AuditRecord audit, const absl::Status& status) {
  audit.outcome = OutcomeOf(status);
  if (!status.ok()) audit.detail = absl::StatusCodeToString(status.code());
  absl::Status recorded = deps_.audit->Record(audit);
  if (!recorded.ok()) {
    spdlog::error("audit.failed tenant={} operation={} error={}", LogValue(audit.tenant_id), audit.operation,
                  LogValue(recorded.message()));
    return absl::InternalError("the request could not be audited, so it was not answered");
  }
  return status;
}

absl::Status ProxyCore::RecordIntent(const AuditRecord& audit) {
  AuditRecord intent = audit;
  intent.outcome = ppn::ledger::v1::OUTCOME_PENDING;
  intent.detail = kForwarding;
  absl::Status recorded = deps_.audit->Record(intent);
  if (!recorded.ok()) {
    spdlog::error("audit.failed tenant={} operation={} error={}", LogValue(intent.tenant_id), intent.operation,
                  LogValue(recorded.message()));
    return absl::InternalError("the request could not be audited, so it was not forwarded");
  }
  return absl::OkStatus();
}

absl::Mutex* ProxyCore::GateOf(const std::string& tenant_id) {
  absl::MutexLock l(&gates_mu_);
  auto& gate = gates_[tenant_id];
  if (gate == nullptr) gate = std::make_unique<absl::Mutex>();
  return gate.get();
}

absl::StatusOr<std::vector<VmRecord>> ProxyCore::ListAll(const TenantId& tenant) {
  std::vector<VmRecord> all;
  std::string token;
  do {
    ppn::fleet::v1::ListVmsRequest req;
    req.set_page_size(1000);
    req.set_page_token(token);
    PPN_ASSIGN_OR_RETURN(ppn::fleet::v1::ListVmsResponse page, deps_.fleet->ListVms(tenant, req));
    for (auto& vm : *page.mutable_vms()) all.push_back(std::move(vm));
    token = page.next_page_token();
  } while (!token.empty());
  return all;
}

absl::StatusOr<ppn::tenancy::v1::Usage> ProxyCore::UsageFor(const TenantId& tenant) {
  PPN_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, ListAll(tenant));
  return UsageOf(vms);
}

absl::StatusOr<Vm> ProxyCore::CreateVm(const Tenant& tenant, const ppn::tenancy::v1::CreateVmRequest& request) {
  const std::string& tid = tenant.tenant_id.value();
  AuditRecord audit{tid, "tenant.vm.create", "", ppn::ledger::v1::OUTCOME_DENIED, "", tenant.token_id};
  // A malformed request is refused as such before any quota arithmetic. The display name
  // defaults to the chosen id, as the fleet does it.
  ppn::types::v1::VmSpec spec = request.spec();
  if (spec.display_name().empty()) spec.set_display_name(request.vm_id());
  absl::Status valid = request.vm_id().empty() ? absl::OkStatus() : ValidateChosenVmId(request.vm_id());
  if (valid.ok()) valid = ValidateVmSpec(spec);
  if (valid.ok() && request.request_id().size() > kMaxRequestIdBytes) {
    valid = absl::InvalidArgumentError("request_id must be at most 64 characters");
  }
  if (!valid.ok()) return Finish(audit, valid);
  audit.request_id = request.request_id();
  audit.display_name = spec.display_name();
  if (!request.vm_id().empty()) audit.attributes["name"] = request.vm_id();
  // The fleet gets the policy in effect, so what the VM's spec shows is what its node enforces.
  ppn::fleet::v1::CreateVmRequest forward;
  *forward.mutable_spec() = spec;
  forward.set_request_id(request.request_id());
  forward.set_vm_id(request.vm_id());
  absl::StatusOr<ppn::types::v1::EgressPolicy> egress = NarrowEgress(*tenant.egress, request.spec().egress());
  if (!egress.ok()) return Finish(audit, egress.status());
  *forward.mutable_spec()->mutable_egress() = *std::move(egress);

  // One create at a time per tenant: the quota check and the create are one step.
  absl::MutexLock gate(GateOf(tid));
  absl::StatusOr<std::vector<VmRecord>> vms = ListAll(tenant.tenant_id);
  if (!vms.ok()) return Finish(audit, vms.status());
  // A retry of a create that already made its VM: the quota already counts that VM, and the
  // fleet answers with it, so neither the quota nor a second intent applies.
  const VmRecord* earlier = FindByRequestId(*vms, request.request_id());
  std::string earlier_id = earlier != nullptr ? earlier->vm_id() : "";
  if (earlier == nullptr) {
    absl::Status quota = CheckQuota(*tenant.limits, UsageOf(*vms), spec);
    if (!quota.ok()) return Finish(audit, quota);
    PPN_RETURN_IF_ERROR(RecordIntent(audit));
  }

  absl::StatusOr<ppn::fleet::v1::CreateVmResponse> created = deps_.fleet->CreateVm(tenant.tenant_id, forward);
  if (!created.ok()) return Finish(audit, created.status());
  // `replayed` is the fleet's word; a fleet that predates it still returns the same VM.
  bool replayed = created->replayed() || (!earlier_id.empty() && created->vm().vm_id() == earlier_id);
  if (replayed && !earlier_id.empty()) {
    spdlog::info("tenant.vm.create_replayed tenant={} vm={} request_id={} token_id={}", LogValue(tid),
                 created->vm().vm_id(), LogValue(request.request_id()), tenant.token_id);
    return TenantView(created->vm());
  }
  audit.vm_id = created->vm().vm_id();
  if (replayed) audit.detail = "replayed";  // closes this call's own intent
  PPN_RETURN_IF_ERROR(Finish(audit, absl::OkStatus()));
  spdlog::info("tenant.vm.created tenant={} vm={} token_id={}", LogValue(tid), audit.vm_id, audit.token_id);
  return TenantView(created->vm());
}

absl::StatusOr<Vm> ProxyCore::WaitForReady(const Tenant& tenant, const std::string& vm_id, absl::Time deadline) {
  while (true) {
    PPN_ASSIGN_OR_RETURN(VmRecord vm, deps_.fleet->GetVm(tenant.tenant_id, VmId(vm_id)));
    const ppn::types::v1::VmState s = vm.state();
    if (s == ppn::types::v1::VM_STATE_RUNNING) return TenantView(vm);
    const std::string state(absl::StripPrefix(ppn::types::v1::VmState_Name(s), "VM_STATE_"));
    if (s != ppn::types::v1::VM_STATE_PENDING && s != ppn::types::v1::VM_STATE_STARTING &&
        s != ppn::types::v1::VM_STATE_UNKNOWN) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " did not become ready: it is ", state));
    }
    absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("vm ", vm_id, " is not ready yet (", state, "); it stays: follow it with WatchVm or GetVm"));
    }
    absl::SleepFor(std::min(deadline - now, absl::Milliseconds(200)));
  }
}

absl::StatusOr<Vm> ProxyCore::GetVm(const Tenant& tenant, const std::string& name) {
  PPN_ASSIGN_OR_RETURN(std::string id, ParseVmName(name));
  PPN_ASSIGN_OR_RETURN(VmRecord vm, deps_.fleet->GetVm(tenant.tenant_id, VmId(id)));
  return TenantView(vm);
}

absl::StatusOr<ppn::tenancy::v1::ListVmsResponse> ProxyCore::ListVms(const Tenant& tenant,
                                                                     const ppn::tenancy::v1::ListVmsRequest& request) {
  if (request.page_size() < 0 || request.page_size() > 1000) {
    return absl::InvalidArgumentError("page_size must be 0-1000");
  }
  ppn::fleet::v1::ListVmsRequest req;
  req.set_page_size(request.page_size());
  req.set_page_token(request.page_token());
  *req.mutable_label_selector() = request.label_selector();
  req.set_filter(request.filter());  // the fleet parses it (one grammar) and checks the token
  PPN_ASSIGN_OR_RETURN(ppn::fleet::v1::ListVmsResponse page, deps_.fleet->ListVms(tenant.tenant_id, req));
  ppn::tenancy::v1::ListVmsResponse out;
  for (const auto& vm : page.vms()) *out.add_vms() = TenantView(vm);
  out.set_next_page_token(page.next_page_token());
  return out;
}

absl::StatusOr<Vm> ProxyCore::DestroyVm(const Tenant& tenant, const std::string& name) {
  const std::string& tid = tenant.tenant_id.value();
  AuditRecord audit{tid, "tenant.vm.destroy", "", ppn::ledger::v1::OUTCOME_DENIED, "", tenant.token_id};
  absl::StatusOr<std::string> id = ParseVmName(name);
  if (!id.ok()) return Finish(audit, id.status());
  audit.vm_id = *id;
  PPN_RETURN_IF_ERROR(RecordIntent(audit));
  absl::StatusOr<VmRecord> destroyed = deps_.fleet->DestroyVm(tenant.tenant_id, VmId(*id));
  // The tenant may have named the VM by the id it chose: the outcome says which VM that was.
  if (destroyed.ok()) audit.attributes["resolved_vm_id"] = destroyed->vm_id();
  PPN_RETURN_IF_ERROR(Finish(audit, destroyed.status()));
  spdlog::info("tenant.vm.destroyed tenant={} vm={} token_id={}", LogValue(tid), audit.vm_id, audit.token_id);
  return TenantView(*destroyed);
}

absl::StatusOr<Vm> ProxyCore::Power(const Tenant& tenant, const std::string& name, const std::string& op,
                                    const std::function<absl::StatusOr<VmRecord>(const VmId&)>& call) {
  const std::string& tid = tenant.tenant_id.value();
  AuditRecord audit{tid, "tenant.vm." + op, "", ppn::ledger::v1::OUTCOME_DENIED, "", tenant.token_id};
  absl::StatusOr<std::string> id = ParseVmName(name);
  if (!id.ok()) return Finish(audit, id.status());
  audit.vm_id = *id;
  PPN_RETURN_IF_ERROR(RecordIntent(audit));
  absl::StatusOr<VmRecord> vm = call(VmId(*id));
  PPN_RETURN_IF_ERROR(Finish(audit, vm.status()));
  spdlog::info("tenant.vm.{} tenant={} vm={} token_id={} state={}", op, LogValue(tid), audit.vm_id, audit.token_id,
               ppn::types::v1::VmState_Name(vm->state()));
  return TenantView(*vm);
}

absl::StatusOr<Vm> ProxyCore::StopVm(const Tenant& tenant, const std::string& name, absl::Duration grace) {
  return Power(tenant, name, "stop", [&](const VmId& id) { return deps_.fleet->StopVm(tenant.tenant_id, id, grace); });
}

absl::StatusOr<Vm> ProxyCore::StartVm(const Tenant& tenant, const std::string& name, bool fresh_disk) {
  // The quota check and the start are one step, as for creates.
  absl::MutexLock gate(GateOf(tenant.tenant_id.value()));
  return Power(tenant, name, "start", [&](const VmId& id) -> absl::StatusOr<VmRecord> {
    PPN_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, ListAll(tenant.tenant_id));
    for (const VmRecord& vm : vms) {
      if (vm.vm_id() != id.value() || vm.state() != ppn::types::v1::VM_STATE_STOPPED) continue;
      PPN_RETURN_IF_ERROR(CheckStartQuota(*tenant.limits, UsageOf(vms), vm.spec()));
    }
    return deps_.fleet->StartVm(tenant.tenant_id, id, fresh_disk);
  });
}

absl::StatusOr<Vm> ProxyCore::RebootVm(const Tenant& tenant, const std::string& name, absl::Duration grace,
                                       std::string* how) {
  return Power(tenant, name, "reboot",
               [&](const VmId& id) { return deps_.fleet->RebootVm(tenant.tenant_id, id, grace, how); });
}

absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> ProxyCore::GetConsoleOutput(const Tenant& tenant,
                                                                                     const std::string& name,
                                                                                     uint64_t offset,
                                                                                     uint32_t max_bytes) {
  PPN_ASSIGN_OR_RETURN(std::string id, ParseVmName(name));
  return deps_.fleet->GetConsoleOutput(tenant.tenant_id, VmId(id), offset, max_bytes);
}

absl::StatusOr<Vm> ProxyCore::UpdateVmNetwork(const Tenant& tenant,
                                              const ppn::tenancy::v1::UpdateVmNetworkRequest& request) {
  const std::string& tid = tenant.tenant_id.value();
  AuditRecord audit{tid, "tenant.vm.network", "", ppn::ledger::v1::OUTCOME_DENIED, "", tenant.token_id};
  absl::StatusOr<std::string> id = ParseVmName(request.name());
  if (!id.ok()) return Finish(audit, id.status());
  audit.vm_id = *id;
  absl::Status valid = ValidateEgressPolicy(request.egress());
  if (!valid.ok()) return Finish(audit, valid);
  // A refusal keeps the shape of what was asked; the intent and outcome that of what applies.
  audit.attributes = EgressShape(request.egress());
  absl::StatusOr<ppn::types::v1::EgressPolicy> egress = NarrowEgress(*tenant.egress, request.egress());
  if (!egress.ok()) return Finish(audit, egress.status());
  audit.attributes = EgressShape(*egress);
  PPN_RETURN_IF_ERROR(RecordIntent(audit));
  absl::StatusOr<VmRecord> updated = deps_.fleet->UpdateVmNetwork(tenant.tenant_id, VmId(*id), *egress);
  PPN_RETURN_IF_ERROR(Finish(audit, updated.status()));
  spdlog::info("tenant.vm.network_changed tenant={} vm={} internet={} allow_rules={} deny_rules={} token_id={}",
               LogValue(tid), audit.vm_id, audit.attributes["egress_internet"], egress->allow_size(),
               egress->deny_size(), audit.token_id);
  return TenantView(*updated);
}

namespace {
// Network ids are the fleet's "net-<hex>"; anything else cannot name one.
absl::Status CheckNetworkId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 40 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
  if (!ok) return absl::InvalidArgumentError("network_id must be a network's id (1-40 characters of [a-z0-9-])");
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<ppn::types::v1::Network> ProxyCore::CreateNetwork(
    const Tenant& tenant, const ppn::tenancy::v1::CreateNetworkRequest& request) {
  AuditRecord audit{tenant.tenant_id.value(), "tenant.network.create", "", ppn::ledger::v1::OUTCOME_DENIED, "",
                    tenant.token_id};
  const std::string& name = request.name();
  bool ok = !name.empty() && name.size() <= 63 && name[0] >= 'a' && name[0] <= 'z' &&
            std::all_of(name.begin(), name.end(),
                        [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
  if (!ok) {
    return Finish(audit,
                  absl::InvalidArgumentError("name must be 1-63 characters of [a-z0-9-], starting with a letter"));
  }
  audit.attributes["network_name"] = name;
  PPN_RETURN_IF_ERROR(RecordIntent(audit));
  absl::StatusOr<ppn::types::v1::Network> made = deps_.fleet->CreateNetwork(tenant.tenant_id, name);
  if (made.ok()) audit.attributes["network_id"] = made->network_id();
  PPN_RETURN_IF_ERROR(Finish(audit, made.status()));
  spdlog::info("tenant.network.created tenant={} network={} token_id={}", LogValue(tenant.tenant_id.value()),
               made->network_id(), audit.token_id);
  return made;
}

absl::StatusOr<ppn::types::v1::Network> ProxyCore::GetNetwork(const Tenant& tenant, const std::string& network_id) {
  PPN_RETURN_IF_ERROR(CheckNetworkId(network_id));
  return deps_.fleet->GetNetwork(tenant.tenant_id, network_id);
}

absl::StatusOr<ppn::tenancy::v1::ListNetworksResponse> ProxyCore::ListNetworks(const Tenant& tenant) {
  PPN_ASSIGN_OR_RETURN(std::vector<ppn::types::v1::Network> networks, deps_.fleet->ListNetworks(tenant.tenant_id));
  ppn::tenancy::v1::ListNetworksResponse out;
  for (auto& n : networks) *out.add_networks() = std::move(n);
  return out;
}

absl::Status ProxyCore::DeleteNetwork(const Tenant& tenant, const std::string& network_id) {
  AuditRecord audit{tenant.tenant_id.value(), "tenant.network.delete", "", ppn::ledger::v1::OUTCOME_DENIED, "",
                    tenant.token_id};
  absl::Status valid = CheckNetworkId(network_id);
  if (!valid.ok()) return Finish(audit, valid);
  audit.attributes["network_id"] = network_id;
  PPN_RETURN_IF_ERROR(RecordIntent(audit));
  absl::Status s = deps_.fleet->DeleteNetwork(tenant.tenant_id, network_id);
  PPN_RETURN_IF_ERROR(Finish(audit, s));
  spdlog::info("tenant.network.deleted tenant={} network={} token_id={}", LogValue(tenant.tenant_id.value()),
               network_id, audit.token_id);
  return absl::OkStatus();
}

absl::StatusOr<ppn::tenancy::v1::GetQuotaResponse> ProxyCore::GetQuota(const Tenant& tenant) {
  PPN_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, ListAll(tenant.tenant_id));
  ppn::tenancy::v1::GetQuotaResponse out;
  out.set_tenant_id(tenant.tenant_id.value());
  *out.mutable_limits() = *tenant.limits;
  *out.mutable_usage() = UsageOf(vms);
  return out;
}

absl::StatusOr<std::unique_ptr<FleetWatch>> ProxyCore::OpenWatch(const Tenant& tenant, const std::string& name,
                                                                 FleetWatchObserver* observer) {
  PPN_ASSIGN_OR_RETURN(std::string id, ParseVmName(name));
  const std::string& tid = tenant.tenant_id.value();
  {
    absl::MutexLock l(&watches_mu_);
    int& held = watches_[tid];
    if (held >= options_.max_watch_streams_per_tenant) {
      return absl::ResourceExhaustedError(absl::StrCat("at most ", options_.max_watch_streams_per_tenant,
                                                       " WatchVm streams per tenant; close one first"));
    }
    ++held;
  }
  return std::unique_ptr<FleetWatch>(
      std::make_unique<SlottedWatch>(this, tid, deps_.fleet->WatchVm(tenant.tenant_id, VmId(id), observer)));
}

void ProxyCore::ReleaseWatch(const std::string& tenant_id) {
  absl::MutexLock l(&watches_mu_);
  if (--watches_[tenant_id] <= 0) watches_.erase(tenant_id);
}

int ProxyCore::WatchStreamsForTest(const std::string& tenant_id) {
  absl::MutexLock l(&watches_mu_);
  auto it = watches_.find(tenant_id);
  return it == watches_.end() ? 0 : it->second;
}

}  // namespace ppn::proxy
