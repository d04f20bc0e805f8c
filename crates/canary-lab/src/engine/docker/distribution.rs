//! Runner builds to and from an image registry through the engine: tag and push, pull by digest,
//! and what crossed the wire. The engine checks a manifest pulled by digest against that digest
//! itself; what the lab checks on top (the image is the build it should be) is in
//! `crate::distribution`.

use super::*;
use crate::engine::credentials::{Credentials, how_to_log_in};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use canary_contract::oci::{PushedRef, Repository};
use serde::Serialize;

/// What a push or a pull moved: layers sent (fetched) and layers the other side already had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub layers_moved: usize,
    pub layers_present: usize,
    /// Compressed bytes of the layers fetched, as the engine reported them (pulls only: the
    /// engine's push progress does not say which layer it is about).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_moved: Option<u64>,
}

/// Attempts at a registry operation that failed for a reason that may pass (a 5xx, a dropped
/// connection); refusals (401, unknown manifest, a digest that does not match) are not retried,
/// nor is a failure the engine already retried itself.
const ATTEMPTS: u32 = 3;

/// A registry operation's failure as the engine reported it, and whether the engine had already
/// retried it: it tries each layer upload and download five times with growing waits (about
/// 50 s in all) before it gives up, so trying the whole push again would multiply that.
struct Failed {
    message: String,
    engine_retried: bool,
}

impl Failed {
    fn at(message: String, engine_retried: bool) -> Failed {
        Failed {
            message,
            engine_retried,
        }
    }

    fn may_try_again(&self, attempt: u32) -> bool {
        attempt < ATTEMPTS && !self.engine_retried && transient(&self.message)
    }

    /// The error the lab reports after `attempts` tries.
    fn gave_up(self, host: &str, attempts: u32) -> LabError {
        let mut e = registry_error(host, &self.message);
        if let LabError::ImageRegistry { hint, .. } = &mut e {
            let tries = if self.engine_retried {
                "the engine retried each layer itself before it gave up".to_string()
            } else if attempts > 1 {
                format!("tried {attempts} times")
            } else {
                "tried once: not a failure that passes on its own".to_string()
            };
            *hint = format!("{hint} ({tries})");
        }
        e
    }
}

fn docker_credentials(c: Option<&Credentials>, host: &str) -> Option<DockerCredentials> {
    c.map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.secret.clone()),
        serveraddress: Some(host.to_string()),
        ..Default::default()
    })
}

/// Whether a registry error may pass on its own.
fn transient(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "500 internal",
        "502 bad gateway",
        "503 service",
        "504 gateway",
        "connection reset",
        "connection refused",
        "eof",
        "i/o timeout",
        "tls handshake timeout",
    ]
    .iter()
    .any(|t| m.contains(t))
}

/// The engine's words about a registry, with what to do about them.
pub fn registry_error(host: &str, message: &str) -> LabError {
    let m = message.to_ascii_lowercase();
    let hint = if m.contains("unauthorized") || m.contains("authentication required") || m.contains("no basic auth") {
        format!("the registry refused the credentials: {}", how_to_log_in(host))
    } else if m.contains("x509") || m.contains("certificate") || m.contains("server gave http response") {
        format!(
            "the engine does not trust the registry's TLS certificate: put its CA at /etc/docker/certs.d/{host}/ca.crt on the engine's host"
        )
    } else if m.contains("verification failed") || m.contains("digest did not match") || m.contains("digest mismatch") {
        "the registry served content that does not match the recorded digest: nothing was taken; push the build again from a lab that has it".to_string()
    } else if m.contains("manifest unknown") || m.contains("not found") {
        "the registry has no such manifest: push the build with `canary images push BUILD`".to_string()
    } else {
        format!("the message is the engine's own: check the registry at {host} is up")
    };
    LabError::ImageRegistry {
        registry: host.to_string(),
        message: crate::text::clean(&message.chars().take(400).collect::<String>()).to_string(),
        hint,
    }
}

