#pragma once

// How ppnctl reaches a service: its endpoint and credentials from the settings. The tenant
// API takes TLS and a bearer token (from --token_file or $PPN_TOKEN, never from the command
// line, where ps would show it); every other service takes the operator's mTLS certificate.

#include <string>

#include "absl/status/statusor.h"
#include "tools/ppnctl/caller.h"
#include "tools/ppnctl/settings.h"

namespace ppn::ppnctl {

// INVALID_ARGUMENT without an endpoint, UNAUTHENTICATED without a tenant token, the TLS
// check's error (with the settings to fix) for unreadable or mismatched PEM files.
absl::StatusOr<Connection> Connect(const Settings& settings, const std::string& service);

}  // namespace ppn::ppnctl
