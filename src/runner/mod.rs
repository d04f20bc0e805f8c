//! The reference runner's parts: Runner Contract events, the approval policy, and the adapters
//! that translate each CLI's native stream. See docs/runner-contract.md.

pub mod adapters;
pub mod agent;
pub mod events;
pub mod policy;
pub mod pr;
pub mod proxy;
pub mod session;
