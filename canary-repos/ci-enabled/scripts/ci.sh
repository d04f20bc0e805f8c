#!/bin/sh
# CI entrypoint: lint, then tests. The workflow in .github/workflows/ci.yml runs this file.
set -eu
cd "$(dirname "$0")/.."
echo "== lint"
node scripts/lint.mjs
echo "== test"
node --test
echo "== ci passed"
