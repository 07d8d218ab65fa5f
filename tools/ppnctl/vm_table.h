#pragma once

// How `ppnctl vm list` and `vm get` print a tenant's VMs for people: NAME (what get and destroy
// take), STATE without its enum prefix (RUNNING), AGE, and ADDRESS, each forwarded port as
// "127.0.0.1:20300→80/tcp" (the public address when the relay gives one); `-o wide` adds the
// size, image, display name, expiry, the state's message, the generated VM_ID (NAME holds the
// id the tenant chose, when it chose one) and the LABELS. JSON and YAML print the response
// whole instead (output.h). Pure.

#include <string>

#include "absl/time/time.h"
#include "ppn/fleet/v1/fleet_service.pb.h"
#include "ppn/tenancy/v1/tenant_service.pb.h"

namespace ppn::ppnctl {

// "127.0.0.1:20300→80/tcp, 127.0.0.1:20301→53/udp", or "-" without ports.
std::string Addresses(const ppn::tenancy::v1::Vm& vm);

// "42s", "5m", "3h", "2d": how long ago `then` was, seen from `now`; "-" for no time.
std::string ShortAge(absl::Time then, absl::Time now);

// The operator's view across tenants (fleet list-vms, vm list --all-tenants): NAME (the tenant's
// name for it, else its id), TENANT, STATE, AGE, ADDRESS, NODE; -o wide adds the size, image,
// pin, the state's message and the VM_ID.
std::string RenderFleetVms(const ppn::fleet::v1::ListVmsResponse& vms, absl::Time now, bool wide);

// `vm get`'s memory line: "memory: 160 MiB now, balloon target 160 MiB, maximum 512 MiB\n";
// without a reading from its node, its size ("memory: 512 MiB\n").
std::string DescribeMemory(const ppn::tenancy::v1::Vm& vm);

// The table, with a line "more: --page_token=..." when the list goes on (never an empty one).
std::string RenderVms(const ppn::tenancy::v1::ListVmsResponse& vms, absl::Time now, bool wide);

}  // namespace ppn::ppnctl
