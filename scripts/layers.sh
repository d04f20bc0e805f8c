#!/usr/bin/env bash
# The workspace's crates are layers (docs/architecture.md): this fails when a crate links what
# its layer must not, e.g. the runner customers install pulling in the registry's SQL driver.
set -euo pipefail
cd "$(dirname "$0")/.."

check() {
  local crate=$1 deps banned
  shift
  deps=$(cargo tree --locked -p "$crate" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
  for banned in "$@"; do
    if grep -qx -- "$banned" <<<"$deps"; then
      echo "layers: $crate depends on $banned, which its layer must not (see docs/architecture.md);" \
        "\`cargo tree -p $crate -i $banned -e normal\` shows the path" >&2
      exit 1
    fi
  done
}

check canary-contract canary-runner canary-lab canary-fleet canary-registry canary-release canary-control canary sqlx bollard octocrab plotters maud axum reqwest tokio
check canary-runner canary-lab canary-fleet canary-registry canary-release canary-control canary sqlx bollard octocrab plotters maud
check canary-lab canary-fleet canary-registry canary-release canary-control canary sqlx octocrab plotters
check canary-fleet canary-lab canary-registry canary-release canary-control canary sqlx bollard octocrab plotters maud
check canary-registry canary-release canary-control canary octocrab plotters
check canary-release canary-control canary plotters
check canary-control canary
echo "layers: contract < runner < lab, fleet < registry < release < control < canary hold"
