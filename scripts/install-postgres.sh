#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs are here for the ledger tests, which start a throwaway
# cluster of their own (tests/postgres.py). Silent when they are installed; otherwise, as root,
# installs Debian's postgresql package (PostgreSQL 15 on bookworm) without creating or starting
# its default cluster. Called by `make test-python`.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL's server is not installed and the ledger tests need it: sudo apt-get install postgresql" >&2
  exit 1
fi
echo "==> Installing the PostgreSQL server (Debian's postgresql package) for the ledger tests"
# No cluster of the package's own: nothing would use it, and it would hold port 5432.
mkdir -p /etc/postgresql-common
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
fi
"$(dirname "$0")/apt-install.sh" postgresql
echo "==> PostgreSQL installed: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n 1)"
