#!/usr/bin/env bash
# Generates the Python stubs of the tenant API into OUT_DIR (default examples/python/gen).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-examples/python/gen}
mkdir -p "$OUT"
protoc -Iproto --python_out="$OUT" --grpc_out="$OUT" --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" \
  proto/ppn/types/v1/types.proto proto/ppn/tenancy/v1/tenant_service.proto
echo "stubs in $OUT; run with PYTHONPATH=$OUT"
