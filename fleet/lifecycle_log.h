#pragma once

// LifecycleLog is how the fleet records what happens to VMs in the ledger, whoever asked:
// each event becomes one entry spooled through a LedgerOutbox (durable before the call that
// caused it returns, delivered in order, once). Kinds (the ledger lets only the fleet's role
// write them):
//   vm.create   a VM came to exist (its spawn answered, or a create whose answer was lost was
//               settled by its node's heartbeat); a replayed request is not a create
//   vm.destroy  a VM was stopped: `who` = tenant | operator | ttl | fleet (a VM the record
//               says is stopped, found running on a node and destroyed there), `role` = the
//               caller's certificate role, `identity` = an operator's certificate
//               (spiffe://mesh/operator/NAME), `name` = the tenant's name for the VM if any
//   vm.expire   a VM's TTL ran out (followed by its vm.destroy who=ttl)
//   vm.state    a VM became UNKNOWN, LOST or FAILED, or came back from one of them, or a
//               paused copy was resumed: `from`, `to`, `reason`
//   vm.adopt    a record was made for a VM a node reports, or moved to the node that runs it:
//               `from_node` (empty when the fleet had no record), `node`, `reason`
//   node.cordon, node.uncordon  an operator or a drain cordoned a node or made it a target
//               again: subject the node, `role` the caller's, `reason`
//   vm.network  a running VM's egress policy was replaced on its node: `who`, `role`, and the
//               new policy's shape (`internet`, `allow_rules`, `deny_rules`, `rate_limit_kbit`),
//               never its destinations
//   vm.stop, vm.start, vm.reboot
//               a VM was powered off (its disk kept), booted again, or rebooted on its node:
//               `who`, `role`, `node`, and for vm.reboot `how` (ACPI power-off and boot, or reset)
// Every entry has the VM as subject and its tenant; attributes never hold user_data. Without an
// outbox (no ledger configured) nothing is recorded. Thread-safe; `*outbox` and `*clock` must
// outlive it.

#include <string>

#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "common/ledger_outbox.h"
#include "ppn/fleet/v1/fleet_service.pb.h"

namespace ppn::fleet {

// Who destroyed a VM (or changed its network), for the ledger.
struct Actor {
  std::string who;   // "tenant", "operator", "ttl", "fleet"
  std::string role;  // the caller's certificate role ("tenant-proxy", "operator"); "fleet" for its own
  // Who exactly, when the certificate names a person or tool (an operator's SPIFFE id); empty
  // for the tenant proxy (the proxy's own trail names the tenant's token) and the fleet.
  std::string identity;
  static Actor Tenant() { return {"tenant", "tenant-proxy"}; }
  static Actor Operator() { return {"operator", "operator"}; }
  static Actor Ttl() { return {"ttl", "fleet"}; }
  static Actor Fleet() { return {"fleet", "fleet"}; }
};

class LifecycleLog {
 public:
  LifecycleLog(LedgerOutbox* outbox, Clock* clock) : outbox_(outbox), clock_(clock) {}

  // `settled_by`: "spawn" or "heartbeat".
  void Created(const ppn::fleet::v1::VmRecord& vm, absl::string_view settled_by);
  void Destroyed(const ppn::fleet::v1::VmRecord& vm, const Actor& actor, ppn::types::v1::VmState prior,
                 absl::string_view node_id);
  void Expired(const ppn::fleet::v1::VmRecord& vm);
  void StateChanged(const ppn::fleet::v1::VmRecord& vm, ppn::types::v1::VmState from, ppn::types::v1::VmState to,
                    absl::string_view reason);
  void Adopted(const ppn::fleet::v1::VmRecord& vm, absl::string_view from_node, absl::string_view reason);
  // `vm.spec().egress()` is the policy now in effect.
  void NetworkChanged(const ppn::fleet::v1::VmRecord& vm, const Actor& actor);
  void NodeCordoned(absl::string_view node_id, bool cordoned, absl::string_view reason, absl::string_view role);
  // `kind`: "vm.stop", "vm.start" or "vm.reboot"; `how` only for vm.reboot.
  void PowerChanged(absl::string_view kind, const ppn::fleet::v1::VmRecord& vm, const Actor& actor,
                    absl::string_view how = "");
  // vm.start of a VM booted from its image on `vm.node_id()` because `from_node` is gone
  // (fresh_disk=true, from_node, to_node; node is the new one).
  void StartedElsewhere(const ppn::fleet::v1::VmRecord& vm, const Actor& actor, absl::string_view from_node);

 private:
  ppn::ledger::v1::AppendRequest Entry(absl::string_view kind, const ppn::fleet::v1::VmRecord& vm);
  void Append(const ppn::ledger::v1::AppendRequest& entry);

  LedgerOutbox* const outbox_;
  Clock* const clock_;
};

}  // namespace ppn::fleet
