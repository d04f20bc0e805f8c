//! Customer-hosted runners, the control plane's side: the offers and artifacts it serves
//! ([`server`]), its keys ([`sign`]) and the TUF metadata it publishes ([`tuf`]). The types and
//! rules a host applies, and the host itself, live in the `canary-runner` crate and are
//! re-exported here.

pub use canary_runner::update::*;

pub mod keys;
pub mod server;
pub mod sign;
pub mod tuf;
