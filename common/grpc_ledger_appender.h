#pragma once

// The LedgerAppendFn of a LedgerOutbox over mTLS gRPC: one Append per call, 5 s deadline.

#include <string>

#include "common/ledger_outbox.h"
#include "common/tls_credentials.h"

namespace ppn {

LedgerAppendFn GrpcLedgerAppender(const std::string& address, const TlsFiles& tls);

}  // namespace ppn
