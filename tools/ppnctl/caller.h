#pragma once

// Calls any RPC by its descriptor over a generic stub: the request and responses are
// dynamic messages, so no per-RPC client code exists.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "grpcpp/security/credentials.h"

namespace ppn::ppnctl {

struct Connection {
  std::string endpoint;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string token;  // SECRET: sent as "authorization: Bearer"; never printed
};

// Sends `request`; calls `on_response` for each response (one for unary RPCs, each as it
// arrives for streams). Returns the call's final status.
absl::Status Invoke(const Connection& connection, const google::protobuf::MethodDescriptor* method,
                    const google::protobuf::Message& request,
                    const std::function<void(const google::protobuf::Message&)>& on_response, absl::Duration timeout);

// Makes Ctrl-C (SIGINT, and SIGTERM) cancel the call under way (ClientContext::TryCancel: the
// server sees CANCELLED, Invoke returns it) instead of killing the process mid-write; with no
// call under way, or at a second Ctrl-C, the process exits at once with 128 + the signal.
// Call first thing in main, before any thread exists, so every thread inherits the mask.
void CancelCallsOnInterrupt();
// Whether Ctrl-C was pressed.
bool Interrupted();

// The same, but `on_response` returns false to stop reading a stream: the call is cancelled
// and OK returned.
absl::Status InvokeUntil(const Connection& connection, const google::protobuf::MethodDescriptor* method,
                         const google::protobuf::Message& request,
                         const std::function<bool(const google::protobuf::Message&)>& on_response,
                         absl::Duration timeout);

// "PERMISSION_DENIED: role operator may not call ...\n  meaning: ...\n  what to do: ..."
std::string Explain(const absl::Status& status);

}  // namespace ppn::ppnctl
