#!/usr/bin/env bash
# Makes sure Prometheus and promtool are here for the monitoring tests, which start a throwaway
# Prometheus server of their own that scrapes a test gateway, and check the alerting rules with
# promtool. Silent when both are installed; otherwise, as root, installs Debian's prometheus
# package without starting its service. Called by `make test-python`.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Prometheus is not installed and the monitoring tests need it: sudo apt-get install prometheus" >&2
  exit 1
fi
echo "==> Installing Prometheus (Debian's prometheus package) for the monitoring tests"
# Its own service would scrape nothing and hold port 9090: apt-install.sh keeps it from starting.
"$(dirname "$0")/apt-install.sh" prometheus
echo "==> Prometheus installed: $(prometheus --version 2>&1 | head -n 1)"
