//! Staged rollouts: the rules (policy, cohorts, judgement, statistics) are pure and live in
//! `canary-fleet`; the controller that applies them to the registry lives here.

pub use canary_fleet::rollout::*;

pub mod controller;
pub mod delivery;
pub mod train;
pub mod view;
