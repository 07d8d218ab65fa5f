#include "fleet/lifecycle_log.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace ppn::fleet {
namespace {

using ppn::types::v1::VmState;

std::string StateName(VmState s) {
  std::string name = ppn::types::v1::VmState_Name(s);
  absl::string_view v = name;
  absl::ConsumePrefix(&v, "VM_STATE_");
  return std::string(v);
}

}  // namespace

ppn::ledger::v1::AppendRequest LifecycleLog::Entry(absl::string_view kind, const ppn::fleet::v1::VmRecord& vm) {
  ppn::ledger::v1::AppendRequest e;
  e.set_kind(std::string(kind));
  e.set_tenant_id(vm.tenant_id());
  e.set_subject(vm.vm_id());
  e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  auto& a = *e.mutable_attributes();
  a["node"] = vm.node_id();
  a["fleet_time"] = absl::FormatTime(absl::RFC3339_full, clock_->Now(), absl::UTCTimeZone());
  return e;
}

void LifecycleLog::Append(const ppn::ledger::v1::AppendRequest& entry) {
  if (outbox_ == nullptr) return;
  absl::Status s = outbox_->Enqueue(entry);
  // The event happened whatever the spool says; an operator must know the ledger misses it.
  if (!s.ok()) {
    spdlog::error("ledger.spool_failed kind={} vm={} error={}", entry.kind(), LogValue(entry.subject()),
                  LogValue(s.message()));
  }
}

void LifecycleLog::Created(const ppn::fleet::v1::VmRecord& vm, absl::string_view settled_by) {
  ppn::ledger::v1::AppendRequest e = Entry("vm.create", vm);
  auto& a = *e.mutable_attributes();
  a["settled_by"] = std::string(settled_by);
  a["request_id"] = vm.request_id();
  a["image"] = vm.spec().image();
  a["vcpus"] = absl::StrCat(vm.spec().vcpus());
  a["memory_mib"] = absl::StrCat(vm.spec().memory_mib());
  a["disk_gib"] = absl::StrCat(vm.spec().disk_gib());
  a["accelerator"] = ppn::types::v1::Accelerator_Name(vm.accelerator());
  Append(e);
}

void LifecycleLog::Destroyed(const ppn::fleet::v1::VmRecord& vm, const Actor& actor, VmState prior,
                             absl::string_view node_id) {
  ppn::ledger::v1::AppendRequest e = Entry("vm.destroy", vm);
  auto& a = *e.mutable_attributes();
  a["node"] = std::string(node_id);
  a["who"] = actor.who;
  a["role"] = actor.role;
  if (!actor.identity.empty()) a["identity"] = actor.identity;
  if (!vm.name().empty()) a["name"] = vm.name();
  a["prior_state"] = StateName(prior);
  Append(e);
}

void LifecycleLog::Expired(const ppn::fleet::v1::VmRecord& vm) {
  ppn::ledger::v1::AppendRequest e = Entry("vm.expire", vm);
  if (vm.has_expire_time()) {
    (*e.mutable_attributes())["expire_time"] = absl::StrCat(vm.expire_time().seconds());
  }
  Append(e);
}

void LifecycleLog::StateChanged(const ppn::fleet::v1::VmRecord& vm, VmState from, VmState to,
                                absl::string_view reason) {
  ppn::ledger::v1::AppendRequest e = Entry("vm.state", vm);
  auto& a = *e.mutable_attributes();
  a["from"] = StateName(from);
  a["to"] = StateName(to);
  a["reason"] = std::string(reason);
  Append(e);
}

void LifecycleLog::Adopted(const ppn::fleet::v1::VmRecord& vm, absl::string_view from_node, absl::string_view reason) {
  ppn::ledger::v1::AppendRequest e = Entry("vm.adopt", vm);
  auto& a = *e.mutable_attributes();
  a["from_node"] = std::string(from_node);
  a["reason"] = std::string(reason);
  Append(e);
}

void LifecycleLog::NetworkChanged(const ppn::fleet::v1::VmRecord& vm, const Actor& actor) {
  ppn::ledger::v1::AppendRequest e = Entry("vm.network", vm);
  auto& a = *e.mutable_attributes();
  const ppn::types::v1::EgressPolicy& egress = vm.spec().egress();
  a["who"] = actor.who;
  a["role"] = actor.role;
  if (!actor.identity.empty()) a["identity"] = actor.identity;
  a["internet"] = egress.internet() == ppn::types::v1::INTERNET_ACCESS_DENIED ? "denied" : "allowed";
  a["allow_rules"] = absl::StrCat(egress.allow_size());
  a["deny_rules"] = absl::StrCat(egress.deny_size());
  a["rate_limit_kbit"] = absl::StrCat(egress.rate_limit_kbit());
  Append(e);
}

void LifecycleLog::NodeCordoned(absl::string_view node_id, bool cordoned, absl::string_view reason,
                                absl::string_view role) {
  ppn::ledger::v1::AppendRequest e;
  e.set_kind(cordoned ? "node.cordon" : "node.uncordon");
  e.set_subject(std::string(node_id));
  e.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  auto& a = *e.mutable_attributes();
  a["role"] = std::string(role);
  if (cordoned) a["reason"] = std::string(reason);
  a["fleet_time"] = absl::FormatTime(absl::RFC3339_full, clock_->Now(), absl::UTCTimeZone());
  Append(e);
}

void LifecycleLog::PowerChanged(absl::string_view kind, const ppn::fleet::v1::VmRecord& vm, const Actor& actor,
                                absl::string_view how) {
  ppn::ledger::v1::AppendRequest e = Entry(kind, vm);
  auto& a = *e.mutable_attributes();
  a["who"] = actor.who;
  a["role"] = actor.role;
  a["node"] = vm.node_id();
  if (!how.empty()) a["how"] = std::string(how);
  Append(e);
}

void LifecycleLog::StartedElsewhere(const ppn::fleet::v1::VmRecord& vm, const Actor& actor,
                                    absl::string_view from_node) {
  ppn::ledger::v1::AppendRequest e = Entry("vm.start", vm);
  auto& a = *e.mutable_attributes();
  a["who"] = actor.who;
  a["role"] = actor.role;
  a["node"] = vm.node_id();
  a["fresh_disk"] = "true";
  a["from_node"] = std::string(from_node);
  a["to_node"] = vm.node_id();
  Append(e);
}

}  // namespace ppn::fleet
