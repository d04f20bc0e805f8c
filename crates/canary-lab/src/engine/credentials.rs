//! Credentials for an image registry, never from the command line: the environment
//! (`CANARY_REGISTRY_USERNAME` and `CANARY_REGISTRY_PASSWORD`, for CI), else the Docker client's
//! own configuration (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): an `auths` entry
//! written by `docker login`, or the credential helper it names (`credHelpers`, `credsStore`).

use crate::error::{LabError, Result};
use base64::Engine as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const USERNAME_VAR: &str = "CANARY_REGISTRY_USERNAME";
pub const PASSWORD_VAR: &str = "CANARY_REGISTRY_PASSWORD";

/// The Docker config is a small JSON file; anything larger is not one.
const MAX_CONFIG: u64 = 1 << 20;
/// What a credential helper may print.
const MAX_HELPER_OUTPUT: u64 = 64 << 10;
const HELPER_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
    /// Where they came from, for messages (never the secret).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.username, self.source)
    }
}

/// How to set credentials, for an error's help line.
pub fn how_to_log_in(host: &str) -> String {
    format!(
        "run `docker login {host}` (the lab reads the Docker config and its credential helpers), or set {USERNAME_VAR} and {PASSWORD_VAR}"
    )
}

/// The credentials for `host` (`registry:5000`), or `None` when nothing names it.
pub fn for_host(host: &str) -> Result<Option<Credentials>> {
    if let Some(c) = from_env(|k| std::env::var(k).ok())? {
        return Ok(Some(c));
    }
    match docker_config_dir() {
        Some(dir) => from_docker_config(&dir, host, &run_helper),
        None => Ok(None),
    }
}

fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Credentials>> {
    match (get(USERNAME_VAR), get(PASSWORD_VAR)) {
        (None, None) => Ok(None),
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Ok(Some(Credentials {
            username: u,
            secret: p,
            source: format!("{USERNAME_VAR}/{PASSWORD_VAR}"),
        })),
        _ => Err(LabError::usage(
            format!("{USERNAME_VAR} and {PASSWORD_VAR} must be set together, both non-empty"),
            "set both for the registry, or neither to use the Docker config",
        )),
    }
}

fn docker_config_dir() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")),
    }
}

/// `https://host/v1/`, `http://host`, `host/`: the forms `docker login` has written a key in.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

type Helper<'a> = &'a dyn Fn(&str, &str) -> Result<Option<(String, String)>>;

fn from_docker_config(dir: &Path, host: &str, helper: Helper) -> Result<Option<Credentials>> {
    let path = dir.join("config.json");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LabError::read(&path, e)),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG + 1)
        .read_to_string(&mut text)
        .map_err(|e| LabError::read(&path, e))?;
    let shown = path.display().to_string();
    if text.len() as u64 > MAX_CONFIG {
        return Err(LabError::usage(
            format!("{shown} is larger than 1 MiB: not a Docker config"),
            "point DOCKER_CONFIG at the directory of the Docker client's config.json",
        ));
    }
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        LabError::usage(
            format!("{shown}: not JSON ({e})"),
            "fix the file, or point DOCKER_CONFIG elsewhere",
        )
    })?;
    let named_helper = config["credHelpers"]
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| key_host(k) == host))
        .and_then(|(_, v)| v.as_str())
        .or_else(|| config["credsStore"].as_str());
    let entry = config["auths"]
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| key_host(k) == host).map(|(_, v)| v));
    if let Some(entry) = entry {
        if let Some(c) = auths_entry(entry, &shown, host)? {
            return Ok(Some(c));
        }
    }
    match named_helper {
        Some(name) => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(LabError::usage(
                    format!(
                        "{shown} names a credential helper `{}` that is not a program name",
                        crate::text::clean(name)
                    ),
                    "a helper is `docker-credential-NAME`: letters, digits, `-`, `_` and `.`",
                ));
            }
            Ok(helper(name, host)?.map(|(username, secret)| Credentials {
                username,
                secret,
                source: format!("docker-credential-{name}"),
            }))
        }
        None => Ok(None),
    }
}

/// One `auths` entry: `auth` (base64 of `user:password`) or `username` and `password`. An entry
/// with neither (a credential store keeps the secret) is `None`.
fn auths_entry(entry: &serde_json::Value, shown: &str, host: &str) -> Result<Option<Credentials>> {
    let source = format!("{shown} (auths)");
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let bad = || {
            LabError::usage(
                format!("{shown}: the saved login for {host} is not base64 of user:password"),
                how_to_log_in(host),
            )
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            secret: p.to_string(),
            source,
        }));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.to_string(),
            secret: p.to_string(),
            source,
        })),
        _ => Ok(None),
    }
}

