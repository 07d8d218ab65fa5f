#pragma once

// FakeFleetClient: an in-memory fleet for the proxy's unit tests. It creates VMs at once
// (RUNNING), replays a create whose request_id the tenant used before (`replayed`), refuses
// the same request_id with another spec and a taken display name (ALREADY_EXISTS), pages its
// listing by vm_id, changes a running VM's egress policy (and records each change), and
// streams WatchVm from the test's thread without holding a thread.
// Errors are already tenant-safe, as FleetClient's are. Thread-safe.

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/message_differencer.h"
#include "tenant_proxy/fleet_client.h"

namespace ppn::proxy::testing {

class FakeFleetClient final : public FleetClient {
 public:
  ~FakeFleetClient() override = default;

  // The next CreateVm that would create a VM fails with `status` instead.
  void FailNextCreate(absl::Status status) {
    absl::MutexLock l(&mu_);
    fail_next_create_ = std::move(status);
  }
  // Runs inside every CreateVm, after the VM exists, before the answer (e.g. to crash).
  void OnCreate(std::function<void(const ppn::fleet::v1::VmRecord&)> hook) {
    absl::MutexLock l(&mu_);
    on_create_ = std::move(hook);
  }
  // Answer the fleet gave before `replayed` existed: a replay looks like a plain create.
  void SetReportsReplayed(bool reports) {
    absl::MutexLock l(&mu_);
    reports_replayed_ = reports;
  }
  int creates() {
    absl::MutexLock l(&mu_);
    return creates_;
  }
  // "stop vm-1", "start vm-1", "reboot vm-1": each power call that changed a VM.
  std::vector<std::string> power_calls() {
    absl::MutexLock l(&mu_);
    return power_calls_;
  }
  int destroys() {
    absl::MutexLock l(&mu_);
    return destroys_;
  }
  // VMs not DESTROYED, of every tenant.
  int live_vms() {
    absl::MutexLock l(&mu_);
    int n = 0;
    for (const auto& [id, vm] : vms_) n += vm.state() != ppn::types::v1::VM_STATE_DESTROYED;
    return n;
  }
  // Streams started and not yet ended / cancelled by the proxy so far.
  int open_watches() {
    absl::MutexLock l(&mu_);
    return static_cast<int>(streams_.size());
  }
  int cancelled_watches() {
    absl::MutexLock l(&mu_);
    return cancelled_;
  }
  // Every policy UpdateVmNetwork forwarded, by VM, in order.
  std::vector<std::pair<std::string, ppn::types::v1::EgressPolicy>> network_updates() {
    absl::MutexLock l(&mu_);
    return network_updates_;
  }
  // The spec of every CreateVm that created a VM, in order.
  std::vector<ppn::types::v1::VmSpec> created_specs() {
    absl::MutexLock l(&mu_);
    return created_specs_;
  }
  // Adds a record as if another call had made it.
  void Put(ppn::fleet::v1::VmRecord record) {
    absl::MutexLock l(&mu_);
    vms_[record.vm_id()] = std::move(record);
  }

