#!/usr/bin/env bash
# Prints the path of the rotel OpenTelemetry collector's agent, installing its wheel from PyPI
# (pip's own index configuration) when it is missing. The OTLP test runs it between a CLI's
# recorded export and `canary serve`. Idempotent.
set -euo pipefail
version="0.0.1a15"
find_agent() {
  python3 - <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("rotel")
if spec is None or spec.origin is None:
    sys.exit(1)
agent = os.path.join(os.path.dirname(spec.origin), "rotel-agent")
sys.exit(0 if os.access(agent, os.X_OK) and print(agent) is None else 1)
PY
}
if find_agent 2>/dev/null; then
  exit 0
fi
echo "rotel.sh: installing the rotel wheel ($version)" >&2
python3 -m pip install --quiet --disable-pip-version-check --only-binary=:all: "rotel==$version" >&2
find_agent
