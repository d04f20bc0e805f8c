#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), seeded with the repo's own inputs: the
# suites, the hostile corpus, the canary repos' manifests, the gate fixtures, recorded CLI
# output. New corpus entries and crashes stay under .canary/fuzz/; a crash fails the run.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(suite repo_manifest gate_policy heartbeat telemetry otlp adapters archive offer)

work=.canary/fuzz
# put DIR FILE...: copies each file into DIR under a name that keeps its folder, so fixtures
# with the same name in different folders do not collide.
put() {
  local dir=$1; shift
  for f in "$@"; do cp "$f" "$dir/$(echo "$f" | tr '/' '_')"; done
}

seeds() {
  local target=$1 dir=$work/seeds/$1
  rm -rf "$dir" && mkdir -p "$dir"
  case $target in
    suite) put "$dir" suites/*.yaml tests/fixtures/suites/*.yaml tests/fixtures/bad/*.yaml tests/fixtures/hostile/suites/*.yaml ;;
    repo_manifest)
      put "$dir" canary-repos/*/canary-repo.yaml tests/fixtures/hostile/repos/*.yaml ;;
    gate_policy) put "$dir" tests/fixtures/gate.yaml tests/fixtures/hostile/policies/*.yaml ;;
    heartbeat)
      python3 - "$dir" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
out.joinpath("good.json").write_text(json.dumps({"type": "HEARTBEAT", "runner_id": "r-1", "org": "acme", "channel": "beta", "versions": {"runner": "0.1.0", "codex": "0.163.0"}, "capabilities": ["draft_pr"], "ts": "2026-11-22T10:00:00Z"}))
PY
      ;;
    telemetry)
      python3 - "$dir" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
s = {"runner": "r-1", "org": "acme", "session": "s-1", "build": "sha256:ab", "started_at": "2026-11-22T11:59:00Z", "start_latency_ms": 900, "outcome": "ok", "commands": 4, "commands_failed": 1, "approvals": 2, "approval_wait_ms": 3000, "tokens": 1200, "cost_usd": 0.25, "duration_ms": 60000}
out.joinpath("good.json").write_text(json.dumps({"sessions": [s, dict(s, session="s-2", outcome="disconnected", start_latency_ms=None)]}))
PY
      ;;
    otlp) put "$dir" tests/fixtures/otel/*.json tests/fixtures/otel/*.pb ;;
    archive)
      # Real wheels' shape: a CLI folder with a binary, a package file, a dist-info record.
      python3 - "$dir" <<'PY'
import sys, pathlib, zipfile
out = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(out / "wheel.zip", "w") as z:
    z.writestr("codex_cli_bin/bin/codex", "#!/bin/sh\necho codex-cli 0.0.0\n")
    z.writestr("codex_cli_bin/__init__.py", "")
    z.writestr("codex_cli_bin-0.0.0.dist-info/RECORD", "")
PY
      ;;
    offer)
      python3 - "$dir" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
st = {"org": "acme", "channel": "stable", "status": "green", "require_signed": True, "rollback": []}
m = {"build": "b1", "image": "", "components": [], "evidence": {"results": 1, "passing": 1, "runs": []}, "offered_for": "stable", "statement": st}
out.joinpath("manifest.json").write_text(json.dumps(m))
root = {"signed": {"_type": "root", "spec_version": "1.0.0", "consistent_snapshot": True, "version": 1, "expires": "2027-12-05T00:00:00Z", "keys": {}, "roles": {}}, "signatures": []}
out.joinpath("root.json").write_text(json.dumps(root))
out.joinpath("path.txt").write_text("targets/" + "a" * 64 + ".offers/org/acme/stable.json")
offer = {"runner": "r", "org": "acme", "channel": "stable", "source": "channel", "status": "green", "reasons": [], "build": "b1", "changes": [], "reports": [], "rollback": [], "require_signed": True}
out.joinpath("offer.json").write_text(json.dumps(offer))
PY
      ;;
    adapters)
      # The first byte picks the adapter (0 codex, 1 claude, 2 gemini).
      for f in tests/fixtures/cli-output/*.jsonl; do
        case $(basename "$f") in codex*) b='\x00' ;; claude*) b='\x01' ;; *) b='\x02' ;; esac
        { printf "$b"; cat "$f"; } > "$dir/$(basename "$f")"
      done ;;
  esac
}

failed=0
for t in "${targets[@]}"; do
  seeds "$t"
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  echo "fuzz: $t for ${seconds}s" >&2
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$work/corpus/$t" "$work/seeds/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 2> "$work/$t.log"; then
    echo "fuzz: $t FAILED: see $work/$t.log and $work/artifacts/$t/" >&2
    failed=1
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" "$work/$t.log" >&2 || true
done
exit $failed