  absl::StatusOr<ppn::fleet::v1::CreateVmResponse> CreateVm(const TenantId& tenant,
                                                            const ppn::fleet::v1::CreateVmRequest& request) override {
    std::function<void(const ppn::fleet::v1::VmRecord&)> hook;
    ppn::fleet::v1::CreateVmResponse response;
    std::optional<absl::Status> fail;
    {
      absl::MutexLock l(&mu_);
      ++creates_;
      for (const auto& [id, vm] : vms_) {
        if (vm.tenant_id() != tenant.value()) continue;
        if (!request.request_id().empty() && vm.request_id() == request.request_id()) {
          if (!google::protobuf::util::MessageDifferencer::Equals(vm.spec(), request.spec())) {
            return absl::AlreadyExistsError(absl::StrCat("request_id ", request.request_id(),
                                                         " was used for a different VM; use a new request_id for "
                                                         "a new VM, or resend the original request"));
          }
          *response.mutable_vm() = vm;
          response.set_replayed(reports_replayed_);
          return response;
        }
        if (vm.state() != ppn::types::v1::VM_STATE_DESTROYED &&
            vm.spec().display_name() == request.spec().display_name()) {
          return absl::AlreadyExistsError(
              absl::StrCat("a VM named ", request.spec().display_name(), " already exists"));
        }
      }
      fail.swap(fail_next_create_);
      if (!fail.has_value()) {
        ppn::fleet::v1::VmRecord& r = vms_[absl::StrCat("vm-", ++next_id_)];
        r.set_vm_id(absl::StrCat("vm-", next_id_));
        r.set_tenant_id(tenant.value());
        r.set_node_id("secret-node-7");
        *r.mutable_spec() = request.spec();
        r.set_state(ppn::types::v1::VM_STATE_RUNNING);
        r.set_request_id(request.request_id());
        r.set_name(request.vm_id());
        *response.mutable_vm() = r;
        created_specs_.push_back(request.spec());
      }
      hook = on_create_;
    }
    if (fail.has_value()) return *fail;
    if (hook) hook(response.vm());
    return response;
  }

  absl::StatusOr<ppn::fleet::v1::VmRecord> GetVm(const TenantId& tenant, const VmId& vm_id) override {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id.value());
    if (it != vms_.end() && it->second.tenant_id() == tenant.value()) return it->second;
    for (const auto& [id, vm] : vms_) {  // a name the tenant chose
      if (vm.tenant_id() == tenant.value() && !vm.name().empty() && vm.name() == vm_id.value()) return vm;
    }
    return NotFound(vm_id);
  }
  // The last ListVms request, as the proxy forwarded it.
  ppn::fleet::v1::ListVmsRequest last_list() {
    absl::MutexLock l(&mu_);
    return last_list_;
  }

  absl::StatusOr<ppn::fleet::v1::ListVmsResponse> ListVms(const TenantId& tenant,
                                                          const ppn::fleet::v1::ListVmsRequest& request) override {
    absl::MutexLock l(&mu_);
    last_list_ = request;
    int limit = request.page_size() == 0 ? 100 : request.page_size();
    ppn::fleet::v1::ListVmsResponse out;
    auto it = request.page_token().empty() ? vms_.begin() : vms_.upper_bound(request.page_token());
    for (; it != vms_.end(); ++it) {
      const auto& vm = it->second;
      if (vm.tenant_id() != tenant.value() || vm.state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
      if (out.vms_size() == limit) {
        out.set_next_page_token(out.vms(out.vms_size() - 1).vm_id());
        break;
      }
      *out.add_vms() = vm;
    }
    return out;
  }

  absl::StatusOr<ppn::fleet::v1::VmRecord> DestroyVm(const TenantId& tenant, const VmId& vm_id) override {
    std::vector<std::shared_ptr<Stream>> watching;
    ppn::fleet::v1::VmRecord stopped;
    {
      absl::MutexLock l(&mu_);
      ++destroys_;
      auto it = vms_.find(vm_id.value());
      if (it == vms_.end() || it->second.tenant_id() != tenant.value()) return NotFound(vm_id);
      it->second.set_state(ppn::types::v1::VM_STATE_DESTROYED);
      stopped = it->second;
      for (auto wit = streams_.begin(); wit != streams_.end();) {
        if (wit->second->vm_id == vm_id.value()) {
          watching.push_back(wit->second);
          wit = streams_.erase(wit);
        } else {
          ++wit;
        }
      }
    }
    // Its last state, then the end of each of its streams.
    for (auto& stream : watching) stream->End(stopped, absl::OkStatus());
    return stopped;
  }

  // As the fleet: NOT_FOUND for another tenant's VM, FAILED_PRECONDITION unless it runs.
  absl::StatusOr<ppn::fleet::v1::VmRecord> UpdateVmNetwork(const TenantId& tenant, const VmId& vm_id,
                                                           const ppn::types::v1::EgressPolicy& egress) override {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id.value());
    if (it == vms_.end() || it->second.tenant_id() != tenant.value()) return NotFound(vm_id);
    if (it->second.state() != ppn::types::v1::VM_STATE_RUNNING) {
      return absl::FailedPreconditionError(absl::StrCat(
          "vm ", vm_id.value(), " must be running on a host with network isolation to change its network"));
    }
    network_updates_.emplace_back(vm_id.value(), egress);
    *it->second.mutable_spec()->mutable_egress() = egress;
    return it->second;
  }

