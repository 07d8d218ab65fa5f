#pragma once

// How ppnctl prints responses: a readable table (lists) or key: value lines by default,
// JSON (one object per line, for scripts) or YAML. "wide" is the table with more detail where a
// verb has it (node list: each node's peers), the table elsewhere.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace ppn::ppnctl {

enum class Format { kTable, kWide, kJson, kYaml };

absl::StatusOr<Format> ParseFormat(const std::string& name);
std::string Render(const google::protobuf::Message& message, Format format);

// The message as one line of JSON for the -v trace, every field whose name says it holds a
// secret (token, key, secret, password, user_data, at any depth) replaced by "<redacted>".
std::string RedactedJson(const google::protobuf::Message& message);
// Whether a field of that name is redacted from the trace.
bool IsSecretField(const std::string& name);
// A guest's console bytes made safe for a terminal: printable ASCII, newlines and tabs as they
// are; every other byte (escape sequences, carriage returns, other control characters, and
// every byte of 0x80 and above, which a terminal might read as a C1 control) as \xNN. The
// guest is never trusted to drive the terminal.
std::string ConsoleText(absl::string_view bytes);

}  // namespace ppn::ppnctl
