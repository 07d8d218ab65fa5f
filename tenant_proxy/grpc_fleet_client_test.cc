#include "tenant_proxy/grpc_fleet_client.h"

#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "tenant_proxy/testing/fake_fleet_service.h"

namespace ppn::proxy {
namespace {

using testing::FakeFleetService;

struct Fixture {
  FakeFleetService fake;
  testing::InProcessFleet fleet = testing::StartInProcess(&fake);
  std::unique_ptr<ppn::fleet::v1::FleetService::Stub> stub = ppn::fleet::v1::FleetService::NewStub(fleet.channel);
  GrpcFleetClient client{stub.get(), absl::Seconds(30)};
  ~Fixture() { fleet.server->Shutdown(); }
};

ppn::fleet::v1::CreateVmRequest CreateRequest(const std::string& request_id = "") {
  ppn::fleet::v1::CreateVmRequest req;
  req.mutable_spec()->set_display_name("web");
  req.mutable_spec()->set_vcpus(1);
  req.mutable_spec()->set_memory_mib(256);
  req.mutable_spec()->set_image("debian-12");
  req.set_request_id(request_id);
  return req;
}

// Collects one stream, asking for each next message as soon as one arrives.
class Collector final : public FleetWatchObserver {
 public:
  FleetWatch* watch = nullptr;
  void OnWatchMessage(const ppn::fleet::v1::WatchVmResponse& m) override {
    {
      absl::MutexLock l(&mu);
      states.push_back(m.vm().state());
    }
    watch->ReadNext();
  }
  void OnWatchDone(const absl::Status& s) override {
    status = s;
    done.Notify();
  }
  size_t Received() {
    absl::MutexLock l(&mu);
    return states.size();
  }
  // Waits up to 10 s until `n` messages have arrived.
  bool WaitFor(size_t n) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (Received() < n && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    return Received() >= n;
  }

