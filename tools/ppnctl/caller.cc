#include "tools/ppnctl/caller.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "tools/ppnctl/api.h"

namespace ppn::ppnctl {
namespace {

std::mutex g_mu;
grpc::ClientContext* g_active = nullptr;  // guarded by g_mu: the call Ctrl-C cancels
std::atomic<bool> g_interrupted{false};

// Registers a call as the one Ctrl-C cancels, for its lifetime.
class ActiveCall {
 public:
  explicit ActiveCall(grpc::ClientContext* ctx) {
    std::lock_guard<std::mutex> l(g_mu);
    g_active = ctx;
  }
  ~ActiveCall() {
    std::lock_guard<std::mutex> l(g_mu);
    g_active = nullptr;
  }
};

}  // namespace

void CancelCallsOnInterrupt() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A thread takes the signals synchronously (sigwait), so TryCancel runs in ordinary code,
  // not in a signal handler where it would not be safe.
  std::thread([set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      bool again = g_interrupted.exchange(true);
      std::lock_guard<std::mutex> l(g_mu);
      if (g_active == nullptr || again) {
        std::fputs("\n", stderr);
        std::_Exit(128 + sig);
      }
      g_active->TryCancel();
    }
  }).detach();
}

bool Interrupted() { return g_interrupted.load(); }

absl::Status Invoke(const Connection& connection, const google::protobuf::MethodDescriptor* method,
                    const google::protobuf::Message& request,
                    const std::function<void(const google::protobuf::Message&)>& on_response, absl::Duration timeout) {
  return InvokeUntil(
      connection, method, request,
      [&](const google::protobuf::Message& m) {
        on_response(m);
        return true;
      },
      timeout);
}

absl::Status InvokeUntil(const Connection& connection, const google::protobuf::MethodDescriptor* method,
                         const google::protobuf::Message& request,
                         const std::function<bool(const google::protobuf::Message&)>& on_response,
                         absl::Duration timeout) {
  bool stopped = false;
  auto channel = grpc::CreateChannel(connection.endpoint, connection.credentials);
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ActiveCall active(&ctx);
  if (timeout != absl::InfiniteDuration()) ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!connection.token.empty()) ctx.AddMetadata("authorization", "Bearer " + connection.token);
  grpc::CompletionQueue cq;
  std::string path = absl::StrCat("/", method->service()->full_name(), "/", method->name());
  auto call = stub.PrepareCall(&ctx, path, &cq);
  void* tag;
  bool ok;
  auto step = [&](void* t) { return cq.Next(&tag, &ok) && ok && tag == t; };
  call->StartCall(reinterpret_cast<void*>(1));
  bool alive = step(reinterpret_cast<void*>(1));
  if (alive) {
    std::string bytes = request.SerializeAsString();
    grpc::Slice slice(bytes);
    grpc::ByteBuffer out(&slice, 1);
    call->WriteLast(out, grpc::WriteOptions(), reinterpret_cast<void*>(2));
    alive = step(reinterpret_cast<void*>(2));
  }
  while (alive) {
    grpc::ByteBuffer in;
    call->Read(&in, reinterpret_cast<void*>(3));
    if (!step(reinterpret_cast<void*>(3))) break;
    std::vector<grpc::Slice> slices;
    (void)in.Dump(&slices);
    std::string data;
    for (const auto& s : slices) data.append(reinterpret_cast<const char*>(s.begin()), s.size());
    std::unique_ptr<google::protobuf::Message> response = Api::Get().NewMessage(method->output_type());
    if (!response->ParseFromString(data)) return absl::DataLossError("the server sent a malformed response");
    if (!on_response(*response)) {
      stopped = true;  // enough was read: end the stream from this side
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (stopped && !Interrupted()) return absl::OkStatus();
  return FromGrpcStatus(status);
}

std::string Explain(const absl::Status& s) {
  const char* meaning = "";
  const char* todo = "";
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
      meaning = "the service could not be reached, or its TLS handshake failed";
      todo = "check the endpoint, that the service runs (tools/ppn status), and --ca/--cert/--key";
      break;
    case absl::StatusCode::kUnauthenticated:
      meaning = "no valid credentials were presented";
      todo = "set PPN_TOKEN or --token_file for the tenant API; for mesh services use a certificate from the mesh CA";
      break;
    case absl::StatusCode::kPermissionDenied:
      meaning = "your certificate's role may not call this";
      todo = "use a certificate with the role the message names";
      break;
    case absl::StatusCode::kNotFound:
      meaning = "no such object (or it is not yours)";
      todo = "list what exists and check the id";
      break;
    case absl::StatusCode::kInvalidArgument:
      meaning = "the request is malformed";
      todo = "fix the flag the message names (ppnctl <service> <rpc> --help lists them)";
      break;
    case absl::StatusCode::kResourceExhausted:
      meaning = "a quota, rate limit or node capacity was reached";
      todo = "wait and retry, free resources, or ask for a larger quota";
      break;
    case absl::StatusCode::kFailedPrecondition:
      meaning = "the object is not in a state that allows this";
      todo = "check its state (e.g. unpin it, wait until it runs)";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      meaning = "no answer in time";
      todo = "retry, or raise --timeout";
      break;
    case absl::StatusCode::kAlreadyExists:
      meaning = "it exists already";
      todo = "pick another name, or use the existing one";
      break;
    default: meaning = "the service failed"; todo = "check the service's log";
  }
  return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message(), "\n  meaning: ", meaning,
                      "\n  what to do: ", todo, "\n");
}

}  // namespace ppn::ppnctl