/// Asks `docker-credential-NAME get` for `host`'s credentials: the host on stdin, JSON
/// `{"Username", "Secret"}` on stdout, within a deadline that kills it and a bound on its output.
fn run_helper(name: &str, host: &str) -> Result<Option<(String, String)>> {
    let program = format!("docker-credential-{name}");
    let fail = |m: String| LabError::usage(m, how_to_log_in(host));
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot run {program} named by the Docker config: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_HELPER_OUTPUT).read_to_end(&mut out);
        out
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| fail(format!("{program}: {e}")))? {
            break s;
        }
        if started.elapsed() > HELPER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "{program} gave no answer in {} s",
                HELPER_DEADLINE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        // Helpers answer "credentials not found in native keychain" with a failure.
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|_| fail(format!("{program} answered something other than its JSON")))?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) if !s.is_empty() => Ok(Some((u.to_string(), s.to_string()))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_helper(_: &str, _: &str) -> Result<Option<(String, String)>> {
        panic!("no helper expected")
    }

    fn config(text: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), text).unwrap();
        d
    }

    #[test]
    fn the_environment_gives_both_or_neither() {
        assert_eq!(from_env(|_| None).unwrap(), None);
        let both = from_env(|k| Some(if k == USERNAME_VAR { "ci" } else { "pw" }.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!((both.username.as_str(), both.secret.as_str()), ("ci", "pw"));
        let one = from_env(|k| (k == USERNAME_VAR).then(|| "ci".to_string())).unwrap_err();
        assert!(one.to_string().contains("set together"), "{one}");
    }

    #[test]
    fn a_docker_login_entry_is_found_under_any_of_its_key_forms() {
        let auth = base64::engine::general_purpose::STANDARD.encode("lab:s3cret");
        for key in ["reg:5443", "https://reg:5443", "https://reg:5443/v1/"] {
            let d = config(&format!(
                r#"{{"auths": {{"other:1": {{"auth": "eDp5"}}, "{key}": {{"auth": "{auth}"}}}}}}"#
            ));
            let c = from_docker_config(d.path(), "reg:5443", &no_helper).unwrap().unwrap();
            assert_eq!((c.username.as_str(), c.secret.as_str()), ("lab", "s3cret"), "{key}");
            assert!(!format!("{c:?}").contains("s3cret"));
        }
        let d = config(r#"{"auths": {"reg:5443": {"username": "u", "password": "p"}}}"#);
        let c = from_docker_config(d.path(), "reg:5443", &no_helper).unwrap().unwrap();
        assert_eq!(c.username, "u");
        assert_eq!(from_docker_config(d.path(), "elsewhere:1", &no_helper).unwrap(), None);
    }

    #[test]
    fn a_credential_helper_is_asked_for_its_host_only_when_no_entry_has_a_secret() {
        let d = config(r#"{"auths": {"reg:5443": {}}, "credHelpers": {"reg:5443": "pass"}, "credsStore": "desktop"}"#);
        let asked = |name: &str, host: &str| -> Result<Option<(String, String)>> {
            assert_eq!((name, host), ("pass", "reg:5443"));
            Ok(Some(("u".into(), "tok".into())))
        };
        let c = from_docker_config(d.path(), "reg:5443", &asked).unwrap().unwrap();
        assert_eq!(
            (c.secret.as_str(), c.source.as_str()),
            ("tok", "docker-credential-pass")
        );
        let store = |name: &str, _: &str| -> Result<Option<(String, String)>> {
            assert_eq!(name, "desktop");
            Ok(None)
        };
        assert_eq!(from_docker_config(d.path(), "other:1", &store).unwrap(), None);
    }

    #[test]
    fn a_broken_or_hostile_config_is_a_located_error() {
        let d = config("{not json");
        let e = from_docker_config(d.path(), "r:1", &no_helper).unwrap_err();
        assert!(e.to_string().contains("config.json: not JSON"), "{e}");
        let d = config(r#"{"auths": {"r:1": {"auth": "!!!"}}}"#);
        let e = from_docker_config(d.path(), "r:1", &no_helper).unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
        let d = config(r#"{"credsStore": "../../bin/sh"}"#);
        let e = from_docker_config(d.path(), "r:1", &no_helper).unwrap_err();
        assert!(e.to_string().contains("not a program name"), "{e}");
        let d = config(&format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_CONFIG as usize)));
        let e = from_docker_config(d.path(), "r:1", &no_helper).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(from_docker_config(empty.path(), "r:1", &no_helper).unwrap(), None);
    }
}
