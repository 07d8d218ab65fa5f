#include "tenant_proxy/fleet_client.h"

#include <algorithm>

#include "absl/strings/strip.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/vm_spec.h"

namespace ppn::proxy {

namespace {

// The fleet says "vm X is STATE; ..." or "vm X cannot start: its node N is gone|was revoked;
// ...": the state word and the node's fate may be told, never the node.
absl::Status PowerRefusal(const absl::Status& status, const CallAbout& about) {
  const std::string done = about.power == "stop" ? "stopped" : about.power == "start" ? "started" : "rebooted";
  absl::string_view m = status.message();
  if (absl::StrContains(m, " cannot start: its node ")) {
    if (absl::StrContains(m, "no longer has its disk")) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", about.vm_id, " cannot start: its disk is gone"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", about.vm_id, " cannot start: its host ",
                     absl::StrContains(m, " was revoked") ? "was retired" : "is gone",
                     "; its disk is there and only there: start it once the host is back, destroy it, or start it "
                     "with fresh_disk to boot it on another host from its image (its disk stays behind)"));
  }
  if (absl::StrContains(m, " is pinned to node ")) {
    return absl::FailedPreconditionError(
        absl::StrCat("vm ", about.vm_id, " is pinned to its host by the operator: it cannot start on another host"));
  }
  std::string prefix = absl::StrCat("vm ", about.vm_id, " is ");
  if (absl::ConsumePrefix(&m, prefix)) {
    absl::string_view state = m.substr(0, m.find(';'));
    ppn::types::v1::VmState parsed;
    if (ppn::types::v1::VmState_Parse(absl::StrCat("VM_STATE_", state), &parsed)) {
      return absl::FailedPreconditionError(absl::StrCat("vm ", about.vm_id, " is ", state, "; only a ",
                                                        about.power == "start" ? "stopped" : "running", " VM can be ",
                                                        done));
    }
  }
  return absl::FailedPreconditionError(absl::StrCat("vm ", about.vm_id, " cannot be ", done, " now"));
}

}  // namespace

absl::Status TenantSafeError(const absl::Status& status, absl::string_view shortage, const CallAbout& about) {
  const bool create = about.spec != nullptr;
  switch (status.code()) {
    case absl::StatusCode::kOk: return absl::OkStatus();
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
      if (create) {
        // The only spec problem the fleet finds that the proxy cannot is an image no node
        // offers; anything else the shared validation words, or the plain summary.
        // A network the spec names that is not the tenant's (or not at all): its id, not the fleet's words.
        for (const std::string& net : about.spec->networks()) {
          if (status.code() == absl::StatusCode::kNotFound &&
              status.message() == absl::StrCat("network ", net, " not found")) {
            return absl::NotFoundError(absl::StrCat("network ", net, " not found"));
          }
        }
        if (absl::StrContains(status.message(), "image")) {
          return absl::InvalidArgumentError(absl::StrCat("image ", about.spec->image(), " is not offered"));
        }
        absl::Status own = ValidateVmSpec(*about.spec);
        if (!own.ok()) return own;
        return absl::InvalidArgumentError("the control plane refused this VM spec as invalid");
      }
      if (status.code() == absl::StatusCode::kNotFound && !about.vm_id.empty()) {
        return absl::NotFoundError(absl::StrCat("vm ", about.vm_id, " not found"));
      }
      if (about.network) return absl::InvalidArgumentError("the VM's host refused this egress policy");
      // The fleet parses filters and signs page tokens; its words there quote only the
      // tenant's own filter, so they are the clearest answer there is.
      if (about.list && status.code() == absl::StatusCode::kInvalidArgument &&
          (absl::StartsWith(status.message(), "filter: ") || absl::StartsWith(status.message(), "page_token "))) {
        return absl::InvalidArgumentError(status.message().substr(0, 512));
      }
      return absl::Status(status.code(), "the control plane refused this request as invalid");
    case absl::StatusCode::kAlreadyExists:
      if (create && absl::StrContains(status.message(), "request_id")) {
        return absl::AlreadyExistsError(absl::StrCat("request_id ", about.request_id,
                                                     " was used for a different VM; use a new request_id for "
                                                     "a new VM, or resend the original request"));
      }
      if (create && !about.chosen_id.empty() &&
          status.message() == absl::StrCat("vm ", about.chosen_id, " already exists")) {
        return absl::AlreadyExistsError(absl::StrCat("vm ", about.chosen_id, " already exists"));
      }
      if (create) {
        return absl::AlreadyExistsError(absl::StrCat("a VM named ", about.spec->display_name(), " already exists"));
      }
      return absl::AlreadyExistsError("the VM already exists");
    case absl::StatusCode::kResourceExhausted:
      if (shortage == "disk") {
        return absl::ResourceExhaustedError(
            "no host has disk space for this VM right now; try a smaller disk or later");
      }
      return absl::ResourceExhaustedError("no host has room for this VM right now; try a smaller VM or later");
    case absl::StatusCode::kUnavailable:
      return absl::UnavailableError("the VM's host is unreachable right now; retry later");
    case absl::StatusCode::kFailedPrecondition:
      if (!about.power.empty()) return PowerRefusal(status, about);
      if (about.network) {
        return absl::FailedPreconditionError(absl::StrCat(
            "vm ", about.vm_id, " must be running on a host with network isolation to change its network"));
      }
      return absl::FailedPreconditionError(
          "the VM could not be started (check its image and spec) or is still being created; retry");
    case absl::StatusCode::kCancelled: return absl::CancelledError("the call was cancelled");
    case absl::StatusCode::kAborted:
      if (about.network) {
        return absl::AbortedError(absl::StrCat("vm ", about.vm_id, " moved to another host during the change; retry"));
      }
      [[fallthrough]];
    default:
      return absl::InternalError(absl::StrCat("the control plane failed (", static_cast<int>(status.code()), ")"));
  }
}

absl::Status NetworkSafeError(const absl::Status& status, const std::string& network_id, const std::string& name) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return absl::OkStatus();
    case absl::StatusCode::kNotFound:
      return absl::NotFoundError(absl::StrCat("network ", network_id.substr(0, 64), " not found"));
    case absl::StatusCode::kAlreadyExists:
      return absl::AlreadyExistsError(absl::StrCat("a network named ", name, " already exists"));
    case absl::StatusCode::kInvalidArgument:
      return absl::InvalidArgumentError("name must be 1-63 characters of [a-z0-9-], starting with a letter");
    case absl::StatusCode::kResourceExhausted:
      return absl::ResourceExhaustedError(
          "no private network is left to hand out: delete a network, or ask the operator for a larger pool");
    case absl::StatusCode::kFailedPrecondition: {
      // The fleet names the VMs attached: only the tenant's own VMs can be on its network.
      std::string prefix = absl::StrCat("network ", network_id, " has VMs attached: ");
      absl::string_view vms = status.message();
      if (absl::ConsumePrefix(&vms, prefix) && !vms.empty() && vms.size() < 4096 &&
          std::all_of(vms.begin(), vms.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == ',' || c == ' ';
          })) {
        return absl::FailedPreconditionError(absl::StrCat(prefix, vms));
      }
      return absl::FailedPreconditionError(
          absl::StrCat("network ", network_id, " has VMs attached; destroy them first"));
    }
    case absl::StatusCode::kUnavailable:
      return absl::UnavailableError("the control plane is unreachable right now; retry later");
    case absl::StatusCode::kCancelled: return absl::CancelledError("the call was cancelled");
    default:
      return absl::InternalError(absl::StrCat("the control plane failed (", static_cast<int>(status.code()), ")"));
  }
}

}  // namespace ppn::proxy
