#!/usr/bin/env bash
# Generate the Python gRPC stubs of protos/fedn.proto into fedplane/proto/.
# The virtual include path makes the stubs import each other as fedplane.proto.*.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-.}
"$PY" -m grpc_tools.protoc --proto_path=fedplane/proto=protos \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" protos/fedn.proto