fn stream_message(e: bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerStreamError { error } => error,
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

impl DockerBackend {
    /// Pushes `image` as `repository:tag`; returns the manifest digest the registry stored and
    /// what moved. Layers the registry already has are not sent again.
    pub async fn push_image(
        &self,
        image: &str,
        repository: &Repository,
        tag: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(PushedRef, Transfer)> {
        let name = repository.name();
        self.docker
            .tag_image(
                image,
                Some(TagImageOptionsBuilder::default().repo(&name).tag(tag).build()),
            )
            .await
            .map_err(docker_err("tagging a build for its registry"))?;
        let mut attempt = 0;
        let (digest, transfer) = loop {
            attempt += 1;
            match self.push_once(&name, tag, repository.host(), credentials).await {
                Ok(done) => break done,
                Err(f) if f.may_try_again(attempt) => {
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                Err(f) => return Err(f.gave_up(repository.host(), attempt)),
            }
        };
        let digest = match digest {
            Some(d) => d,
            None => self
                .repo_digest(&format!("{name}:{tag}"), &name)
                .await?
                .ok_or_else(|| {
                    registry_error(repository.host(), "the engine reported no manifest digest for the push")
                })?,
        };
        let pushed = repository
            .at(&digest)
            .map_err(|m| registry_error(repository.host(), &m))?;
        Ok((pushed, transfer))
    }

    async fn push_once(
        &self,
        name: &str,
        tag: &str,
        host: &str,
        credentials: Option<&Credentials>,
    ) -> std::result::Result<(Option<String>, Transfer), Failed> {
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = self
            .docker
            .push_image(name, Some(options), docker_credentials(credentials, host));
        let mut transfer = Transfer::default();
        let mut digest = None;
        let mut engine_retried = false;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Failed::at(stream_message(e), engine_retried))?;
            let error = info.error_detail.and_then(|d| d.message);
            let status = progress(error, info.status, &mut engine_retried)?;
            if status == "Pushed" {
                transfer.layers_moved += 1;
            } else if status == "Layer already exists" || status.starts_with("Mounted from") {
                transfer.layers_present += 1;
            } else if let Some((_, rest)) = status.split_once(": digest: ") {
                digest = rest.split_whitespace().next().map(str::to_string);
            }
        }
        Ok((digest, transfer))
    }

    /// The digest `image` carries in `name` (its `RepoDigests`), if any.
    pub async fn repo_digest(&self, image: &str, name: &str) -> Result<Option<String>> {
        let img = self
            .docker
            .inspect_image(image)
            .await
            .map_err(docker_err("inspecting a pushed build"))?;
        Ok(img.repo_digests.unwrap_or_default().iter().find_map(|r| {
            r.rsplit_once('@')
                .filter(|(n, _)| *n == name)
                .map(|(_, d)| d.to_string())
        }))
    }

    /// Pulls `pushed` by its digest (the engine refuses a manifest that does not match it);
    /// returns the image id and what moved.
    pub async fn pull_image(
        &self,
        pushed: &PushedRef,
        credentials: Option<&Credentials>,
    ) -> Result<(String, Transfer)> {
        let host = pushed.repository().host();
        let mut attempt = 0;
        let transfer = loop {
            attempt += 1;
            match self.pull_once(pushed, credentials).await {
                Ok(t) => break t,
                Err(f) if f.may_try_again(attempt) => {
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                Err(f) => return Err(f.gave_up(host, attempt)),
            }
        };
        let id = self
            .image(&pushed.to_string())
            .await?
            .map(|i| i.id)
            .ok_or_else(|| registry_error(host, "the engine reported the pull done but has no such image"))?;
        Ok((id, transfer))
    }

    async fn pull_once(
        &self,
        pushed: &PushedRef,
        credentials: Option<&Credentials>,
    ) -> std::result::Result<Transfer, Failed> {
        let reference = pushed.to_string();
        let options = CreateImageOptionsBuilder::default().from_image(&reference).build();
        let mut stream = self.docker.create_image(
            Some(options),
            None,
            docker_credentials(credentials, pushed.repository().host()),
        );
        let mut transfer = Transfer::default();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut engine_retried = false;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Failed::at(stream_message(e), engine_retried))?;
            let error = info.error_detail.and_then(|d| d.message);
            let status = progress(error, info.status, &mut engine_retried)?;
            let id = info.id.unwrap_or_default();
            match status.as_str() {
                "Pull complete" => transfer.layers_moved += 1,
                "Already exists" => transfer.layers_present += 1,
                "Downloading" => {
                    if let Some(total) = info.progress_detail.and_then(|p| p.total).filter(|t| *t > 0) {
                        sizes.insert(id, total as u64);
                    }
                }
                _ => {}
            }
        }
        transfer.bytes_moved = Some(sizes.values().sum());
        Ok(transfer)
    }
}

/// The status of one progress message of a push or pull, or the failure it reports; notes
/// when the engine says it retries.
fn progress(
    error: Option<String>,
    status: Option<String>,
    engine_retried: &mut bool,
) -> std::result::Result<String, Failed> {
    if let Some(message) = error {
        return Err(Failed::at(message, *engine_retried));
    }
    let status = status.unwrap_or_default();
    *engine_retried |= status.starts_with("Retrying in");
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_say_what_to_do() {
        for (message, says) in [
            ("unauthorized: authentication required", "docker login r:1"),
            (
                "Get \"https://r:1/v2/\": no basic auth credentials",
                "CANARY_REGISTRY_USERNAME",
            ),
            (
                "x509: certificate signed by unknown authority",
                "/etc/docker/certs.d/r:1/ca.crt",
            ),
            (
                "manifest verification failed for digest sha256:ab",
                "does not match the recorded digest",
            ),
            ("manifest unknown: manifest unknown", "canary images push"),
            (
                "received unexpected HTTP status: 503 Service Unavailable",
                "check the registry at r:1 is up",
            ),
        ] {
            let e = registry_error("r:1", message);
            let help = miette::Diagnostic::help(&e).unwrap().to_string();
            assert!(help.contains(says), "{message}: {help}");
            assert!(e.to_string().contains(message), "{e}");
        }
        let e = registry_error("r:1", "bad \u{1b}[2J thing");
        assert!(!e.to_string().contains('\u{1b}'));
    }

    #[test]
    fn only_what_may_pass_is_retried() {
        assert!(transient("received unexpected HTTP status: 502 Bad Gateway"));
        assert!(transient(
            "read tcp 10.0.0.1:1->10.0.0.2:2: read: connection reset by peer"
        ));
        assert!(!transient("unauthorized: authentication required"));
        assert!(!transient("manifest verification failed for digest sha256:ab"));
        let f = |m: &str, engine_retried| Failed {
            message: m.into(),
            engine_retried,
        };
        let busy = "received unexpected HTTP status: 503 Service Unavailable";
        assert!(f(busy, false).may_try_again(1) && f(busy, false).may_try_again(2));
        assert!(!f(busy, false).may_try_again(ATTEMPTS), "bounded");
        assert!(
            !f(busy, true).may_try_again(1),
            "the engine's own retries are not multiplied"
        );
        let said = |e: LabError| miette::Diagnostic::help(&e).unwrap().to_string();
        assert!(said(f(busy, false).gave_up("r:1", 3)).contains("(tried 3 times)"));
        assert!(said(f(busy, true).gave_up("r:1", 1)).contains("the engine retried each layer itself"));
        assert!(said(f("unauthorized: x", false).gave_up("r:1", 1)).contains("tried once"));
    }
}
