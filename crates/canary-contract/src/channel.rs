//! Release channels: what a build is promoted to, an org is pinned to and a host follows. Any
//! valid name may be a channel (a gate policy can define more); `stable` and `beta` are the two
//! every deployment has, and this is the one place their names are spelled.

use serde::{Deserialize, Serialize};

/// A channel's name, checked when it is made (see [`is_name`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Channel(String);

impl Channel {
    /// What every host follows unless told otherwise, and where a deliberate promotion ends.
    pub const STABLE: &'static str = "stable";
    /// Where green candidates go first.
    pub const BETA: &'static str = "beta";
    /// The channels every deployment has, in the order a build moves through them backwards.
    pub const BUILT_IN: [&'static str; 2] = [Channel::STABLE, Channel::BETA];

    pub fn stable() -> Channel {
        Channel(Channel::STABLE.to_string())
    }

    pub fn beta() -> Channel {
        Channel(Channel::BETA.to_string())
    }

    pub fn is_stable(&self) -> bool {
        self.0 == Channel::STABLE
    }

    pub fn is_beta(&self) -> bool {
        self.0 == Channel::BETA
    }

    /// [`Channel::BUILT_IN`] as channels.
    pub fn built_in() -> [Channel; 2] {
        [Channel::stable(), Channel::beta()]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `s` is the `stable` channel's name (for code that still holds channels as text).
pub fn is_stable(s: &str) -> bool {
    s == Channel::STABLE
}

/// Org and channel names: 1 to 64 letters, digits, `.`, `_` and `-`, not starting with `-`, so
/// they print, store and pass as arguments as themselves.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl std::str::FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Channel, String> {
        if is_name(s) {
            Ok(Channel(s.to_string()))
        } else {
            Err(format!(
                "channel `{}` is not a valid name: 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `-`",
                crate::text::clean(&s.chars().take(80).collect::<String>())
            ))
        }
    }
}

crate::text_value::text_newtype!(Channel);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_checked_names_and_stable_is_known() {
        assert!(Channel::stable().is_stable());
        assert!(!Channel::beta().is_stable());
        assert_eq!("nightly-2".parse::<Channel>().unwrap().as_str(), "nightly-2");
        for bad in ["", "-x", "a b", "../etc", "x\u{1b}[2J", &"a".repeat(65)] {
            let e = bad.parse::<Channel>().unwrap_err();
            assert!(e.contains("not a valid name") && !e.contains('\u{1b}'), "{bad:?}: {e}");
        }
        let c: Channel = serde_json::from_str("\"beta\"").unwrap();
        assert_eq!(c, Channel::beta());
        assert!(serde_json::from_str::<Channel>("\"no way\"").is_err());
    }
}
