#!/usr/bin/env bash
# Makes sure redis-server is here for the fleet tests, which start throwaway Redis servers of their
# own on loopback ports. Silent when it is installed; otherwise, as root, installs Debian's
# redis-server package without starting its service. Called by `make test-python`.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "redis-server is not installed and the fleet tests need it: sudo apt-get install redis-server" >&2
  exit 1
fi
echo "==> Installing redis-server (Debian's package) for the fleet tests"
"$(dirname "$0")/apt-install.sh" redis-server
echo "==> redis-server installed: $(redis-server --version)"
