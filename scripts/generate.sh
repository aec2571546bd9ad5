#!/usr/bin/env bash
# Regenerates the stubs of all three clients, and the descriptor set the service's reflection serves,
# from protos/. Run through `make generate`.
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
  protos/llmgateway/v1/*_service.proto
touch "$py_out/llmgateway/v1/__init__.py"

# The contract as a FileDescriptorSet with its comments (source info), which the generated *_pb2
# descriptors leave out: server reflection serves it, so `grpcurl describe` shows the API docs.
# The same bundled protoc as the Python stubs, so the two describe the same contract.
descriptors="$out_root/service/src/llm_gateway/server/llmgateway_v1.binpb"
mkdir -p "$(dirname "$descriptors")"
"${protoc[@]}" --include_source_info --descriptor_set_out="$descriptors" protos/llmgateway/v1/*.proto

rm -rf "$out_root/clients/go/gen" "$out_root/clients/ts/src/gen"
tools/node_modules/.bin/buf generate -o "$out_root"
rpc_protos=$(.venv/bin/python -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))')
tools/node_modules/.bin/buf generate "$rpc_protos" --path "$rpc_protos/google/rpc/error_details.proto" \
  --template buf.gen.rpc.yaml -o "$out_root"
