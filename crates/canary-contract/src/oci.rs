//! Where runner builds are published: an OCI registry's repository, and the reference a build
//! was pushed under (`host[:port]/repository@sha256:…`). The reference is what channels, pins,
//! rollouts, assignments and update offers carry, and what every engine pulls a build by; both
//! are checked when they are made, since they come from a user's flag, a config file, a registry
//! row or an engine's answer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A registry and repository to publish to: `host[:port]/path`, from `--to` or `oci_registry:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    host: String,
    path: String,
}

/// A build as published: its repository and the manifest digest the registry stored it under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PushedRef {
    repository: Repository,
    digest: String,
}

fn clip(s: &str) -> String {
    crate::text::clean(&s.chars().take(120).collect::<String>()).to_string()
}

/// `registry.example:5000`, `10.0.0.1:5443`, `localhost`: lowercase DNS labels or an IPv4
/// address, and an optional port.
fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    port_ok && labels_ok
}

/// The distribution spec's path grammar: components of lowercase letters and digits, joined
/// inside by `.`, `_`, `__` or dashes, separated by `/`.
fn valid_path(p: &str) -> bool {
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-'))
            && !c.contains("..")
            && !c.contains("___")
    };
    !p.is_empty() && p.len() <= 200 && p.split('/').all(component)
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

impl Repository {
    /// Parses `host[:port]/path` (an `https://` in front is allowed and dropped). Credentials in
    /// the address and plain `http://` are refused: credentials come from the Docker config or
    /// the environment, and engines pull builds over TLS only.
    pub fn parse(s: &str) -> Result<Repository, String> {
        let shown = clip(s);
        let rest = if let Some(r) = s.strip_prefix("https://") {
            r
        } else if s.starts_with("http://") {
            return Err(format!(
                "`{shown}`: the lab publishes builds over TLS only; give the registry's https address (its CA goes in /etc/docker/certs.d/HOST:PORT/ca.crt)"
            ));
        } else if s.contains("://") {
            return Err(format!("`{shown}`: not a registry address (host[:port]/repository)"));
        } else {
            s
        };
        let rest = rest.trim_end_matches('/');
        let Some((host, path)) = rest.split_once('/') else {
            return Err(format!(
                "`{shown}` names no repository: give host[:port]/repository (e.g. registry.internal:5000/canary/builds)"
            ));
        };
        if host.contains('@') {
            return Err(format!(
                "`{shown}` carries credentials: they come from the Docker config (`docker login`) or CANARY_REGISTRY_USERNAME and CANARY_REGISTRY_PASSWORD, never from an address"
            ));
        }
        if !valid_host(host) {
            return Err(format!("`{shown}`: `{}` is not a registry host[:port]", clip(host)));
        }
        if !valid_path(path) {
            return Err(format!(
                "`{shown}`: `{}` is not a repository name (lowercase letters, digits, `.`, `_`, `-`, parts separated by `/`)",
                clip(path)
            ));
        }
        Ok(Repository {
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The registry's `host[:port]`: what credentials are looked up by.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host[:port]/path`: the name an engine tags and pushes.
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }

    /// The reference of a manifest digest in this repository.
    pub fn at(&self, digest: &str) -> Result<PushedRef, String> {
        if !is_digest(digest) {
            return Err(format!(
                "`{}` is not a manifest digest (sha256: and 64 hex digits)",
                clip(digest)
            ));
        }
        Ok(PushedRef {
            repository: self.clone(),
            digest: digest.to_string(),
        })
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

impl PushedRef {
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The manifest digest, `sha256:…`.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl fmt::Display for PushedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repository, self.digest)
    }
}

impl std::str::FromStr for PushedRef {
    type Err = String;
    fn from_str(s: &str) -> Result<PushedRef, String> {
        let Some((name, digest)) = s.rsplit_once('@') else {
            return Err(format!(
                "`{}` is not a pushed reference (host/repository@sha256:…)",
                clip(s)
            ));
        };
        if name.contains("://") {
            return Err(format!(
                "`{}` is not a pushed reference (no scheme: host/repository@sha256:…)",
                clip(s)
            ));
        }
        Repository::parse(name)?.at(digest)
    }
}

crate::text_value::serde_as_text!(PushedRef);

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_repository_is_host_and_path() {
        let r = Repository::parse("10.231.0.1:5443/canary/builds").unwrap();
        assert_eq!(r.host(), "10.231.0.1:5443");
        assert_eq!(r.name(), "10.231.0.1:5443/canary/builds");
        assert_eq!(
            Repository::parse("https://registry.internal/lab/").unwrap().name(),
            "registry.internal/lab"
        );
    }

    #[test]
    fn hostile_or_wrong_addresses_are_refused_with_what_to_give() {
        for (bad, says) in [
            ("http://r:5000/x", "TLS only"),
            ("ftp://r/x", "not a registry address"),
            ("registry.internal", "names no repository"),
            ("user:pw@r:5000/x", "carries credentials"),
            ("R:5000/x", "not a registry host"),
            ("r:99999/x", "not a registry host"),
            ("r:5000/Upper", "not a repository name"),
            ("r:5000/a//b", "not a repository name"),
            ("r:5000/-a", "not a repository name"),
            ("r:5000/a/../b", "not a repository name"),
            ("r:5000/a\u{1b}[31m", "not a repository name"),
        ] {
            let e = Repository::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains('\u{1b}'), "{e}");
        }
    }

    #[test]
    fn a_pushed_reference_round_trips_and_checks_its_digest() {
        let s = format!("10.231.0.1:5443/canary/builds@{D}");
        let r: PushedRef = s.parse().unwrap();
        assert_eq!(r.to_string(), s);
        assert_eq!(r.digest(), D);
        assert_eq!(r.repository().host(), "10.231.0.1:5443");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<PushedRef>(&json).unwrap(), r);
        for bad in [
            "r:5000/x@sha256:abc",
            "r:5000/x@md5:0123",
            "r:5000/x",
            "https://r:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(bad.parse::<PushedRef>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<PushedRef>("\"r/x@sha256:00\"").is_err());
    }
}
