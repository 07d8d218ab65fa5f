#include "fleet/fleet_service.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/peer_identity.h"
#include "common/roles.h"
#include "common/rpc_log.h"
#include "common/vm_spec.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {
namespace {

struct Caller {
  Scope scope;
  std::string role;
  std::string identity;  // the peer's SPIFFE id
  // Who acts, for the ledger: the tenant (through its proxy) or the operator by its identity.
  Actor actor() const {
    if (role == ppn::roles::kTenantProxy) return Actor::Tenant();
    return Actor{"operator", role, identity};
  }
  // The operator's scope narrowed to `tenant_id` when it names one (a name resolves within
  // that tenant, and the VM must be that tenant's); the tenant proxy's scope is its tenant's.
  Scope For(const std::string& tenant_id) const {
    if (role == ppn::roles::kTenantProxy || tenant_id.empty()) return scope;
    return Scope{tenant_id};
  }
};

// A tenant-proxy peer acts for the tenant its metadata names; every other (already
// role-checked) service peer sees the whole fleet. Nothing in a request body counts.
absl::StatusOr<Caller> CallerOf(const grpc::ServerContextBase& context) {
  if (context.auth_context() == nullptr) return absl::UnauthenticatedError("no peer identity");
  absl::StatusOr<SpiffeId> peer = PeerSpiffeId(*context.auth_context());
  if (!peer.ok()) return peer.status();
  if (peer->role != ppn::roles::kTenantProxy) return Caller{Scope{}, peer->role, peer->ToString()};
  auto it = context.client_metadata().find(kTenantMetadata);
  if (it == context.client_metadata().end() || it->second.empty() || it->second.size() > 128) {
    return absl::UnauthenticatedError("the tenant proxy sent no tenant id");
  }
  return Caller{Scope{std::string(it->second.data(), it->second.size())}, peer->role, peer->ToString()};
}

absl::StatusOr<Scope> CallerScope(const grpc::ServerContextBase& context) {
  absl::StatusOr<Caller> caller = CallerOf(context);
  if (!caller.ok()) return caller.status();
  return caller->scope;
}

// A stream that fails before it starts.
class FailedWatch final : public grpc::ServerWriteReactor<v1::WatchVmResponse> {
 public:
  explicit FailedWatch(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::Status FleetService::CreateVm(grpc::ServerContext* context, const v1::CreateVmRequest* request,
                                    v1::CreateVmResponse* response) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("CreateVm", scope.status());
  if (!scope->tenant_id.has_value()) {
    return RpcFailed("CreateVm", absl::PermissionDeniedError("only the tenant proxy creates VMs"));
  }
  absl::StatusOr<CreateResult> r =
      core_->CreateVm(*scope->tenant_id, request->spec(), request->request_id(), request->vm_id());
  if (!r.ok()) {
    // Which resource ran out, as a word the proxy may pass on: never a node's name.
    if (Shortage shortage = ShortageOf(r.status()); shortage != Shortage::kNone) {
      context->AddTrailingMetadata("ppn-shortage", ShortageName(shortage));
    }
    return RpcFailed("CreateVm", r.status(), {{"tenant", *scope->tenant_id}});
  }
  *response->mutable_vm() = r->vm;
  if (request->wait_for_ready()) {
    // Bounded by the caller's deadline (never by more than ten minutes).
    absl::Time deadline = std::min(absl::FromChrono(context->deadline()), absl::Now() + absl::Minutes(10));
    absl::StatusOr<v1::VmRecord> ready = core_->WaitForReady(*scope, r->vm.vm_id(), deadline);
    if (!ready.ok())
      return RpcFailed("CreateVm", ready.status(), {{"tenant", *scope->tenant_id}, {"vm", r->vm.vm_id()}});
    *response->mutable_vm() = *std::move(ready);
  }
  response->set_replayed(r->replayed);
  response->mutable_decision()->set_chosen_node_id(r->decision.chosen_node_id);
  for (const auto& v : r->decision.verdicts) {
    auto* out = response->mutable_decision()->add_verdicts();
    out->set_node_id(v.node_id);
    out->set_eligible(v.eligible);
    out->set_reason(v.reason);
  }
  return grpc::Status::OK;
}

grpc::Status FleetService::GetVm(grpc::ServerContext* context, const v1::GetVmRequest* request,
                                 v1::GetVmResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("GetVm", caller.status());
  absl::StatusOr<v1::VmRecord> vm = core_->GetVm(caller->For(request->tenant_id()), request->vm_id());
  if (!vm.ok()) return RpcFailed("GetVm", vm.status());
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status FleetService::ListVms(grpc::ServerContext* context, const v1::ListVmsRequest* request,
                                   v1::ListVmsResponse* response) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("ListVms", scope.status());
  v1::ListVmsRequest r = *request;
  if (scope->tenant_id.has_value()) r.clear_node_id();  // tenants never filter (or learn) by node
  absl::StatusOr<v1::ListVmsResponse> list = core_->ListVms(*scope, r);
  if (!list.ok()) return RpcFailed("ListVms", list.status());
  *response = *std::move(list);
  return grpc::Status::OK;
}

grpc::Status FleetService::DestroyVm(grpc::ServerContext* context, const v1::DestroyVmRequest* request,
                                     v1::DestroyVmResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("DestroyVm", caller.status());
  absl::StatusOr<v1::VmRecord> vm =
      core_->DestroyVm(caller->For(request->tenant_id()), request->vm_id(), caller->actor());
  if (!vm.ok()) return RpcFailed("DestroyVm", vm.status());
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::WatchVmResponse>* FleetService::WatchVm(grpc::CallbackServerContext* context,
                                                                     const v1::WatchVmRequest* request) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return new FailedWatch(RpcFailed("WatchVm", scope.status()));
  return watches_.Watch(*std::move(scope), request->vm_id());
}

grpc::Status FleetService::ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*,
                                     v1::ListNodesResponse* response) {
  for (auto& n : core_->ListNodes()) *response->add_nodes() = std::move(n);
  return grpc::Status::OK;
}

grpc::Status FleetService::ExplainPlacement(grpc::ServerContext*, const v1::ExplainPlacementRequest* request,
                                            v1::ExplainPlacementResponse* response) {
  if (request->spec().memory_mib() == 0) {
    return RpcFailed("ExplainPlacement", absl::InvalidArgumentError("spec.memory_mib is required"));
  }
  Decision d = core_->Explain(
      request->spec(), std::set<std::string>(request->excluded_node_ids().begin(), request->excluded_node_ids().end()));
  response->mutable_decision()->set_chosen_node_id(d.chosen_node_id);
  for (const auto& v : d.verdicts) {
    auto* out = response->mutable_decision()->add_verdicts();
    out->set_node_id(v.node_id);
    out->set_eligible(v.eligible);
    out->set_reason(v.reason);
  }
  return grpc::Status::OK;
}

grpc::Status FleetService::RecordMigration(grpc::ServerContext*, const v1::RecordMigrationRequest* request,
                                           v1::RecordMigrationResponse* response) {
  absl::StatusOr<v1::VmRecord> vm = core_->RecordMigration(*request);
  if (!vm.ok()) return RpcFailed("RecordMigration", vm.status());
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status FleetService::SetPin(grpc::ServerContext*, const v1::SetPinRequest* request,
                                  v1::SetPinResponse* response) {
  absl::StatusOr<v1::VmRecord> vm = core_->SetPin(request->vm_id(), request->node_id());
  if (!vm.ok()) return RpcFailed("SetPin", vm.status());
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status FleetService::CordonNode(grpc::ServerContext* context, const v1::CordonNodeRequest* request,
                                      v1::CordonNodeResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("CordonNode", caller.status());
  absl::StatusOr<v1::Node> node = core_->SetCordon(request->node_id(), true, request->reason(), caller->role);
  if (!node.ok()) return RpcFailed("CordonNode", node.status(), {{"node", request->node_id().substr(0, 64)}});
  *response->mutable_node() = *std::move(node);
  return grpc::Status::OK;
}

grpc::Status FleetService::UncordonNode(grpc::ServerContext* context, const v1::UncordonNodeRequest* request,
                                        v1::UncordonNodeResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("UncordonNode", caller.status());
  absl::StatusOr<v1::Node> node = core_->SetCordon(request->node_id(), false, "", caller->role);
  if (!node.ok()) return RpcFailed("UncordonNode", node.status(), {{"node", request->node_id().substr(0, 64)}});
  *response->mutable_node() = *std::move(node);
  return grpc::Status::OK;
}

grpc::Status FleetService::UpdateVmNetwork(grpc::ServerContext* context, const v1::UpdateVmNetworkRequest* request,
                                           v1::UpdateVmNetworkResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("UpdateVmNetwork", caller.status());
  absl::StatusOr<v1::VmRecord> vm =
      core_->UpdateVmNetwork(caller->scope, request->vm_id(), request->egress(), caller->actor());
  if (!vm.ok()) return RpcFailed("UpdateVmNetwork", vm.status(), {{"vm", request->vm_id().substr(0, 64)}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status FleetService::CreateNetwork(grpc::ServerContext* context, const v1::CreateNetworkRequest* request,
                                         v1::CreateNetworkResponse* response) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("CreateNetwork", scope.status());
  absl::StatusOr<ppn::types::v1::Network> n = core_->CreateNetwork(*scope, request->name());
  if (!n.ok()) return RpcFailed("CreateNetwork", n.status());
  *response->mutable_network() = *std::move(n);
  return grpc::Status::OK;
}

grpc::Status FleetService::GetNetwork(grpc::ServerContext* context, const v1::GetNetworkRequest* request,
                                      v1::GetNetworkResponse* response) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("GetNetwork", scope.status());
  absl::StatusOr<ppn::types::v1::Network> n = core_->GetNetwork(*scope, request->network_id());
  if (!n.ok()) return RpcFailed("GetNetwork", n.status());
  *response->mutable_network() = *std::move(n);
  return grpc::Status::OK;
}

grpc::Status FleetService::ListNetworks(grpc::ServerContext* context, const v1::ListNetworksRequest*,
                                        v1::ListNetworksResponse* response) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("ListNetworks", scope.status());
  for (auto& n : core_->ListNetworks(*scope)) *response->add_networks() = std::move(n);
  return grpc::Status::OK;
}

grpc::Status FleetService::DeleteNetwork(grpc::ServerContext* context, const v1::DeleteNetworkRequest* request,
                                         v1::DeleteNetworkResponse*) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("DeleteNetwork", scope.status());
  absl::Status s = core_->DeleteNetwork(*scope, request->network_id());
  if (!s.ok()) return RpcFailed("DeleteNetwork", s);
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::WatchRelayRoutesResponse>* FleetService::WatchRelayRoutes(
    grpc::CallbackServerContext*, const v1::WatchRelayRoutesRequest*) {
  // The role table let only the relay and the operator in: there is no tenant to scope.
  return watches_.WatchRelayRoutes();
}

namespace {

Actor ActorOf(const Caller& caller) {
  return caller.scope.tenant_id.has_value() ? Actor::Tenant() : Actor{"operator", caller.role};
}

}  // namespace

grpc::Status FleetService::StopVm(grpc::ServerContext* context, const v1::StopVmRequest* request,
                                  v1::StopVmResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("StopVm", caller.status());
  absl::Duration grace;
  absl::Status valid = ToGracePeriod(request->grace_period(), &grace);
  if (!valid.ok()) return RpcFailed("StopVm", valid, {{"vm", request->vm_id()}});
  absl::StatusOr<v1::VmRecord> vm = core_->StopVm(caller->scope, request->vm_id(), grace, ActorOf(*caller));
  if (!vm.ok()) return RpcFailed("StopVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status FleetService::StartVm(grpc::ServerContext* context, const v1::StartVmRequest* request,
                                   v1::StartVmResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("StartVm", caller.status());
  absl::StatusOr<v1::VmRecord> vm =
      core_->StartVm(caller->scope, request->vm_id(), ActorOf(*caller), request->fresh_disk());
  if (!vm.ok()) {
    // A fresh-disk start is placed as a create is: the same shortage is told the same way.
    if (Shortage shortage = ShortageOf(vm.status()); shortage != Shortage::kNone) {
      context->AddTrailingMetadata("ppn-shortage", ShortageName(shortage));
    }
    return RpcFailed("StartVm", vm.status(), {{"vm", request->vm_id()}});
  }
  *response->mutable_vm() = *std::move(vm);
  return grpc::Status::OK;
}

grpc::Status FleetService::RebootVm(grpc::ServerContext* context, const v1::RebootVmRequest* request,
                                    v1::RebootVmResponse* response) {
  absl::StatusOr<Caller> caller = CallerOf(*context);
  if (!caller.ok()) return RpcFailed("RebootVm", caller.status());
  absl::Duration grace;
  absl::Status valid = ToGracePeriod(request->grace_period(), &grace);
  if (!valid.ok()) return RpcFailed("RebootVm", valid, {{"vm", request->vm_id()}});
  std::string how;
  absl::StatusOr<v1::VmRecord> vm = core_->RebootVm(caller->scope, request->vm_id(), grace, ActorOf(*caller), &how);
  if (!vm.ok()) return RpcFailed("RebootVm", vm.status(), {{"vm", request->vm_id()}});
  *response->mutable_vm() = *std::move(vm);
  response->set_how(how);
  return grpc::Status::OK;
}

grpc::Status FleetService::GetConsoleOutput(grpc::ServerContext* context, const v1::GetConsoleOutputRequest* request,
                                            v1::GetConsoleOutputResponse* response) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("GetConsoleOutput", scope.status());
  absl::StatusOr<size_t> max_bytes = ToConsoleReadBytes(request->max_bytes());
  if (!max_bytes.ok()) return RpcFailed("GetConsoleOutput", max_bytes.status(), {{"vm", request->vm_id()}});
  absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> out =
      core_->GetConsoleOutput(*scope, request->vm_id(), request->offset(), static_cast<uint32_t>(*max_bytes));
  if (!out.ok()) return RpcFailed("GetConsoleOutput", out.status(), {{"vm", request->vm_id()}});
  response->set_data(std::move(*out->mutable_data()));
  response->set_next_offset(out->next_offset());
  return grpc::Status::OK;
}

grpc::Status FleetService::StreamConsole(grpc::ServerContext* context, const v1::StreamConsoleRequest* request,
                                         grpc::ServerWriter<v1::StreamConsoleResponse>* writer) {
  absl::StatusOr<Scope> scope = CallerScope(*context);
  if (!scope.ok()) return RpcFailed("StreamConsole", scope.status());
  uint64_t offset = request->offset();
  for (bool first = true; !context->IsCancelled(); first = false) {
    absl::StatusOr<ppn::host::v1::GetConsoleOutputResponse> out =
        core_->GetConsoleOutput(*scope, request->vm_id(), offset, 64 << 10);
    if (!out.ok()) {
      // Destroyed after the stream began: it ends there. A node unreachable for a moment is
      // waited out.
      if (!first && out.status().code() == absl::StatusCode::kNotFound) break;
      if (!first && out.status().code() == absl::StatusCode::kUnavailable) {
        absl::SleepFor(absl::Seconds(1));
        continue;
      }
      return RpcFailed("StreamConsole", out.status(), {{"vm", request->vm_id()}});
    }
    if (out->next_offset() != offset) {
      v1::StreamConsoleResponse msg;
      msg.set_data(std::move(*out->mutable_data()));
      msg.set_next_offset(out->next_offset());
      if (!writer->Write(msg)) break;
      offset = out->next_offset();
      continue;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  return grpc::Status::OK;
}

}  // namespace ppn::fleet
