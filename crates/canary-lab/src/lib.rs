//! The lab stage of Canary Lab: suites and canary repos in, one [`report::RunReport`] out.
//!
//! Data flow, left to right: suites + canary repos → plan (cases) → engine (containers running
//! a runner build) → checks → one report model → JUnit / JSON / HTML / terminal. Runner builds
//! (`builds`, `images`, `providers`) are made here too, because a case runs in one. Nothing in
//! this crate knows the registry, the gate or the control plane: they consume its report.

// What the runner crate holds, at the paths the lab has always used.
pub use canary_contract::text;
pub use canary_runner::{error, forge, fsutil, runner, stub, yaml};

pub mod builds;
pub mod distribution;
pub mod engine;
pub mod images;
pub mod lab;
pub mod progress;
pub mod providers;
pub mod report;
pub mod repos;
mod settings;
pub mod suite;
pub mod view;

pub use settings::Settings;
