#!/usr/bin/env bash
# Guards the wire: the protos must stay compatible (buf's WIRE_JSON rules) with those of
# $BREAKING_AGAINST (default: the previous commit). Changes to the contract are additive.
set -euo pipefail
cd "$(dirname "$0")/.."
against="${BREAKING_AGAINST:-HEAD~1}"
if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
  echo "buf breaking: $against does not exist here (first commit or shallow clone); nothing to compare"
  exit 0
fi
if ! git cat-file -e "$against:protos/llmgateway" 2>/dev/null; then
  echo "buf breaking: $against has no contract yet; nothing to compare"
  exit 0
fi
tools/node_modules/.bin/buf breaking --against ".git#ref=$(git rev-parse "$against")"
echo "buf breaking: compatible with $against"
