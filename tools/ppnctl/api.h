#pragma once

// The PPN API as ppnctl sees it: every service and RPC of proto/, loaded from the
// FileDescriptorSet compiled into the binary, with the .proto comments as help text.
// Nothing here is written per RPC: a new RPC in proto/ is a new command.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"

namespace ppn::ppnctl {

struct Command {
  std::string service_command;  // "fleet", "tenant", "host-agent", "pairing-admin", ...
  std::string rpc_command;      // "create-vm"
  const google::protobuf::MethodDescriptor* method;
};

class Api {
 public:
  // Loads the embedded descriptors. Aborts on a corrupt build (a bug, not user input).
  static const Api& Get();

  const std::vector<Command>& commands() const { return commands_; }
  // NOT_FOUND listing the choices when no command matches (names are case- and
  // dash-insensitive: "create-vm", "CreateVm", "createvm").
  absl::StatusOr<const Command*> Find(const std::string& service, const std::string& rpc) const;
  std::vector<std::string> Services() const;
  // Leading comment of an element, trimmed; "" if none.
  std::string Comment(const google::protobuf::Descriptor* d) const;
  std::string Comment(const google::protobuf::FieldDescriptor* f) const;
  std::string Comment(const google::protobuf::MethodDescriptor* m) const;
  std::string Comment(const google::protobuf::ServiceDescriptor* s) const;
  std::unique_ptr<google::protobuf::Message> NewMessage(const google::protobuf::Descriptor* d) const;

 private:
  Api();
  google::protobuf::DescriptorPool pool_;
  mutable google::protobuf::DynamicMessageFactory factory_;
  std::vector<Command> commands_;
};

// "CreateVm" -> "create-vm"; "HostAgent" -> "host-agent".
std::string Kebab(const std::string& camel);

}  // namespace ppn::ppnctl
