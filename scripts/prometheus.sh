#!/usr/bin/env bash
# Prints the path of Prometheus, installing Debian's package when it is missing (the metrics test
# has a real Prometheus scrape `canary serve`'s /metrics, and runs promtool on it). Idempotent.
# The package's own service is not started: the test runs its own server on a free port.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  command -v prometheus
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "prometheus.sh: Prometheus is missing and this is not root: run 'sudo apt-get install prometheus'" >&2
  exit 2
fi
echo "prometheus.sh: installing Debian's prometheus package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
command -v prometheus
