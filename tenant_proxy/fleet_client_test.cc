#include "tenant_proxy/fleet_client.h"

#include "absl/strings/match.h"
#include "catch2/catch.hpp"

namespace ppn::proxy {
namespace {

ppn::types::v1::VmSpec GoodSpec() {
  ppn::types::v1::VmSpec spec;
  spec.set_display_name("web");
  spec.set_vcpus(1);
  spec.set_memory_mib(256);
  spec.set_image("debian-12");
  return spec;
}

CallAbout Create(const ppn::types::v1::VmSpec& spec, std::string request_id = "") {
  CallAbout about;
  about.spec = &spec;
  about.request_id = std::move(request_id);
  return about;
}

// Every word a fleet or agent may say that a tenant must never see.
void CheckSafe(const absl::Status& s) {
  for (const char* secret : {"laptop", "node", "/var", "qemu", "QEMU", "hostile", "catalog", "have:"}) {
    INFO(s.message());
    CHECK(s.message().find(secret) == absl::string_view::npos);
  }
}

TEST_CASE("a fleet error never carries node names paths or other images to a tenant", "[proxy][fleet_client]") {
  auto spec = GoodSpec();
  const absl::Status leaks[] = {
      absl::InvalidArgumentError("spawn on laptop-a failed: image \"debian-12\" is not in this node's catalog (have: "
                                 "hostile-guest, ppn-test-guest)"),
      absl::NotFoundError("spawn on laptop-a failed: image \"debian-12\" is not in this node's catalog"),
      absl::FailedPreconditionError("spawn on laptop-b failed: qemu exited: /var/lib/ppn/vms/x: Permission denied"),
      absl::ResourceExhaustedError("laptop-a: 512 MiB free < 1024 MiB; laptop-b: draining"),
      absl::UnavailableError("spawn on laptop-a failed: connection refused"),
      absl::InternalError("store /var/lib/ppn/fleet.db is locked"),
      absl::DeadlineExceededError("laptop-a did not answer"),
      absl::AlreadyExistsError("vm x already exists on node laptop-b"),
  };
  for (const absl::Status& leak : leaks) {
    absl::Status safe = TenantSafeError(leak, "", Create(spec));
    CHECK_FALSE(safe.ok());
    CheckSafe(safe);
    CheckSafe(TenantSafeError(leak, "memory", CallAbout{"vm-1"}));
  }
}

TEST_CASE("an image the fleet cannot place is not offered in the tenant's own words", "[proxy][fleet_client]") {
  auto spec = GoodSpec();
  for (const absl::Status& s : {absl::InvalidArgumentError("image debian-12 is not offered"),
                                absl::NotFoundError("spawn on laptop-a failed: image \"debian-12\" is not in this "
                                                    "node's catalog (have: hostile-guest)")}) {
    absl::Status safe = TenantSafeError(s, "", Create(spec));
    CHECK(safe.code() == absl::StatusCode::kInvalidArgument);
    CHECK(safe.message() == "image debian-12 is not offered");
  }
  absl::Status other = TenantSafeError(absl::InvalidArgumentError("something on laptop-a"), "", Create(spec));
  CHECK(other.code() == absl::StatusCode::kInvalidArgument);
  CHECK(other.message() == "the control plane refused this VM spec as invalid");
}

TEST_CASE("a disk shortage says so and any other shortage keeps the memory wording", "[proxy][fleet_client]") {
  auto spec = GoodSpec();
  absl::Status full = absl::ResourceExhaustedError("laptop-a: 3 MiB of disk available");
  absl::Status disk = TenantSafeError(full, "disk", Create(spec));
  CHECK(disk.code() == absl::StatusCode::kResourceExhausted);
  CHECK(disk.message() == "no host has disk space for this VM right now; try a smaller disk or later");
  for (const char* shortage : {"memory", "nodes", "", "whatever"}) {
    absl::Status s = TenantSafeError(full, shortage, Create(spec));
    CHECK(s.code() == absl::StatusCode::kResourceExhausted);
    CHECK(s.message() == "no host has room for this VM right now; try a smaller VM or later");
  }
}

TEST_CASE("a reused request_id and a taken name are told apart in plain words", "[proxy][fleet_client]") {
  auto spec = GoodSpec();
  absl::Status reused =
      TenantSafeError(absl::AlreadyExistsError("request_id r-1 was used for a different VM"), "", Create(spec, "r-1"));
  CHECK(reused.code() == absl::StatusCode::kAlreadyExists);
  CHECK(reused.message() ==
        "request_id r-1 was used for a different VM; use a new request_id for a new VM, or resend the original "
        "request");
  absl::Status taken =
      TenantSafeError(absl::AlreadyExistsError("a VM named web already exists"), "", Create(spec, "r-1"));
  CHECK(taken.message() == "a VM named web already exists");
}

TEST_CASE("a missing VM is not found with the same words whoever owns it", "[proxy][fleet_client]") {
  for (const absl::Status& s :
       {absl::NotFoundError("vm vm-1 not found"), absl::NotFoundError("vm vm-1 is not on node laptop-a")}) {
    absl::Status safe = TenantSafeError(s, "", CallAbout{"vm-1"});
    CHECK(safe.code() == absl::StatusCode::kNotFound);
    CHECK(safe.message() == "vm vm-1 not found");
  }
}

TEST_CASE("a refused network change is told in the terms of a network change", "[proxy][fleet_client][egress]") {
  CallAbout about{"vm-1"};
  about.network = true;
  absl::Status stopped =
      TenantSafeError(absl::FailedPreconditionError("vm vm-1 is STOPPED on node laptop-a"), "", about);
  CHECK(stopped.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(stopped.message() == "vm vm-1 must be running on a host with network isolation to change its network");
  absl::Status moved = TenantSafeError(absl::AbortedError("vm vm-1 moved from laptop-a to laptop-b"), "", about);
  CHECK(moved.code() == absl::StatusCode::kAborted);
  CHECK(moved.message() == "vm vm-1 moved to another host during the change; retry");
  absl::Status refused = TenantSafeError(absl::InvalidArgumentError("nft on laptop-a: syntax error"), "", about);
  CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
  CHECK(refused.message() == "the VM's host refused this egress policy");
  CHECK(TenantSafeError(absl::NotFoundError("vm vm-1 is not on node laptop-a"), "", about).message() ==
        "vm vm-1 not found");
  for (const absl::Status& s : {stopped, moved, refused}) CheckSafe(s);
}

TEST_CASE("a start refused or moved because its host is gone is told without the host's name",
          "[proxy][fleet_client][power]") {
  CallAbout about{"vm-1"};
  about.power = "start";
  absl::Status gone = TenantSafeError(
      absl::FailedPreconditionError(
          "vm vm-1 cannot start: its node laptop-a is gone; its disk is there, nowhere else: start it once the node "
          "is back, destroy it, or start it with fresh_disk to boot it on another node from its image (its disk "
          "stays behind)"),
      "", about);
  CHECK(gone.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(gone.message() ==
        "vm vm-1 cannot start: its host is gone; its disk is there and only there: start it once the host is back, "
        "destroy it, or start it with fresh_disk to boot it on another host from its image (its disk stays behind)");
  absl::Status retired = TenantSafeError(
      absl::FailedPreconditionError("vm vm-1 cannot start: its node laptop-a was revoked; its disk is there"), "",
      about);
  CHECK(absl::StartsWith(retired.message(), "vm vm-1 cannot start: its host was retired; "));
  absl::Status pinned = TenantSafeError(
      absl::FailedPreconditionError("vm vm-1 is pinned to node laptop-a; unpin it to start it on another node"), "",
      about);
  CHECK(pinned.message() == "vm vm-1 is pinned to its host by the operator: it cannot start on another host");
  absl::Status full = TenantSafeError(
      absl::ResourceExhaustedError("no node can take the VM: laptop-b: needs 256 MiB, has 100"), "memory", about);
  CHECK(full.code() == absl::StatusCode::kResourceExhausted);
  absl::Status unanswered = TenantSafeError(
      absl::UnavailableError("node laptop-b did not answer the spawn of vm vm-1; it stays PENDING there"), "", about);
  CHECK(unanswered.code() == absl::StatusCode::kUnavailable);
  absl::Status failed =
      TenantSafeError(absl::InternalError("spawn on laptop-b failed: qemu: /var/lib/ppn: boom"), "", about);
  for (const absl::Status& s : {gone, retired, pinned, full, unanswered, failed}) CheckSafe(s);
}

TEST_CASE("codes keep their meaning across the mapping", "[proxy][fleet_client]") {
  auto spec = GoodSpec();
  CHECK(TenantSafeError(absl::OkStatus(), "", Create(spec)).ok());
  CHECK(TenantSafeError(absl::UnavailableError("x"), "", CallAbout{"vm-1"}).code() == absl::StatusCode::kUnavailable);
  CHECK(TenantSafeError(absl::FailedPreconditionError("x"), "", CallAbout{"vm-1"}).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(TenantSafeError(absl::CancelledError("x"), "", CallAbout{"vm-1"}).code() == absl::StatusCode::kCancelled);
  absl::Status internal = TenantSafeError(absl::PermissionDeniedError("role fleet may not"), "", CallAbout{});
  CHECK(internal.code() == absl::StatusCode::kInternal);
  CHECK(internal.message() == "the control plane failed (7)");
}

}  // namespace
}  // namespace ppn::proxy
