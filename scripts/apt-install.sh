#!/usr/bin/env bash
# `apt-install.sh PACKAGE...`: installs Debian packages for the tests, as root, without starting
# their services (the tests start throwaway servers of their own on loopback ports, and a
# package's service would only hold its port). Used by the install-*.sh scripts.
set -euo pipefail
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created=1
fi
trap '[ -n "$created" ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
