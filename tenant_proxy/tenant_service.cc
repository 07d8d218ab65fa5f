#include "tenant_proxy/tenant_service.h"

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/call_metadata.h"
#include "common/grpc_status.h"
#include "common/rpc_log.h"
#include "common/vm_spec.h"
#include "spdlog/spdlog.h"
#include "tenant_proxy/bearer_auth_processor.h"

namespace ppn::proxy {
namespace {

using ppn::fleet::v1::VmRecord;
using ppn::tenancy::v1::Vm;

constexpr auto kFleetTimeout = std::chrono::seconds(90);

Vm ToTenantView(const VmRecord& r) {
  Vm vm;
  vm.set_name("vms/" + r.vm_id());
  vm.set_vm_id(r.vm_id());
  *vm.mutable_spec() = r.spec();
  vm.mutable_spec()->clear_user_data();
  vm.set_state(r.state());
  vm.set_state_message(r.state() == ppn::types::v1::VM_STATE_UNKNOWN ? "the VM's host is unreachable"
                                                                     : r.state_message());
  *vm.mutable_forwarded_ports() = r.forwarded_ports();
  vm.set_accelerator(r.accelerator());
  *vm.mutable_create_time() = r.create_time();
  if (r.has_expire_time()) *vm.mutable_expire_time() = r.expire_time();
  return vm;
}

// The fleet's answer as a tenant may see it: about their request, or a plain summary that
// names no node and no other tenant.
absl::Status ForTenant(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK: return absl::OkStatus();
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS: return FromGrpcStatus(s);
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return absl::ResourceExhaustedError("no host has room for this VM right now; try a smaller VM or later");
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError("the VM's host is unreachable right now; retry later");
    case grpc::StatusCode::FAILED_PRECONDITION:
      // The fleet's words name nodes and carry QEMU's output: not for tenants.
      return absl::FailedPreconditionError(
          "the VM could not be started (check its image and spec) or is still being created; retry");
    default:
      return absl::InternalError(absl::StrCat("the control plane failed (", static_cast<int>(s.error_code()), ")"));
  }
}

}  // namespace

absl::StatusOr<std::string> ParseVmName(const std::string& name) {
  absl::string_view id = name;
  absl::ConsumePrefix(&id, "vms/");
  bool ok = !id.empty() && id.size() <= 64;
  for (char c : id) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (!ok) return absl::InvalidArgumentError("name must be \"vms/<vm_id>\" (ids are [a-z0-9-], at most 64)");
  return std::string(id);
}

TenantServiceImpl::TenantServiceImpl(const ppn::tenancy::v1::ProxyConfig& config,
                                     const TokenAuthenticator* authenticator,
                                     ppn::fleet::v1::FleetService::StubInterface* fleet, RateLimiter* limiter,
                                     AuditTrail* audit)
    : authenticator_(authenticator), fleet_(fleet), limiter_(limiter), audit_(audit) {
  for (const auto& t : config.tenants()) limits_[t.tenant_id()] = t.limits();
}

absl::StatusOr<TenantServiceImpl::Caller> TenantServiceImpl::Admit(grpc::ServerContext* context) {
  absl::StatusOr<Authenticated> who = TenantOf(*authenticator_, *context);
  if (!who.ok()) return who.status();
  Caller c{who->tenant_id, who->token_id, nullptr};
  auto it = limits_.find(c.tenant_id);
  if (it == limits_.end()) return absl::UnauthenticatedError("not authenticated");
  c.limits = &it->second;
  absl::Status rate = limiter_->Admit(c.tenant_id, c.limits->requests_per_second(), c.limits->burst());
  if (!rate.ok()) {
    context->AddTrailingMetadata("retry-after-ms", std::string(rate.message().substr(rate.message().rfind("in ") + 3)));
    return rate;
  }
  return c;
}

