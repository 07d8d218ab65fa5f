#include "relay/grpc_route_source.h"

#include "common/grpc_status.h"
#include "common/rpc_interceptors.h"
#include "grpcpp/create_channel.h"

namespace ppn::relay {
namespace {

class GrpcRouteStream final : public RouteStream {
 public:
  explicit GrpcRouteStream(ppn::fleet::v1::FleetService::Stub* stub)
      : reader_(stub->WatchRelayRoutes(&context_, ppn::fleet::v1::WatchRelayRoutesRequest())) {}
  bool Read(ppn::fleet::v1::WatchRelayRoutesResponse* table) override { return reader_->Read(table); }
  absl::Status Finish() override { return FromGrpcStatus(reader_->Finish()); }
  void Cancel() override { context_.TryCancel(); }

 private:
  // No deadline: the stream lives as long as both ends do (the relay reconnects when it ends).
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<ppn::fleet::v1::WatchRelayRoutesResponse>> reader_;
};

}  // namespace

GrpcRouteSource::GrpcRouteSource(const std::string& fleet, const TlsFiles& tls)
    : stub_(ppn::fleet::v1::FleetService::NewStub(ppn::MeshChannel(fleet, MtlsChannelCredentials(tls)))) {}

std::unique_ptr<RouteStream> GrpcRouteSource::Watch() { return std::make_unique<GrpcRouteStream>(stub_.get()); }

}  // namespace ppn::relay
