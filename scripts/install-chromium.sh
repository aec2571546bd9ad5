#!/usr/bin/env bash
# Makes sure Debian's Chromium is here for the web console's browser tests, which drive it headless
# through Playwright (which never downloads a browser of its own here). Silent when it is installed;
# otherwise, as root, installs Debian's chromium package. Called by `make test-python`.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium is not installed and the console tests need it: sudo apt-get install chromium" >&2
  exit 1
fi
echo "==> Installing chromium (Debian's package) for the console tests"
# A font of known metrics, so pages lay out the same on every machine.
"$(dirname "$0")/apt-install.sh" chromium fonts-dejavu-core
echo "==> chromium installed: $(chromium --version)"
