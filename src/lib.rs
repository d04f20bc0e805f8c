//! Canary Lab: a compatibility lab and canary harness for AI coding-agent CLIs.
//!
//! Data flow, left to right: suites + canary repos → plan (cases) → engine (containers) →
//! checks → one [`report::RunReport`] → JUnit / JSON / terminal. See the README for the tour.

pub use canary_contract as contract;
pub use canary_runner::init_tls;
// What the runner crate holds, at the paths the lab has always used.
pub use canary_runner::{archive, bounds, compat, error, forge, fsutil, runner, spool, stub, yaml};
// The lab stage's crate, at the paths the rest has always used.
pub use canary_lab::{builds, engine, images, lab, progress, providers, report, repos, suite, view};
// The fleet's pure rules and the registry that stores everything, likewise.
pub use canary_fleet::{otlp, telemetry, tokens};
pub use canary_registry as registry;
// The release side: canary.yaml, gate, org policies, upstream, pipeline, matrix, sweeps.
pub use canary_release::{
    config, drift, engines, gate, matrix, orgs, pipeline, publish, run, status, sweeps, upstream, webhook,
};
// The control plane: canary serve, authority, dashboard, rollouts, updates, the simulated fleet.
pub use canary_control::{
    access, authority, control, dashboard, heartbeat, http_serve, kpis, rollout, serve, simulate, update,
};

pub mod cli;
pub mod text;
