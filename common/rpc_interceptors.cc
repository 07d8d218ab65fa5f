#include "common/rpc_interceptors.h"

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "common/metrics.h"
#include "common/request_id.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/client_interceptor.h"

namespace ppn {
namespace {

using grpc::experimental::InterceptionHookPoints;

const char* TypeName(grpc::experimental::ServerRpcInfo::Type type) {
  switch (type) {
    case grpc::experimental::ServerRpcInfo::Type::UNARY: return "unary";
    case grpc::experimental::ServerRpcInfo::Type::CLIENT_STREAMING: return "client_stream";
    case grpc::experimental::ServerRpcInfo::Type::SERVER_STREAMING: return "server_stream";
    case grpc::experimental::ServerRpcInfo::Type::BIDI_STREAMING: return "bidi_stream";
  }
  return "unknown";
}

class ServerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ServerInterceptor(grpc::experimental::ServerRpcInfo* info) {
    // "/ppn.fleet.v1.FleetService/CreateVm"
    absl::string_view method = info->method() == nullptr ? "" : info->method();
    if (!method.empty() && method[0] == '/') method.remove_prefix(1);
    size_t slash = method.find('/');
    service_ = std::string(method.substr(0, slash));
    method_ = slash == absl::string_view::npos ? "" : std::string(method.substr(slash + 1));
    type_ = TypeName(info->type());
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      start_ = absl::Now();
      auto* md = methods->GetRecvInitialMetadata();
      auto it = md->find(kRequestIdHeader);
      if (it != md->end()) request_id_.assign(it->second.data(), it->second.size());
      if (!IsValidRequestId(request_id_)) request_id_ = NewRequestId();
      metrics::Default().CounterAdd("grpc_server_started_total", "RPCs started on the server.", Labels());
    }
    // The handler runs on the thread that delivers the request.
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA) ||
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      SetCurrentRequestId(request_id_);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA) &&
        !request_id_.empty()) {
      methods->GetSendInitialMetadata()->emplace(kRequestIdHeader, request_id_);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      metrics::Labels labels = Labels();
      labels.emplace_back("grpc_code", GrpcCodeName(status.error_code()));
      metrics::Default().CounterAdd("grpc_server_handled_total", "RPCs completed on the server, by code.", labels);
      metrics::Default().Observe("grpc_server_handling_seconds", "Time from an RPC's arrival to its status.", Labels(),
                                 absl::ToDoubleSeconds(absl::Now() - start_));
      SetCurrentRequestId("");
    }
    methods->Proceed();
  }

 private:
  metrics::Labels Labels() const {
    return {{"grpc_type", type_}, {"grpc_service", service_}, {"grpc_method", method_}};
  }

  std::string service_, method_, type_, request_id_;
  absl::Time start_ = absl::Now();
};

class ServerFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new ServerInterceptor(info);
  }
};

class ClientInterceptor final : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      const std::string& id = CurrentRequestId();
      auto* md = methods->GetSendInitialMetadata();
      if (!id.empty() && md->find(kRequestIdHeader) == md->end()) md->emplace(kRequestIdHeader, id);
    }
    methods->Proceed();
  }
};

class ClientFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new ClientInterceptor();
  }
};

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> ServerInterceptors() {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> out;
  out.push_back(std::make_unique<ServerFactory>());
  return out;
}

std::shared_ptr<grpc::Channel> MeshChannel(const std::string& target,
                                           const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                                           const grpc::ChannelArguments& args) {
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<ClientFactory>());
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args, std::move(creators));
}

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "Canceled";
    case grpc::StatusCode::UNKNOWN: return "Unknown";
    case grpc::StatusCode::INVALID_ARGUMENT: return "InvalidArgument";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DeadlineExceeded";
    case grpc::StatusCode::NOT_FOUND: return "NotFound";
    case grpc::StatusCode::ALREADY_EXISTS: return "AlreadyExists";
    case grpc::StatusCode::PERMISSION_DENIED: return "PermissionDenied";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "ResourceExhausted";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FailedPrecondition";
    case grpc::StatusCode::ABORTED: return "Aborted";
    case grpc::StatusCode::OUT_OF_RANGE: return "OutOfRange";
    case grpc::StatusCode::UNIMPLEMENTED: return "Unimplemented";
    case grpc::StatusCode::INTERNAL: return "Internal";
    case grpc::StatusCode::UNAVAILABLE: return "Unavailable";
    case grpc::StatusCode::DATA_LOSS: return "DataLoss";
    case grpc::StatusCode::UNAUTHENTICATED: return "Unauthenticated";
    default: return "Unknown";
  }
}

}  // namespace ppn
