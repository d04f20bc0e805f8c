//! The integration tests: the real `canary` binary, driven as a user drives it. Tests under
//! `docker::` use the real Docker engine (nextest runs them in the `docker` test group).
// The one exception to the 80-line limit (clippy.toml, `just lint`): an end-to-end test is a
// user's journey read top to bottom, each step asserting what that user would see, and cutting
// it into helpers hides the order the steps depend on. Setup and checks shared between tests
// live in helpers.rs; library and binary code has no exception.
#![allow(clippy::too_many_lines)]

mod adapters;
mod cli;
mod docker;
mod docker_dashboard;
mod docker_distribution;
mod docker_drift;
mod docker_engines;
mod docker_fleet;
mod docker_images;
mod docker_matrix;
mod docker_pipeline;
mod docker_registry;
mod docker_sessions;
mod docker_sweeps;
mod docker_updates;
mod docs;
mod forge;
mod helpers;
mod hostile;
mod metrics;
mod names;
mod otlp;
mod real_cli;
mod registry;
mod replicas;
mod rollout;
mod security;
mod shown;
mod updates;
mod upstream;
