//! The names and ids a runner, a host or a control plane accept from anyone: checked the same
//! way on every side.

use crate::error::Result;

/// An id a runner, session or build may have: 1 to 128 of letters, digits, `.`, `_`, `:`, `-`.
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// Org and channel names: what a pin, a heartbeat or a rollout may name. Letters, digits, `.`,
/// `_` and `-`, 1 to 64 characters, so they print and store as themselves.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if canary_contract::channel::is_name(name) {
        Ok(())
    } else {
        Err(crate::error::LabError::usage(
            format!("{what} `{}` is not a valid name", crate::text::clean(name)),
            format!("a {what} name is 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `-`"),
        ))
    }
}
