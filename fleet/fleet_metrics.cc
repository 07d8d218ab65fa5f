#include "fleet/fleet_metrics.h"

#include <map>

#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"

namespace ppn::fleet {

void RegisterFleetMetrics(FleetCore* core, metrics::Registry* registry) {
  registry->AddCollector([core](metrics::Snapshot& s) {
    for (const ppn::fleet::v1::Node& n : core->ListNodes()) {
      const std::string& id = n.node_id();
      s.Gauge("ppn_fleet_node_up", "1 if the node is alive, by its state.",
              {{"node", id}, {"state", ppn::fleet::v1::NodeState_Name(n.state())}},
              n.state() == ppn::fleet::v1::NODE_STATE_ALIVE ? 1 : 0);
      for (const auto& [kind, mib] : {std::pair<const char*, uint64_t>{"total", n.total_memory_mib()},
                                      {"available", n.available_memory_mib()},
                                      {"reserved", n.reserved_memory_mib()}}) {
        s.Gauge("ppn_fleet_node_memory_bytes", "A node's memory as it last reported, and what creates hold.",
                {{"node", id}, {"kind", kind}}, static_cast<double>(mib) * 1024 * 1024);
      }
      if (n.has_last_heartbeat_time()) {
        absl::Time last =
            absl::FromUnixMicros(google::protobuf::util::TimeUtil::TimestampToMicroseconds(n.last_heartbeat_time()));
        s.Gauge("ppn_fleet_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat.", {{"node", id}},
                absl::ToDoubleSeconds(absl::Now() - last));
      }
    }
    std::map<std::pair<std::string, std::string>, int> vms;  // (state, node) -> count
    ppn::fleet::v1::ListVmsRequest request;
    request.set_page_size(1000);
    for (int page = 0; page < 100; ++page) {  // bounded: 100,000 VMs
      absl::StatusOr<ppn::fleet::v1::ListVmsResponse> listed = core->ListVms(Scope{}, request);
      if (!listed.ok()) break;
      for (const auto& vm : listed->vms()) ++vms[{ppn::types::v1::VmState_Name(vm.state()), vm.node_id()}];
      if (listed->next_page_token().empty()) break;
      request.set_page_token(listed->next_page_token());
    }
    for (const auto& [key, count] : vms) {
      s.Gauge("ppn_fleet_vms", "VMs in the registry by state and node (DESTROYED ones are not listed).",
              {{"state", key.first}, {"node", key.second}}, count);
    }
  });
}

}  // namespace ppn::fleet
