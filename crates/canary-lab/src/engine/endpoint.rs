//! Which Docker engine the lab talks to: `engines:` in canary.yaml names them (the local socket,
//! remote engines over TCP with mutual TLS) and `--engine NAME` picks one for a command. Without
//! a pick the lab uses `DOCKER_HOST` or the local socket, as the docker CLI does.

use crate::error::{LabError, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One engine of `engines:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// What `--engine` and reports call it: lowercase letters, digits and `-`.
    pub name: String,
    /// `unix:///var/run/docker.sock`, or `tcp://HOST:PORT` of a remote engine (which needs `tls`).
    pub host: String,
    /// The engine's CA and this lab's client certificate and key (PEM files): the engine proves
    /// who it is and lets in only clients its CA signed.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Cases it runs at once when a run spreads over the engines (default: the run's --jobs).
    #[serde(default)]
    pub slots: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How an endpoint is reached, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address<'a> {
    Unix(&'a str),
    /// `host:port` and the TLS files.
    Tcp(&'a str, &'a Tls),
}

impl Endpoint {
    /// Checks the name and the address; a TCP engine without TLS is refused (fail closed: the
    /// engine's API is root on its host).
    pub fn address(&self) -> Result<Address<'_>> {
        if self.slots == Some(0) {
            return Err(LabError::usage(
                format!(
                    "engines: `{}`: slots is 0, so it would run nothing",
                    crate::text::clean(&self.name)
                ),
                "give 1 or more, or leave slots out to take the run's --jobs",
            ));
        }
        let bad = |m: String, help: &str| {
            LabError::usage(format!("engines: `{}`: {m}", crate::text::clean(&self.name)), help)
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(bad(
                "not an engine name".into(),
                "a name is 1 to 32 lowercase letters, digits and `-`",
            ));
        }
        if let Some(path) = self.host.strip_prefix("unix://") {
            if !path.starts_with('/') || path.contains('\0') {
                return Err(bad(
                    format!("`{}` is not a socket path", crate::text::clean(&self.host)),
                    "give unix:///absolute/path/to/docker.sock",
                ));
            }
            return Ok(Address::Unix(&self.host));
        }
        if let Some(hostport) = self.host.strip_prefix("tcp://") {
            let ok = hostport.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty()
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                    && p.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(bad(
                    format!("`{}` is not tcp://HOST:PORT", crate::text::clean(&self.host)),
                    "give tcp://HOST:PORT of the engine's TLS port (2376 by convention)",
                ));
            }
            return match &self.tls {
                Some(tls) => Ok(Address::Tcp(hostport, tls)),
                None => Err(bad(
                    "a remote engine needs tls: (ca, cert, key)".into(),
                    "the lab never speaks to an engine's API in the clear: start dockerd with --tlsverify and give its CA and a client certificate it trusts",
                )),
            };
        }
        Err(bad(
            format!("`{}` is neither unix:// nor tcp://", crate::text::clean(&self.host)),
            "give unix:///path/to/docker.sock or tcp://HOST:PORT with tls:",
        ))
    }
}

static SELECTED: OnceLock<Endpoint> = OnceLock::new();

/// Picks the engine every connection of this process goes to (`--engine NAME`); checked first.
pub fn select(endpoints: &[Endpoint], name: &str) -> Result<()> {
    let Some(e) = endpoints.iter().find(|e| e.name == name) else {
        let known: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        return Err(LabError::usage(
            format!("--engine {}: no such engine", crate::text::clean(name)),
            if known.is_empty() {
                "canary.yaml names no engines: add engines: with a name and host for each".to_string()
            } else {
                format!("the engines canary.yaml names: {}", known.join(", "))
            },
        ));
    };
    e.address()?;
    let _ = SELECTED.set(e.clone());
    Ok(())
}

/// The engine picked for this process, if one was.
pub fn selected() -> Option<&'static Endpoint> {
    SELECTED.get()
}

/// Checks every endpoint of a config (names once each, addresses well formed).
pub fn check_all(endpoints: &[Endpoint]) -> Result<()> {
    for (i, e) in endpoints.iter().enumerate() {
        e.address()?;
        if endpoints[..i].iter().any(|o| o.name == e.name) {
            return Err(LabError::usage(
                format!("engines: `{}` is named twice", e.name),
                "give each engine its own name",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, host: &str, tls: bool) -> Endpoint {
        Endpoint {
            name: name.into(),
            host: host.into(),
            tls: tls.then(|| Tls {
                ca: "ca.pem".into(),
                cert: "cert.pem".into(),
                key: "key.pem".into(),
            }),
            slots: None,
        }
    }

    #[test]
    fn local_sockets_and_remote_engines_with_tls_are_addresses() {
        assert_eq!(
            ep("local", "unix:///var/run/docker.sock", false).address().unwrap(),
            Address::Unix("unix:///var/run/docker.sock")
        );
        let e = ep("e1", "tcp://10.231.1.2:2376", true);
        assert!(matches!(e.address().unwrap(), Address::Tcp("10.231.1.2:2376", _)));
    }

    #[test]
    fn plain_tcp_and_malformed_engines_are_refused_with_what_to_give() {
        for (e, says) in [
            (ep("e1", "tcp://10.0.0.1:2375", false), "needs tls"),
            (ep("e1", "http://10.0.0.1:2375", true), "neither unix:// nor tcp://"),
            (ep("e1", "tcp://10.0.0.1", true), "not tcp://HOST:PORT"),
            (ep("e1", "tcp://a b:1", true), "not tcp://HOST:PORT"),
            (ep("e1", "unix://relative.sock", false), "not a socket path"),
            (ep("E 1", "unix:///s", false), "not an engine name"),
        ] {
            let err = e.address().unwrap_err().to_string();
            assert!(err.contains(says), "{e:?}: {err}");
        }
        let none = Endpoint {
            slots: Some(0),
            ..ep("e1", "unix:///s", false)
        };
        assert!(none.address().unwrap_err().to_string().contains("slots is 0"));
        let twice = [ep("a", "unix:///s", false), ep("a", "unix:///t", false)];
        assert!(check_all(&twice).unwrap_err().to_string().contains("named twice"));
        let err = select(&twice, "nope").unwrap_err();
        assert!(
            miette::Diagnostic::help(&err).unwrap().to_string().contains("a, a"),
            "{err}"
        );
    }
}
