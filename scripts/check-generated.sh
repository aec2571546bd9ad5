#!/usr/bin/env bash
# Fails when the committed stubs or descriptor set differ from what the protos generate (someone
# edited a .proto and forgot `make generate`, or edited generated code by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
scripts/generate.sh "$scratch" >/dev/null
status=0
for dir in clients/python/src/llmgateway/v1 clients/go/gen clients/ts/src/gen; do
  if ! diff -r -x __pycache__ "$dir" "$scratch/$dir"; then
    status=1
  fi
done
descriptors=service/src/llm_gateway/server/llmgateway_v1.binpb
if ! cmp -s "$descriptors" "$scratch/$descriptors"; then
  echo "$descriptors differs from what protos/ compile to" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "generated code is stale: run 'make generate' and commit the result" >&2
fi
exit "$status"
