#pragma once

// What every PPN server and channel does around each call, in one place: the server counts
// and times every RPC for Prometheus (go-grpc-prometheus' names: grpc_server_started_total,
// grpc_server_handled_total, grpc_server_handling_seconds) and gives it a request id (the
// caller's `x-request-id` when valid, else a new one, returned in the response's initial
// metadata and set as this thread's CurrentRequestId while the handler runs); channels made by
// MeshChannel forward the current request id on every outgoing call.

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/server_interceptor.h"

namespace ppn {

inline constexpr char kRequestIdHeader[] = "x-request-id";

// For ServerBuilder::experimental().SetInterceptorCreators.
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> ServerInterceptors();

// A channel whose calls carry the current request id.
std::shared_ptr<grpc::Channel> MeshChannel(const std::string& target,
                                           const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                                           const grpc::ChannelArguments& args = grpc::ChannelArguments());

// "OK", "NotFound", ... as go-grpc-prometheus labels spell gRPC codes.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace ppn