void TenantServiceImpl::Forwarding(grpc::ClientContext* ctx, const std::string& tenant) const {
  ctx->set_deadline(std::chrono::system_clock::now() + kFleetTimeout);
  ctx->AddMetadata(ppn::kTenantMetadata, tenant);
}

absl::Mutex* TenantServiceImpl::GateOf(const std::string& tenant) {
  absl::MutexLock l(&gates_mu_);
  auto& gate = gates_[tenant];
  if (gate == nullptr) gate = std::make_unique<absl::Mutex>();
  return gate.get();
}

absl::StatusOr<ppn::tenancy::v1::Usage> TenantServiceImpl::Usage(const std::string& tenant) {
  ppn::tenancy::v1::Usage usage;
  std::string token;
  do {
    ppn::fleet::v1::ListVmsRequest req;
    req.set_page_size(1000);
    req.set_page_token(token);
    ppn::fleet::v1::ListVmsResponse resp;
    grpc::ClientContext ctx;
    Forwarding(&ctx, tenant);
    grpc::Status s = fleet_->ListVms(&ctx, req, &resp);
    if (!s.ok()) return ForTenant(s);
    for (const auto& vm : resp.vms()) {
      usage.set_vms(usage.vms() + 1);
      usage.set_vcpus(usage.vcpus() + vm.spec().vcpus());
      usage.set_memory_mib(usage.memory_mib() + vm.spec().memory_mib());
    }
    token = resp.next_page_token();
  } while (!token.empty());
  return usage;
}

grpc::Status TenantServiceImpl::CreateVm(grpc::ServerContext* context, const tenancy::v1::CreateVmRequest* request,
                                         tenancy::v1::CreateVmResponse* response) {
  absl::StatusOr<Authenticated> who = TenantOf(*authenticator_, *context);
  absl::StatusOr<Caller> caller = Admit(context);
  std::string tenant = who.ok() ? who->tenant_id : "";
  AuditRecord audit{tenant, "tenant.vm.create", "", ppn::ledger::v1::OUTCOME_DENIED, "", who.ok() ? who->token_id : ""};
  auto finish = [&](const absl::Status& s) {
    if (!s.ok()) {
      audit.outcome = s.code() == absl::StatusCode::kResourceExhausted ||
                              s.code() == absl::StatusCode::kInvalidArgument ||
                              s.code() == absl::StatusCode::kAlreadyExists
                          ? ppn::ledger::v1::OUTCOME_DENIED
                          : ppn::ledger::v1::OUTCOME_FAILURE;
      audit.detail = absl::StatusCodeToString(s.code());
    }
    absl::Status recorded = audit_->Record(audit);
    if (!recorded.ok()) {
      spdlog::error("audit.failed tenant={} error=\"{}\"", tenant, std::string(recorded.message()));
      return RpcFailed("CreateVm", absl::InternalError("the request could not be audited, so it was not answered"),
                       {{"tenant", tenant}});
    }
    return s.ok() ? grpc::Status::OK : RpcFailed("CreateVm", s, {{"tenant", tenant}});
  };
  if (!caller.ok()) return finish(caller.status());
  // A malformed request is refused as such before any quota arithmetic.
  absl::Status valid = ValidateVmSpec(request->spec());
  if (valid.ok() && request->request_id().size() > 64) {
    valid = absl::InvalidArgumentError("request_id must be at most 64 characters");
  }
  if (!valid.ok()) return finish(valid);
  // One create at a time per tenant: the quota check and the create are one step.
  absl::MutexLock gate(GateOf(tenant));
  absl::StatusOr<ppn::tenancy::v1::Usage> usage = Usage(tenant);
  if (!usage.ok()) return finish(usage.status());
  const auto& spec = request->spec();
  const auto& lim = *caller->limits;
  std::string over;
  if (usage->vms() + 1 > lim.max_vms())
    over = absl::StrCat("VM quota of ", lim.max_vms(), " reached");
  else if (usage->vcpus() + spec.vcpus() > lim.max_vcpus())
    over = absl::StrCat("vCPU quota of ", lim.max_vcpus(), " would be exceeded (", usage->vcpus(), " in use)");
  else if (usage->memory_mib() + spec.memory_mib() > lim.max_memory_mib())
    over = absl::StrCat("memory quota of ", lim.max_memory_mib(), " MiB would be exceeded (", usage->memory_mib(),
                        " in use)");
  if (!over.empty()) return finish(absl::ResourceExhaustedError(over));

  ppn::fleet::v1::CreateVmRequest req;
  *req.mutable_spec() = spec;
  req.set_request_id(request->request_id());
  ppn::fleet::v1::CreateVmResponse resp;
  grpc::ClientContext ctx;
  Forwarding(&ctx, tenant);
  grpc::Status s = fleet_->CreateVm(&ctx, req, &resp);
  if (!s.ok()) return finish(ForTenant(s));
  *response->mutable_vm() = ToTenantView(resp.vm());
  audit.vm_id = resp.vm().vm_id();
  audit.outcome = ppn::ledger::v1::OUTCOME_SUCCESS;
  spdlog::info("tenant.vm.created tenant={} vm={} token_id={}", tenant, audit.vm_id, audit.token_id);
  return finish(absl::OkStatus());
}

