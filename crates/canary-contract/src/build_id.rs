//! A runner build's id: the content id of its image (`sha256:` and hex digits), the one value
//! the registry, the gate, rollouts, pins and hosts name a build by. Parsed once where it comes
//! in (a registry row, an HTTP body, an image the engine reports); a name a person types (a
//! prefix, an image reference) is resolved to one by the registry.

use serde::{Deserialize, Serialize};

/// A build id, checked when it is made: `sha256:` then 1 to 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BuildId(String);

impl BuildId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as people read it.
    pub fn short(&self) -> &str {
        crate::build::short_id(&self.0)
    }
}

/// Whether `s` is a build id.
pub fn is_build_id(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| (1..=64).contains(&h.len()) && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

impl std::str::FromStr for BuildId {
    type Err = String;
    fn from_str(s: &str) -> Result<BuildId, String> {
        if is_build_id(s) {
            Ok(BuildId(s.to_string()))
        } else {
            Err(format!(
                "`{}` is not a build id (sha256: and hex digits)",
                crate::text::clean(&s.chars().take(80).collect::<String>())
            ))
        }
    }
}

crate::text_value::text_newtype!(BuildId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_are_checked_digests() {
        let id: BuildId = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(id.short(), "abababababab");
        assert_eq!(id, format!("sha256:{}", "ab".repeat(32)));
        for bad in [
            "",
            "sha256:",
            "abc",
            "sha256:XYZ",
            "sha256:ab cd",
            "../x",
            &format!("sha256:{}", "a".repeat(65)),
        ] {
            assert!(bad.parse::<BuildId>().is_err(), "{bad:?}");
        }
        let e = "x\u{1b}[2J".parse::<BuildId>().unwrap_err();
        assert!(!e.contains('\u{1b}'), "{e}");
        assert!(serde_json::from_str::<BuildId>("\"sha256:zz\"").is_err());
        let back: BuildId = serde_json::from_str("\"sha256:00ff\"").unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), "\"sha256:00ff\"");
    }
}
