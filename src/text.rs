//! Terminal-safe text lives in `canary-contract`; this is its old path.

pub use canary_contract::text::*;