grpc::Status TenantServiceImpl::GetVm(grpc::ServerContext* context, const tenancy::v1::GetVmRequest* request,
                                      tenancy::v1::GetVmResponse* response) {
  absl::StatusOr<Caller> caller = Admit(context);
  if (!caller.ok()) return RpcFailed("GetVm", caller.status());
  absl::StatusOr<std::string> id = ParseVmName(request->name());
  if (!id.ok()) return RpcFailed("GetVm", id.status(), {{"tenant", caller->tenant_id}});
  ppn::fleet::v1::GetVmRequest req;
  req.set_vm_id(*id);
  ppn::fleet::v1::GetVmResponse resp;
  grpc::ClientContext ctx;
  Forwarding(&ctx, caller->tenant_id);
  grpc::Status s = fleet_->GetVm(&ctx, req, &resp);
  if (!s.ok()) return RpcFailed("GetVm", ForTenant(s), {{"tenant", caller->tenant_id}});
  *response->mutable_vm() = ToTenantView(resp.vm());
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::ListVms(grpc::ServerContext* context, const tenancy::v1::ListVmsRequest* request,
                                        tenancy::v1::ListVmsResponse* response) {
  absl::StatusOr<Caller> caller = Admit(context);
  if (!caller.ok()) return RpcFailed("ListVms", caller.status());
  ppn::fleet::v1::ListVmsRequest req;
  req.set_page_size(request->page_size());
  req.set_page_token(request->page_token());
  *req.mutable_label_selector() = request->label_selector();
  ppn::fleet::v1::ListVmsResponse resp;
  grpc::ClientContext ctx;
  Forwarding(&ctx, caller->tenant_id);
  grpc::Status s = fleet_->ListVms(&ctx, req, &resp);
  if (!s.ok()) return RpcFailed("ListVms", ForTenant(s), {{"tenant", caller->tenant_id}});
  for (const auto& vm : resp.vms()) *response->add_vms() = ToTenantView(vm);
  response->set_next_page_token(resp.next_page_token());
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::DestroyVm(grpc::ServerContext* context, const tenancy::v1::DestroyVmRequest* request,
                                          tenancy::v1::DestroyVmResponse* response) {
  absl::StatusOr<Authenticated> who = TenantOf(*authenticator_, *context);
  absl::StatusOr<Caller> caller = Admit(context);
  std::string tenant = who.ok() ? who->tenant_id : "";
  AuditRecord audit{tenant, "tenant.vm.destroy",          "", ppn::ledger::v1::OUTCOME_SUCCESS,
                    "",     who.ok() ? who->token_id : ""};
  absl::Status status = caller.status();
  absl::StatusOr<std::string> id = ParseVmName(request->name());
  if (status.ok()) status = id.status();
  if (status.ok()) {
    audit.vm_id = *id;
    ppn::fleet::v1::DestroyVmRequest req;
    req.set_vm_id(*id);
    ppn::fleet::v1::DestroyVmResponse resp;
    grpc::ClientContext ctx;
    Forwarding(&ctx, tenant);
    grpc::Status s = fleet_->DestroyVm(&ctx, req, &resp);
    status = ForTenant(s);
    if (s.ok()) *response->mutable_vm() = ToTenantView(resp.vm());
  }
  if (!status.ok()) {
    audit.outcome = status.code() == absl::StatusCode::kNotFound ||
                            status.code() == absl::StatusCode::kResourceExhausted ||
                            status.code() == absl::StatusCode::kInvalidArgument
                        ? ppn::ledger::v1::OUTCOME_DENIED
                        : ppn::ledger::v1::OUTCOME_FAILURE;
    audit.detail = absl::StatusCodeToString(status.code());
  }
  absl::Status recorded = audit_->Record(audit);
  if (!recorded.ok())
    return RpcFailed("DestroyVm", absl::InternalError("the request could not be audited"), {{"tenant", tenant}});
  if (!status.ok()) return RpcFailed("DestroyVm", status, {{"tenant", tenant}});
  spdlog::info("tenant.vm.destroyed tenant={} vm={} token_id={}", tenant, audit.vm_id, audit.token_id);
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::WatchVm(grpc::ServerContext* context, const tenancy::v1::WatchVmRequest* request,
                                        grpc::ServerWriter<tenancy::v1::WatchVmResponse>* writer) {
  absl::StatusOr<Caller> caller = Admit(context);
  if (!caller.ok()) return RpcFailed("WatchVm", caller.status());
  absl::StatusOr<std::string> id = ParseVmName(request->name());
  if (!id.ok()) return RpcFailed("WatchVm", id.status(), {{"tenant", caller->tenant_id}});
  ppn::fleet::v1::WatchVmRequest req;
  req.set_vm_id(*id);
  grpc::ClientContext ctx;
  ctx.AddMetadata(ppn::kTenantMetadata, caller->tenant_id);
  auto reader = fleet_->WatchVm(&ctx, req);
  ppn::fleet::v1::WatchVmResponse msg;
  // The tenant's cancellation ends the fleet stream too.
  std::atomic<bool> relayed{false};
  std::thread cancel_watch([&] {
    while (!context->IsCancelled() && !relayed) absl::SleepFor(absl::Milliseconds(100));
    ctx.TryCancel();
  });
  bool client_gone = false;
  while (reader->Read(&msg)) {
    tenancy::v1::WatchVmResponse out;
    *out.mutable_vm() = ToTenantView(msg.vm());
    *out.mutable_observe_time() = msg.observe_time();
    if (!writer->Write(out)) {
      client_gone = true;
      break;
    }
  }
  if (client_gone) ctx.TryCancel();
  grpc::Status s = reader->Finish();
  relayed = true;
  cancel_watch.join();
  if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED)
    return RpcFailed("WatchVm", ForTenant(s), {{"tenant", caller->tenant_id}});
  return grpc::Status::OK;
}

grpc::Status TenantServiceImpl::GetQuota(grpc::ServerContext* context, const tenancy::v1::GetQuotaRequest*,
                                         tenancy::v1::GetQuotaResponse* response) {
  absl::StatusOr<Caller> caller = Admit(context);
  if (!caller.ok()) return RpcFailed("GetQuota", caller.status());
  absl::StatusOr<ppn::tenancy::v1::Usage> usage = Usage(caller->tenant_id);
  if (!usage.ok()) return RpcFailed("GetQuota", usage.status(), {{"tenant", caller->tenant_id}});
  response->set_tenant_id(caller->tenant_id);
  *response->mutable_limits() = *caller->limits;
  *response->mutable_usage() = *usage;
  return grpc::Status::OK;
}

}  // namespace ppn::proxy
