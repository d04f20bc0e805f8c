//! The control plane of Canary Lab: `canary serve` (`serve` assembles it: the runner endpoints
//! of `control`, the dashboard's pages, served by `http_serve`), who may
//! call what (`authority`), the dashboard, heartbeats, the rollout controller that applies the
//! fleet's rules to the registry (`rollout::controller`), the updates server with its keys and
//! TUF publication (`update`), and the simulated fleet (`simulate`). All of its state lives in
//! the registry, so a replica that is killed loses nothing.

// The layers below, at the paths this crate's modules have always used.
use canary_contract::text;
use canary_fleet::{telemetry, tokens};
use canary_lab::{engine, lab, report};
use canary_registry as registry;
use canary_release::{config, gate, orgs, status, sweeps, webhook};
use canary_runner::{error, fsutil};

pub mod access;
pub mod authority;
pub mod control;
pub mod dashboard;
pub mod heartbeat;
pub mod http_serve;
pub mod kpis;
pub mod metrics;
pub mod replica;
pub mod rollout;
pub mod serve;
pub mod simulate;
pub mod update;
