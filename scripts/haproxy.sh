#!/usr/bin/env bash
# Prints the path of HAProxy, installing Debian's package when it is missing (the replica test
# puts several `canary serve` processes behind it). Idempotent. The package's own service is not
# started: the test runs its own haproxy on a free port.
set -euo pipefail
if command -v haproxy >/dev/null 2>&1; then
  command -v haproxy
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "haproxy.sh: HAProxy is missing and this is not root: run 'sudo apt-get install haproxy'" >&2
  exit 2
fi
echo "haproxy.sh: installing Debian's haproxy package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends haproxy >/dev/null; }
# The package starts its service on install where an init system runs; the tests want none.
(service haproxy stop || true) >/dev/null 2>&1
command -v haproxy
