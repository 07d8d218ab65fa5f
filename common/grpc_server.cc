#include "common/grpc_server.h"

#include "common/metrics_server.h"
#include "common/rpc_interceptors.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/role_auth_processor.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

namespace ppn {

absl::StatusOr<StartedServer> StartServer(const ServerOptions& options) {
  if (options.credentials == nullptr || options.auth_processor == nullptr) {
    return absl::InvalidArgumentError("server needs credentials and an auth processor");
  }
  if (absl::Status metrics = metrics::StartDefaultMetricsServer(); !metrics.ok()) return metrics;
  // Both are process-wide switches read when a builder is created.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  options.credentials->SetAuthMetadataProcessor(options.auth_processor);
  grpc::ServerBuilder builder;
  StartedServer started;
  // A node serves on its mesh address and on loopback, never on every address: "a,b" binds each.
  std::vector<std::string> addresses = absl::StrSplit(options.listen_address, ',', absl::SkipWhitespace());
  if (addresses.empty()) return absl::InvalidArgumentError("server needs a listen address");
  std::vector<int> ports(addresses.size(), 0);
  for (size_t i = 0; i < addresses.size(); ++i) {
    builder.AddListeningPort(addresses[i], options.credentials, &ports[i]);
  }
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.experimental().SetInterceptorCreators(ServerInterceptors());
  for (grpc::Service* service : options.services) builder.RegisterService(service);
  started.server = builder.BuildAndStart();
  // gRPC starts nothing when one address cannot be bound.
  if (started.server == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (ports[i] == 0) {
      started.server->Shutdown();
      return absl::UnavailableError(absl::StrCat("cannot listen on ", addresses[i]));
    }
  }
  started.port = ports[0];
  grpc::HealthCheckServiceInterface* health = started.server->GetHealthCheckService();
  if (health != nullptr) health->SetServingStatus(true);
  return started;
}

absl::StatusOr<StartedServer> StartMeshServer(const std::string& listen, const TlsFiles& tls, RolePolicy policy,
                                              std::vector<grpc::Service*> services, const RevocationList* revocations) {
  ServerOptions options;
  options.listen_address = listen;
  options.credentials = MtlsServerCredentials(tls);
  options.auth_processor = std::make_shared<RoleAuthProcessor>(std::move(policy), revocations);
  options.services = std::move(services);
  return StartServer(options);
}

}  // namespace ppn
