#!/usr/bin/env bash
# Runs a command against a live gateway: starts fake OpenAI, Anthropic and Gemini upstreams and a
# gateway on a free port with tests/configs/e2e.toml and fresh API keys, exports LLM_GATEWAY_ADDR,
# LLM_GATEWAY_HTTP_URL (the HTTP door), LLM_GATEWAY_API_KEY and LLM_GATEWAY_ADMIN_KEY (an admin
# key, for BudgetService), runs the command, then stops the gateway with SIGTERM and checks that it
# drained and exited 0.
# Usage: scripts/with-gateway.sh <command> [args...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work=$(mktemp -d)
export LLM_GATEWAY_API_KEY
LLM_GATEWAY_API_KEY="e2e-$("$root/.venv/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
export LLM_GATEWAY_ADMIN_KEY
LLM_GATEWAY_ADMIN_KEY="e2e-admin-$("$root/.venv/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"

# Fake OpenAI, Anthropic and Gemini upstreams (tests/fakes/serve.py) for the providers e2e.toml
# points at them.
(cd "$root" && exec "$root/.venv/bin/python" -m tests.fakes.serve "$work/fakes.env") >"$work/fakes.log" 2>&1 &
fakes=$!
pid=""
cleanup() {
  kill -TERM $pid "$fakes" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  [ -s "$work/fakes.env" ] && break
  sleep 0.1
done
[ -s "$work/fakes.env" ] || { echo "the fake upstreams did not start:" >&2; cat "$work/fakes.log" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
. "$work/fakes.env"
set +a

# The usage ledger lives with the run, not in the checkout.
LLM_GATEWAY__LEDGER__URL="sqlite:///$work/ledger.db" LLM_GATEWAY__LEDGER__SPOOL_DIR="$work/spool" \
  "$root/.venv/bin/llm-gateway" serve --config "$root/tests/configs/e2e.toml" --port 0 \
  --port-file "$work/port" >"$work/gateway.log" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
  [ -s "$work/port" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "gateway failed to start:" >&2
    cat "$work/gateway.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -s "$work/port" ] || { echo "gateway did not start in 10 s" >&2; cat "$work/gateway.log" >&2; exit 1; }
export LLM_GATEWAY_ADDR="127.0.0.1:$(cat "$work/port")"
# The HTTP door's port, from the "serving" line of the gateway's log (written before the port file).
http_port=$(grep -o '"http_port":[0-9]*' "$work/gateway.log" | head -n 1 | cut -d: -f2)
export LLM_GATEWAY_HTTP_URL="http://127.0.0.1:$http_port"
"$root/.venv/bin/llm-gateway" health --address "$LLM_GATEWAY_ADDR" >/dev/null

status=0
"$@" || status=$?

kill -TERM "$pid"
gateway_status=0
wait "$pid" || gateway_status=$?
if [ "$gateway_status" -ne 0 ]; then
  echo "gateway exited with status $gateway_status after SIGTERM; its log:" >&2
  cat "$work/gateway.log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- gateway log (last 40 lines) ---" >&2
  tail -n 40 "$work/gateway.log" >&2
fi
exit "$status"
