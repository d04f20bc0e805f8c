//! The agent CLIs the lab knows.

use serde::{Deserialize, Serialize};

/// One agent CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Codex,
    ClaudeCode,
    Gemini,
}

impl Provider {
    /// Every provider the lab knows, in the order builds stack their layers.
    pub const ALL: [Provider; 3] = [Provider::Codex, Provider::ClaudeCode, Provider::Gemini];

    /// The provider named `name` (`claude` is accepted for Claude Code).
    pub fn from_name(name: &str) -> Option<Provider> {
        match name {
            "codex" => Some(Provider::Codex),
            "claude-code" | "claude" => Some(Provider::ClaudeCode),
            "gemini" => Some(Provider::Gemini),
            _ => None,
        }
    }

    /// The runner adapter that reads this CLI's machine-readable stream.
    pub fn adapter(self) -> &'static str {
        match self {
            Provider::Codex => "codex-exec-json",
            Provider::ClaudeCode => "claude-stream-json",
            Provider::Gemini => "gemini-stream-json",
        }
    }

    /// The command the CLI is run as.
    pub fn command(self) -> &'static str {
        self.layout().2
    }

    pub const fn name(self) -> &'static str {
        match self {
            Provider::Codex => "codex",
            Provider::ClaudeCode => "claude-code",
            Provider::Gemini => "gemini",
        }
    }

    /// The PyPI package that carries the binary.
    pub fn package(self) -> Option<&'static str> {
        match self {
            Provider::Codex => Some("openai-codex-cli-bin"),
            Provider::ClaudeCode => Some("claude-agent-sdk"),
            Provider::Gemini => None,
        }
    }

    /// The folder of the wheel that holds the CLI and what it runs beside it (Codex's
    /// sandbox helper `codex-resources/bwrap` and `codex-path/rg` must stay next to `bin/`),
    /// the binary's path inside that folder, and the command name.
    pub fn layout(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Provider::Codex => ("codex_cli_bin/", "bin/codex", "codex"),
            Provider::ClaudeCode => ("claude_agent_sdk/_bundled/", "claude", "claude"),
            Provider::Gemini => ("", "", "gemini"),
        }
    }
}

/// Parses what a person or a file names a CLI by (see [`Provider::from_name`]); the error says
/// which names there are.
impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Provider, String> {
        Provider::from_name(s).ok_or_else(|| {
            format!(
                "unknown provider `{}`: write codex, claude-code or gemini",
                crate::text::clean(&s.chars().take(80).collect::<String>())
            )
        })
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_providers_and_back_and_others_are_refused_by_name() {
        for p in Provider::ALL {
            assert_eq!(p.name().parse::<Provider>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("claude".parse::<Provider>(), Ok(Provider::ClaudeCode));
        let e = "cursor\u{1b}[2J".parse::<Provider>().unwrap_err();
        assert!(e.starts_with("unknown provider `cursor"), "{e}");
        assert!(!e.contains('\u{1b}'), "the name is cleaned before it is shown: {e}");
    }
}
