#pragma once

// The request id of the RPC this thread is handling (`x-request-id`), so a request can be
// followed from the tenant proxy to the host agent: log lines carry it, outgoing calls forward
// it, ledger entries record it. Set by the server interceptor (common/rpc_interceptors.h).

#include <string>

namespace ppn {

// Empty outside an RPC.
const std::string& CurrentRequestId();

// A fresh id: 16 random bytes in hex.
std::string NewRequestId();

// True for an id a client may choose: 1-64 of [A-Za-z0-9._-]. Anything else is replaced.
bool IsValidRequestId(const std::string& id);

// Sets this thread's request id for its lifetime, restoring the previous one after.
class ScopedRequestId {
 public:
  explicit ScopedRequestId(std::string id);
  ~ScopedRequestId();
  ScopedRequestId(const ScopedRequestId&) = delete;
  ScopedRequestId& operator=(const ScopedRequestId&) = delete;

 private:
  std::string previous_;
};

// Sets or clears this thread's id without restoring (the interceptor's hooks).
void SetCurrentRequestId(std::string id);

}  // namespace ppn
