//! Canary Lab: a compatibility lab and canary harness for AI coding-agent CLIs.
//!
//! Data flow, left to right: suites + canary repos → plan (cases) → engine (containers) →
//! checks → one [`report::RunReport`] → JUnit / JSON / terminal. See the README for the tour.

/// Installs the TLS crypto provider (ring) the HTTP clients use. Every entry point calls it
/// before building a client; later calls do nothing.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub mod archive;
pub mod authority;
pub mod bounds;
pub mod builds;
pub mod cli;
pub mod compat;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod engine;
pub mod error;
pub mod forge;
pub mod fsutil;
pub mod gate;
pub mod heartbeat;
pub mod http_serve;
pub mod images;
pub mod lab;
pub mod matrix;
pub mod orgs;
pub mod pipeline;
pub mod progress;
pub mod providers;
pub mod registry;
pub mod report;
pub mod repos;
pub mod rollout;
pub mod runner;
pub mod simulate;
pub mod spool;
pub mod status;
pub mod stub;
pub mod suite;
pub mod sweeps;
pub mod telemetry;
pub mod text;
pub mod tokens;
pub mod update;
pub mod upstream;
pub mod webhook;
pub mod yaml;
