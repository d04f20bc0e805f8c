#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's package when it is missing
# (the browser tests of the dashboard and report.html drive it). Idempotent.
set -euo pipefail
for c in chromium chromium-browser; do
  if command -v "$c" >/dev/null 2>&1; then command -v "$c"; exit 0; fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium.sh: Chromium is missing and this is not root: run 'sudo apt-get install chromium'" >&2
  exit 2
fi
echo "chromium.sh: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
command -v chromium
