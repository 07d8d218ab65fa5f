#pragma once

// LedgerReader over the ledger's gRPC API (the generated ppn.ledger.v1 stub).

#include <memory>

#include "tools/ppnctl/caller.h"
#include "tools/ppnctl/ledger_verify.h"

namespace ppn::ppnctl {

// Each call has a 60 s deadline; errors are the calls' statuses.
std::unique_ptr<LedgerReader> NewGrpcLedgerReader(const Connection& connection);

}  // namespace ppn::ppnctl
