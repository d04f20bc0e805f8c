# Canary Lab developer tasks. `just --list` (or `./lab`) shows this menu.

set shell := ["bash", "-euo", "pipefail", "-c"]

canary := "target/debug/canary"

# Show the recipes.
default:
    @just --list

# Build the lab's binaries: canary, canary-exec (in-container executor), canary-runner. The
# lab runs them as the tests do (the dev profile: one build serves `demo` and `test`); their
# work is waiting on Docker, git and the network, which optimisation does not speed up.
[group('build')]
build:
    cargo build --locked --bins

# Optimised binaries to deploy (`canary serve`, the runner a platform ships): target/release/.
[group('build')]
release:
    cargo build --release --locked --bins

# Build the offline base image (debootstrap + docker import) unless it exists.
[group('build')]
setup: build
    {{canary}} images base

# The main job: the default runner build (runner + the CLIs pinned in canary.yaml), the golden
# path for each CLI on every canary repo, the verdict recorded, the build promoted to beta under
# the gate, and beta's build shown.
[group('run')]
demo *ARGS: setup
    {{canary}} run --suite suites/golden-path.yaml --default-providers --jobs 2 --promote beta {{ARGS}}

# The lab's own plumbing on the bare base image (no agent CLI): the smoke suite on every repo.
[group('run')]
smoke *ARGS: setup
    {{canary}} run --suite suites/demo.yaml --jobs 3 {{ARGS}}

# Run any canary command with the lab's binary, e.g. `just canary gc`.
[group('run')]
canary *ARGS: build
    {{canary}} {{ARGS}}

# The whole test suite (unit, CLI, real-Docker and registry tests on SQLite and PostgreSQL, the
# dashboard in headless Chromium, /metrics scraped by a real Prometheus, OTLP through the rotel
# collector, replicas behind haproxy, builds through a TLS docker-registry to a second engine;
# scripts/chromium.sh, prometheus.sh, rotel.sh, haproxy.sh and oci-registry.sh
# install them when missing).
[group('test')]
test: setup
    scripts/chromium.sh >/dev/null
    scripts/prometheus.sh >/dev/null
    scripts/rotel.sh >/dev/null
    scripts/haproxy.sh >/dev/null
    scripts/oci-registry.sh >/dev/null
    cargo build --locked --workspace --bins
    CANARY_RUNNER_BUILT=1 CANARY_TEST_POSTGRES=$(scripts/postgres.sh) cargo nextest run --locked --workspace --no-fail-fast {{ if env("CI", "") != "" { "--profile ci" } else { "" } }}

# Formatting, lints and the generated schemas.
[group('test')]
lint:
    cargo fmt --check
    cargo clippy --locked --workspace --all-targets -- -D warnings -W clippy::too_many_lines -W clippy::too_many_arguments
    scripts/layers.sh
    python3 scripts/module-cycles.py
    cargo run --locked -q --bin canary -- schema suite --check suites/schema.json
    cargo run --locked -q --bin canary -- schema report --check docs/report.schema.json

# Regenerate the checked-in JSON Schemas after changing the suite or report types.
[group('test')]
schemas:
    cargo run --locked -q --bin canary -- schema suite --write suites/schema.json
    cargo run --locked -q --bin canary -- schema report --write docs/report.schema.json

# Fuzz the parsers of untrusted input (suites, repo manifests, gate policies, heartbeats,
# telemetry, OTLP bodies, the CLI adapters' line parsers) for SECONDS each; crashes land in .canary/fuzz/artifacts/.
[group('test')]
fuzz SECONDS="60" *TARGETS:
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    scripts/fuzz.sh {{SECONDS}} {{TARGETS}}

# Benchmarks: lab overhead vs the docker CLI, --jobs scaling, peak memory, registry queries.
[group('test')]
bench: setup
    # The benches run the optimised `canary`, which looks for the runner's binaries beside it.
    cargo build --locked --release --workspace --bins
    cargo bench --locked --bench lab
    CANARY_TEST_POSTGRES=$(scripts/postgres.sh) cargo bench --locked --bench registry
    CANARY_TEST_POSTGRES=$(scripts/postgres.sh) cargo bench --locked --bench rollout
    cargo bench --locked --bench engines

# What CI runs: lints, the demo, the tests.
[group('test')]
ci: lint demo test

# Remove containers and networks crashed runs left behind.
[group('run')]
gc *ARGS: build
    {{canary}} gc {{ARGS}}
