//! What a runner build is made of, as every side names it: its components and what changes
//! between two builds.

use crate::Provider;
use serde::{Deserialize, Serialize};

/// The runner's component name.
/// Image labels a runner build carries to describe itself (set when the image is built, read
/// by the lab's engine, the registry and older tools).
pub mod labels {
    pub const RUNNER_VERSION: &str = "canary-lab.runner-version";
    pub const ADAPTERS: &str = "canary-lab.adapters";
    /// `provider=version,provider=version`
    pub const RUNTIMES: &str = "canary-lab.runtimes";
}

/// The short form of an image or build id as people read it: its first 12 hex digits (after
/// `sha256:`), cut at a character boundary since ids can come from users.
pub fn short_id(id: &str) -> &str {
    let hex = id.trim_start_matches("sha256:");
    let end = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    &hex[..end]
}

pub const RUNNER: &str = "runner";
/// How a runner taken from a user's image marks its package.
pub const RUNNER_IMAGE_PREFIX: &str = "image:";

/// One component of a build: the runner or a CLI at an exact version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// `runner`, or a provider name (`codex`, `claude-code`).
    pub name: String,
    /// The runner's version, or the CLI's own version (`2.1.330` for Claude Code).
    pub version: String,
    /// The package that carries it (`openai-codex-cli-bin`), for CLIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The package's version (`0.2.187` of claude-agent-sdk), for CLIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
    /// `sha256:` of the wheel (CLIs) or of the binary (runner): what makes the layer.
    pub digest: String,
}

impl Component {
    pub fn provider(&self) -> Option<Provider> {
        Provider::from_name(&self.name)
    }

    /// Whether this is a runner that came from a user's runner image.
    pub fn from_image(&self) -> bool {
        self.name == RUNNER
            && self
                .package
                .as_deref()
                .is_some_and(|p| p.starts_with(RUNNER_IMAGE_PREFIX))
    }

    /// `codex 0.163.0` (with the package version when it differs).
    pub fn display(&self) -> String {
        match &self.package_version {
            Some(pv) if *pv != self.version => format!(
                "{} {} ({} {pv})",
                self.name,
                self.version,
                self.package.as_deref().unwrap_or("")
            ),
            _ => format!("{} {}", self.name, self.version),
        }
    }
}

/// What changed from one build to another, component by component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub component: String,
    /// `None`: the component is new.
    pub from: Option<String>,
    /// `None`: the component was removed.
    pub to: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} → {}",
            self.component,
            self.from.as_deref().unwrap_or("(none)"),
            self.to.as_deref().unwrap_or("(removed)")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::short_id;

    #[test]
    fn short_ids_are_twelve_characters_cut_at_a_boundary() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        // A user-typed id of multi-byte characters is cut between characters, never inside one.
        assert_eq!(short_id("ÄÖÜÄÖÜÄÖÜÄÖÜÄÖÜ"), "ÄÖÜÄÖÜÄÖÜÄÖÜ");
    }
}
