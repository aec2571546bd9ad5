#!/usr/bin/env bash
# Regenerates the stubs of all three clients from protos/. Run through `make generate`.
# Usage: scripts/generate.sh [OUT_ROOT]   (default: the repository; check-generated.sh uses a scratch dir)
set -euo pipefail
cd "$(dirname "$0")/.."
out_root="${1:-.}"

py_out="$out_root/clients/python/src"
mkdir -p "$py_out/llmgateway/v1"
rm -f "$py_out"/llmgateway/v1/*_pb2*.py "$py_out"/llmgateway/v1/*_pb2*.pyi
# grpc_tools bundles protoc and the well-known types, so the Python code matches the runtime exactly;
# mypy-protobuf writes the .pyi files (messages, and typed sync and asyncio stubs for the service).
protoc=(.venv/bin/python -m grpc_tools.protoc -I protos
  --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy
  --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc)
"${protoc[@]}" --python_out="$py_out" --mypy_out=quiet:"$py_out" protos/llmgateway/v1/*.proto
"${protoc[@]}" --grpc_python_out="$py_out" --mypy_grpc_out=quiet:"$py_out" \
  protos/llmgateway/v1/gateway_service.proto
touch "$py_out/llmgateway/v1/__init__.py"

rm -rf "$out_root/clients/go/gen" "$out_root/clients/ts/src/gen"
tools/node_modules/.bin/buf generate -o "$out_root"
rpc_protos=$(.venv/bin/python -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))')
tools/node_modules/.bin/buf generate "$rpc_protos" --path "$rpc_protos/google/rpc/error_details.proto" \
  --template buf.gen.rpc.yaml -o "$out_root"
