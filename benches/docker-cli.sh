#!/usr/bin/env bash
# The baseline the lab is measured against: the same work as the bench suite (one container,
# repo upload, git baseline, N short steps, removal), driven by the docker CLI.
# Usage: docker-cli.sh IMAGE REPO_TAR STEPS
set -euo pipefail
image=$1 tar=$2 steps=$3
cid=$(docker create --user 1000:1000 --network none --cap-drop ALL --security-opt no-new-privileges \
  --memory 2g --pids-limit 1024 --label canary-lab.bench=1 "$image" sleep infinity)
trap 'docker rm -f "$cid" >/dev/null' EXIT
docker cp - "$cid:/" < "$tar"
docker start "$cid" >/dev/null
docker exec -w /work "$cid" sh -c 'git init -q . && git add -A && git -c user.name=b -c user.email=b@localhost commit -q -m pinned' >/dev/null
for i in $(seq 1 "$steps"); do
  out=$(docker exec -w /work "$cid" sh -c "echo step $i")
  [ "$out" = "step $i" ] || { echo "step $i: unexpected output: $out" >&2; exit 1; }
done
