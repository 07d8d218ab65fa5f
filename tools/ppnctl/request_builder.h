#pragma once

// Turns command-line flags into a request message by reflection, so every RPC's request can
// be written without code of its own. Pure: unit-tested.
//
//   --vm_id=x                     scalar fields
//   --spec.memory_mib=128         nested fields by dotted name
//   --excluded_node_ids=a --excluded_node_ids=b   repeated scalars by repetition
//   --spec.labels=team=web        map entries as key=value
//   --spec.port_forwards='{"guest_port":80}'      message fields (single or repeated) as JSON
//   --outcome=success             enums by name, with or without their prefix, any case
//   --spec.ttl=90m                Durations as 90s, 5m, 1h30m; Timestamps as RFC 3339
//   --spec.user_data=@cloud.yaml  bytes and strings from a file with @
//   --json='{...}'                the whole request as JSON (other flags apply on top)

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace ppn::ppnctl {

// Sets the field at `path` of `message` from `value`. INVALID_ARGUMENT naming the flag.
absl::Status SetField(google::protobuf::Message* message, const std::string& path, const std::string& value);

// Whether `path` ("spec.memory_mib") names a field SetField can set in a `type` message.
bool IsFieldPath(const google::protobuf::Descriptor* type, const std::string& path);

// The dotted names of the fields of `type` a flag can set, nested messages included (not
// the insides of Duration and Timestamp, maps or repeated messages, which take one value),
// in declaration order: for "did you mean" and completion.
std::vector<std::string> FieldPaths(const google::protobuf::Descriptor* type);

// Merges a JSON object into `message`.
absl::Status MergeJson(google::protobuf::Message* message, const std::string& json);

}  // namespace ppn::ppnctl
