//! The integration tests: the real `canary` binary, driven as a user drives it. Tests under
//! `docker::` use the real Docker engine (nextest runs them in the `docker` test group).

mod adapters;
mod cli;
mod docker;
mod docker_dashboard;
mod docker_drift;
mod docker_fleet;
mod docker_images;
mod docker_matrix;
mod docker_pipeline;
mod docker_registry;
mod docker_sweeps;
mod docker_updates;
mod docs;
mod forge;
mod helpers;
mod hostile;
mod names;
mod real_cli;
mod registry;
mod rollout;
mod security;
mod shown;
mod updates;
mod upstream;
