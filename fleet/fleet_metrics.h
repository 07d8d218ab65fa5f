#pragma once

// The fleet's Prometheus gauges, computed at each scrape from its registry: VMs by state and
// node, each node's memory and heartbeat age. Labels are node ids and states only.

#include "common/metrics.h"
#include "fleet/fleet_core.h"

namespace ppn::fleet {

// `core` must outlive `registry`'s scrapes (the process's lifetime).
void RegisterFleetMetrics(FleetCore* core, metrics::Registry* registry);

}  // namespace ppn::fleet
