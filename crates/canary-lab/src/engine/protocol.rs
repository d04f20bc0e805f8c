//! The executor wire protocol lives in `canary-contract`; this is its old path.

pub use canary_contract::exec::*;