  // Power as the fleet words it: NOT_FOUND for another tenant's VM, "vm X is STATE; ..." for a
  // VM in the wrong state.
  absl::StatusOr<ppn::fleet::v1::VmRecord> StopVm(const TenantId& tenant, const VmId& vm_id, absl::Duration) override {
    return Power(tenant, vm_id, "stop", {ppn::types::v1::VM_STATE_RUNNING, ppn::types::v1::VM_STATE_STARTING},
                 ppn::types::v1::VM_STATE_STOPPED);
  }
  absl::StatusOr<ppn::fleet::v1::VmRecord> StartVm(const TenantId& tenant, const VmId& vm_id,
                                                   bool fresh_disk) override {
    {
      absl::MutexLock l(&mu_);
      last_start_fresh_disk_ = fresh_disk;
    }
    return Power(tenant, vm_id, "start", {ppn::types::v1::VM_STATE_STOPPED}, ppn::types::v1::VM_STATE_STARTING);
  }
  // The fresh_disk of the last StartVm.
  bool last_start_fresh_disk() {
    absl::MutexLock l(&mu_);
    return last_start_fresh_disk_;
  }
  absl::StatusOr<ppn::fleet::v1::VmRecord> RebootVm(const TenantId& tenant, const VmId& vm_id, absl::Duration,
                                                    std::string* how) override {
    *how = "the guest powered off (ACPI) and booted again";
    return Power(tenant, vm_id, "reboot", {ppn::types::v1::VM_STATE_RUNNING, ppn::types::v1::VM_STATE_STARTING},
                 ppn::types::v1::VM_STATE_STARTING);
  }
  absl::StatusOr<ppn::fleet::v1::GetConsoleOutputResponse> GetConsoleOutput(const TenantId& tenant, const VmId& vm_id,
                                                                            uint64_t offset,
                                                                            uint32_t max_bytes) override {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id.value());
    if (it == vms_.end() || it->second.tenant_id() != tenant.value()) return NotFound(vm_id);
    const std::string& log = consoles_[vm_id.value()];
    ppn::fleet::v1::GetConsoleOutputResponse r;
    uint64_t from = std::min<uint64_t>(offset, log.size());
    r.set_data(log.substr(from, max_bytes == 0 ? 65536 : max_bytes));
    r.set_next_offset(from + r.data().size());
    return r;
  }
  // What vm_id's console holds.
  void SetConsole(const std::string& vm_id, std::string log) {
    absl::MutexLock l(&mu_);
    consoles_[vm_id] = std::move(log);
  }

  // Networks as the fleet keeps them: a /24 each of 10.214.0.0/16, by tenant.
  absl::StatusOr<ppn::types::v1::Network> CreateNetwork(const TenantId& tenant, const std::string& name) override {
    absl::MutexLock l(&mu_);
    for (const auto& [id, n] : networks_) {
      if (n.first == tenant.value() && n.second.name() == name) {
        return absl::AlreadyExistsError(absl::StrCat("a network named ", name, " already exists"));
      }
    }
    ppn::types::v1::Network n;
    n.set_network_id(absl::StrCat("net-", ++network_seq_));
    n.set_name(name);
    n.set_cidr(absl::StrCat("10.214.", network_seq_, ".0/24"));
    networks_[n.network_id()] = {tenant.value(), n};
    return n;
  }
  absl::StatusOr<ppn::types::v1::Network> GetNetwork(const TenantId& tenant, const std::string& network_id) override {
    absl::MutexLock l(&mu_);
    auto it = networks_.find(network_id);
    if (it == networks_.end() || it->second.first != tenant.value()) {
      return absl::NotFoundError(absl::StrCat("network ", network_id, " not found"));
    }
    return it->second.second;
  }
  absl::StatusOr<std::vector<ppn::types::v1::Network>> ListNetworks(const TenantId& tenant) override {
    absl::MutexLock l(&mu_);
    std::vector<ppn::types::v1::Network> out;
    for (const auto& [id, n] : networks_) {
      if (n.first == tenant.value()) out.push_back(n.second);
    }
    return out;
  }
  absl::Status DeleteNetwork(const TenantId& tenant, const std::string& network_id) override {
    absl::MutexLock l(&mu_);
    auto it = networks_.find(network_id);
    if (it == networks_.end() || it->second.first != tenant.value()) {
      return absl::NotFoundError(absl::StrCat("network ", network_id, " not found"));
    }
    for (const auto& [id, vm] : vms_) {
      if (vm.state() == ppn::types::v1::VM_STATE_DESTROYED) continue;
      for (const std::string& net : vm.spec().networks()) {
        if (net == network_id) {
          return absl::FailedPreconditionError(absl::StrCat("network ", network_id, " has VMs attached: ", id));
        }
      }
    }
    networks_.erase(it);
    return absl::OkStatus();
  }

  std::unique_ptr<FleetWatch> WatchVm(const TenantId& tenant, const VmId& vm_id,
                                      FleetWatchObserver* observer) override {
    return std::make_unique<Watch>(this, tenant.value(), vm_id.value(), observer);
  }

 private:
  // One stream's state, shared by its Watch and the client (which may still be delivering
  // the end after the proxy destroyed the Watch). Messages queue until the observer asks;
  // delivery runs on whichever thread made one possible, one at a time, never under a lock.
  struct Stream {
    Stream(std::string vm, FleetWatchObserver* o) : vm_id(std::move(vm)), observer(o) {}
    const std::string vm_id;
    FleetWatchObserver* const observer;
    absl::Mutex mu;
    std::deque<ppn::fleet::v1::WatchVmResponse> queue ABSL_GUARDED_BY(mu);
    std::optional<absl::Status> end ABSL_GUARDED_BY(mu);
    bool wanted ABSL_GUARDED_BY(mu) = false;
    bool delivering ABSL_GUARDED_BY(mu) = false;
    bool done_sent ABSL_GUARDED_BY(mu) = false;

    void Want() {
      {
        absl::MutexLock l(&mu);
        wanted = true;
      }
      Pump();
    }
    // Queues `last` (unless it has no VM) and ends with `status`, unless already ended.
    void End(const ppn::fleet::v1::VmRecord& last, absl::Status status) {
      {
        absl::MutexLock l(&mu);
        if (end.has_value()) return;
        if (!last.vm_id().empty()) {
          ppn::fleet::v1::WatchVmResponse m;
          *m.mutable_vm() = last;
          queue.push_back(std::move(m));
        }
        if (status.code() == absl::StatusCode::kCancelled) queue.clear();
        end = std::move(status);
      }
      Pump();
    }
    void Pump() {
      for (;;) {
        ppn::fleet::v1::WatchVmResponse message;
        absl::Status ended;
        {
          absl::MutexLock l(&mu);
          if (delivering || done_sent) return;
          if (wanted && !queue.empty()) {
            message = std::move(queue.front());
            queue.pop_front();
            wanted = false;
            delivering = true;
          } else if (end.has_value() && queue.empty()) {
            done_sent = true;
            ended = *end;
          } else {
            return;
          }
        }
        if (!message.has_vm()) {
          observer->OnWatchDone(ended);  // the observer may go away now: nothing after
          return;
        }
        observer->OnWatchMessage(message);
        absl::MutexLock l(&mu);
        delivering = false;
      }
    }
  };

  class Watch final : public FleetWatch {
   public:
    Watch(FakeFleetClient* fleet, std::string tenant, std::string vm_id, FleetWatchObserver* observer)
        : fleet_(fleet), tenant_(std::move(tenant)), stream_(std::make_shared<Stream>(std::move(vm_id), observer)) {}
    ~Watch() override {
      absl::MutexLock l(&fleet_->mu_);
      fleet_->streams_.erase(this);
    }
    // Each call holds its own reference to the stream: the observer may destroy this Watch
    // from inside OnWatchDone.
    void Start() override {
      std::shared_ptr<Stream> stream = stream_;
      ppn::fleet::v1::VmRecord current;
      bool found = false;
      {
        absl::MutexLock l(&fleet_->mu_);
        auto it = fleet_->vms_.find(stream->vm_id);
        found = it != fleet_->vms_.end() && it->second.tenant_id() == tenant_;
        if (found) current = it->second;
        if (found && current.state() != ppn::types::v1::VM_STATE_DESTROYED) fleet_->streams_[this] = stream;
        absl::MutexLock w(&stream->mu);
        stream->wanted = true;
        if (found) {
          ppn::fleet::v1::WatchVmResponse m;
          *m.mutable_vm() = current;
          stream->queue.push_back(std::move(m));
        }
      }
      if (!found) {
        stream->End({}, NotFound(VmId(stream->vm_id)));
      } else if (current.state() == ppn::types::v1::VM_STATE_DESTROYED) {
        stream->End({}, absl::OkStatus());
      } else {
        stream->Pump();
      }
    }
    void ReadNext() override {
      std::shared_ptr<Stream> stream = stream_;
      stream->Want();
    }
    void Cancel() override {
      std::shared_ptr<Stream> stream = stream_;
      {
        absl::MutexLock l(&fleet_->mu_);
        if (fleet_->streams_.erase(this) == 0) return;  // not started, or already ended
        ++fleet_->cancelled_;
      }
      stream->End({}, absl::CancelledError("the call was cancelled"));
    }

   private:
    FakeFleetClient* const fleet_;
    const std::string tenant_;
    const std::shared_ptr<Stream> stream_;
  };

  static absl::Status NotFound(const VmId& vm_id) {
    return absl::NotFoundError(absl::StrCat("vm ", vm_id.value(), " not found"));
  }

  absl::StatusOr<ppn::fleet::v1::VmRecord> Power(const TenantId& tenant, const VmId& vm_id, const std::string& op,
                                                 std::set<ppn::types::v1::VmState> from, ppn::types::v1::VmState to) {
    absl::MutexLock l(&mu_);
    auto it = vms_.find(vm_id.value());
    if (it == vms_.end() || it->second.tenant_id() != tenant.value()) return NotFound(vm_id);
    if (from.count(it->second.state()) == 0 && it->second.state() != to) {
      return absl::FailedPreconditionError(absl::StrCat(
          "vm ", vm_id.value(), " is ",
          absl::StripPrefix(ppn::types::v1::VmState_Name(it->second.state()), "VM_STATE_"), "; not for ", op));
    }
    it->second.set_state(to);
    power_calls_.push_back(op + " " + vm_id.value());
    return it->second;
  }

  absl::Mutex mu_;

  std::map<std::string, std::string> consoles_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> power_calls_ ABSL_GUARDED_BY(mu_);
  bool last_start_fresh_disk_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, ppn::fleet::v1::VmRecord> vms_ ABSL_GUARDED_BY(mu_);
  ppn::fleet::v1::ListVmsRequest last_list_ ABSL_GUARDED_BY(mu_);
  std::map<const Watch*, std::shared_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);  // started, not ended
  std::optional<absl::Status> fail_next_create_ ABSL_GUARDED_BY(mu_);
  std::function<void(const ppn::fleet::v1::VmRecord&)> on_create_ ABSL_GUARDED_BY(mu_);
  bool reports_replayed_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<std::pair<std::string, ppn::types::v1::EgressPolicy>> network_updates_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::pair<std::string, ppn::types::v1::Network>> networks_
      ABSL_GUARDED_BY(mu_);  // id → (tenant, network)
  int network_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<ppn::types::v1::VmSpec> created_specs_ ABSL_GUARDED_BY(mu_);
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
  int creates_ ABSL_GUARDED_BY(mu_) = 0;
  int destroys_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ppn::proxy::testing
