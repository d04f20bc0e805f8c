//! The release side of Canary Lab: what a build must prove and where it may go. `canary.yaml`
//! (`config`), the promotion gate and its workflows (`gate`), org policies (`orgs`), upstream
//! version sources (`upstream`), the pipeline that builds and judges each new version
//! (`pipeline`), the version matrix (`matrix`), post-update repo sweeps (`sweeps`), verdict
//! webhooks (`webhook`) and the one-screen `status`. It runs the lab and writes the registry;
//! the control plane and the CLI above it serve and show what it decides.

// The layers below, at the paths this crate's modules have always used.
use canary_contract::text;
use canary_fleet::rollout;
use canary_lab::{builds, distribution, engine, images, lab, progress, providers, report, repos};
use canary_registry as registry;
use canary_runner::{bounds, compat, error, fsutil, init_tls, yaml};

pub mod config;
pub mod drift;
pub mod engines;
pub mod gate;
pub mod matrix;
pub mod orgs;
pub mod pipeline;
pub mod publish;
pub mod run;
pub mod status;
pub mod sweeps;
pub mod upstream;
pub mod webhook;