  absl::Mutex mu;
  std::vector<ppn::types::v1::VmState> states;
  absl::Status status;
  absl::Notification done;
};

TEST_CASE("every fleet call carries the tenant and the client's deadline", "[proxy][fleet_client]") {
  Fixture f;
  auto created = f.client.CreateVm(TenantId("acme"), CreateRequest("r-1"));
  REQUIRE(created.ok());
  CHECK(created->vm().tenant_id() == "acme");
  CHECK(f.client.GetVm(TenantId("acme"), VmId(created->vm().vm_id())).ok());
  CHECK(f.client.ListVms(TenantId("acme"), {})->vms_size() == 1);
  CHECK(f.client.DestroyVm(TenantId("acme"), VmId(created->vm().vm_id()))->state() ==
        ppn::types::v1::VM_STATE_DESTROYED);
  auto seen = f.fake.seen();
  REQUIRE(seen.size() == 4);
  for (const auto& call : seen) {
    INFO(call.rpc);
    CHECK(call.tenant == "acme");
    CHECK(call.deadline_left > absl::Seconds(20));
    CHECK(call.deadline_left <= absl::Seconds(31));
  }
  CHECK(seen[0].request_id == "r-1");
}

TEST_CASE("a replayed create comes back marked as such", "[proxy][fleet_client]") {
  Fixture f;
  auto first = f.client.CreateVm(TenantId("acme"), CreateRequest("r-1"));
  auto again = f.client.CreateVm(TenantId("acme"), CreateRequest("r-1"));
  REQUIRE(again.ok());
  CHECK_FALSE(first->replayed());
  CHECK(again->replayed());
  CHECK(again->vm().vm_id() == first->vm().vm_id());
}

TEST_CASE("the fleet's disk shortage trailer becomes the disk wording", "[proxy][fleet_client]") {
  Fixture f;
  f.fake.FailNext(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "laptop-a: 3 MiB of disk available"),
                  {{"ppn-shortage", "disk"}});
  auto disk = f.client.CreateVm(TenantId("acme"), CreateRequest());
  CHECK(disk.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(disk.status().message() == "no host has disk space for this VM right now; try a smaller disk or later");

  f.fake.FailNext(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "laptop-a: 5 MiB free"),
                  {{"ppn-shortage", "memory"}});
  auto memory = f.client.CreateVm(TenantId("acme"), CreateRequest());
  CHECK(memory.status().message() == "no host has room for this VM right now; try a smaller VM or later");
}

TEST_CASE("fleet errors reach the caller tenant-safe", "[proxy][fleet_client]") {
  Fixture f;
  auto missing = f.client.GetVm(TenantId("acme"), VmId("vm-9"));
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(missing.status().message() == "vm vm-9 not found");  // not "... on node x"
  f.fake.FailNext(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "qemu on laptop-a: /var/lib/x denied"));
  auto failed = f.client.CreateVm(TenantId("acme"), CreateRequest());
  CHECK(failed.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(failed.status().message().find("laptop") == absl::string_view::npos);
}

TEST_CASE("a network change carries the tenant and the policy and is not found for another tenant",
          "[proxy][fleet_client][egress]") {
  Fixture f;
  auto vm = *f.client.CreateVm(TenantId("acme"), CreateRequest());
  ppn::types::v1::EgressPolicy egress;
  egress.set_internet(ppn::types::v1::INTERNET_ACCESS_DENIED);
  egress.set_rate_limit_kbit(700);
  auto updated = f.client.UpdateVmNetwork(TenantId("acme"), VmId(vm.vm().vm_id()), egress);
  REQUIRE(updated.ok());
  CHECK(updated->spec().egress().rate_limit_kbit() == 700);
  CHECK(f.fake.seen().back().rpc == "UpdateVmNetwork");
  CHECK(f.fake.seen().back().tenant == "acme");
  CHECK(f.fake.seen().back().deadline_left <= absl::Seconds(31));
  auto theirs = f.client.UpdateVmNetwork(TenantId("globex"), VmId(vm.vm().vm_id()), egress);
  CHECK(theirs.status().code() == absl::StatusCode::kNotFound);
  CHECK(theirs.status().message() == "vm " + vm.vm().vm_id() + " not found");  // not "... on node x"
  f.fake.FailNext(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "laptop-a runs guests without isolation"));
  auto stopped = f.client.UpdateVmNetwork(TenantId("acme"), VmId(vm.vm().vm_id()), egress);
  CHECK(stopped.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(stopped.status().message() ==
        "vm " + vm.vm().vm_id() + " must be running on a host with network isolation to change its network");
}

TEST_CASE("a watch relays each state when asked and ends when the VM is destroyed", "[proxy][fleet_client]") {
  Fixture f;
  auto vm = *f.client.CreateVm(TenantId("acme"), CreateRequest());
  Collector c;
  auto watch = f.client.WatchVm(TenantId("acme"), VmId(vm.vm().vm_id()), &c);
  c.watch = watch.get();
  watch->Start();
  REQUIRE(c.WaitFor(1));
  REQUIRE(f.client.DestroyVm(TenantId("acme"), VmId(vm.vm().vm_id())).ok());
  REQUIRE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(c.status.ok());
  absl::MutexLock l(&c.mu);
  CHECK(c.states ==
        std::vector<ppn::types::v1::VmState>{ppn::types::v1::VM_STATE_RUNNING, ppn::types::v1::VM_STATE_DESTROYED});
}

TEST_CASE("a watch of another tenant's VM ends not found", "[proxy][fleet_client]") {
  Fixture f;
  auto vm = *f.client.CreateVm(TenantId("acme"), CreateRequest());
  Collector c;
  auto watch = f.client.WatchVm(TenantId("globex"), VmId(vm.vm().vm_id()), &c);
  c.watch = watch.get();
  watch->Start();
  REQUIRE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(c.status.code() == absl::StatusCode::kNotFound);
  CHECK(c.status.message() == "vm " + vm.vm().vm_id() + " not found");
}

TEST_CASE("cancelling a watch ends the fleet's stream", "[proxy][fleet_client]") {
  Fixture f;
  auto vm = *f.client.CreateVm(TenantId("acme"), CreateRequest());
  Collector c;
  auto watch = f.client.WatchVm(TenantId("acme"), VmId(vm.vm().vm_id()), &c);
  c.watch = watch.get();
  watch->Start();
  REQUIRE(c.WaitFor(1));
  CHECK(f.fake.open_watches() == 1);
  watch->Cancel();
  REQUIRE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  CHECK(c.status.code() == absl::StatusCode::kCancelled);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (f.fake.open_watches() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  CHECK(f.fake.open_watches() == 0);
  CHECK(f.fake.cancelled_watches() == 1);
}

}  // namespace
}  // namespace ppn::proxy
