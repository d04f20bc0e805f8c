//! The Update Framework on a customer's host, through the `tough` client: the root a host
//! pins, the metadata it verifies against it (following root rotations, refusing rollbacks,
//! expired or under-signed metadata), and the offer document it binds to its org and channel.
//! The control plane's side (roots, publication) lives in the lab's `update::tuf`.

use super::BuildManifest;
use canary_contract::Channel;
use std::path::{Path, PathBuf};
use tough::schema::{RoleType, Root, Signed};

/// The largest root file a host or the control plane reads.
pub const MAX_ROOT: u64 = 1024 * 1024;

/// An error with its causes, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    crate::text::clean(&out).into_owned()
}

/// Parses a root file's text (bounded), without trusting it yet.
pub fn parse_root(text: &[u8]) -> std::result::Result<Signed<Root>, String> {
    if text.len() as u64 > MAX_ROOT {
        return Err(format!("a root file is at most {MAX_ROOT} bytes"));
    }
    let raw: serde_json::Value = serde_json::from_slice(text).map_err(|e| format!("not TUF root metadata: {e}"))?;
    if raw["signed"]["_type"] != "root" {
        return Err("not TUF root metadata: `signed._type` is not `root`".into());
    }
    serde_json::from_value(raw).map_err(|e| format!("not TUF root metadata: {e}"))
}

/// A root that verifies with its own keys at its own threshold: the check for a root a host is
/// told to trust, or one a control plane is about to publish.
pub fn self_signed(root: &Signed<Root>) -> std::result::Result<(), String> {
    root.signed.verify_role(root).map_err(|e| {
        format!(
            "the root is not signed by a threshold of its own root keys: {}",
            chain(&e)
        )
    })
}

/// The target a host of `org` following `channel` reads.
pub fn target_name(org: Option<&str>, channel: &Channel) -> String {
    match org {
        Some(o) => format!("offers/org/{o}/{channel}.json"),
        None => format!("offers/channel/{channel}.json"),
    }
}

/// tough's transport over the host's HTTP client: the runner's token on every request, 404 as
/// "no such file" (how a host learns there is no newer root), every answer bounded.
#[derive(Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    token: String,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpTransport")
    }
}

/// The most a host reads of one metadata or target file (tough also bounds each by role).
const MAX_FETCH: usize = 16 * 1024 * 1024;

impl HttpTransport {
    pub fn new(http: reqwest::Client, token: &str) -> HttpTransport {
        HttpTransport {
            http,
            token: token.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl tough::Transport for HttpTransport {
    async fn fetch(&self, url: reqwest::Url) -> std::result::Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind};
        let other = |e: String| TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url.as_str(),
            ));
        }
        let mut r = self
            .http
            .get(url.as_str())
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| other(e.to_string()))?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(TransportError::new(TransportErrorKind::FileNotFound, url.as_str()));
        }
        if !r.status().is_success() {
            return Err(other(format!("HTTP {}", r.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| other(e.to_string()))? {
            if body.len() + chunk.len() > MAX_FETCH {
                return Err(other(format!("larger than {MAX_FETCH} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let once = futures_util::stream::once(std::future::ready(Ok(tough::Bytes::from(body))));
        Ok(Box::pin(once))
    }
}

/// An offer document a host verified: the manifest, the target it came from and what it trusts.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: BuildManifest,
    pub target: String,
    pub root_version: u64,
    pub version: u64,
}

/// Where a host keeps the TUF metadata it trusts (`root.json` is the newest trusted root).
pub fn trust_dir(home: &Path) -> PathBuf {
    home.join("tuf")
}

/// Whether a host has a trusted root at all.
pub fn has_root(home: &Path) -> bool {
    trust_dir(home).join("root.json").is_file()
}

/// Writes `root` (checked: parses and is self-signed at its threshold) as the host's trusted
/// root, dropping metadata trusted under another root.
pub fn pin_root(home: &Path, root: &[u8]) -> std::result::Result<Signed<Root>, String> {
    let parsed = parse_root(root)?;
    self_signed(&parsed)?;
    let dir = trust_dir(home);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::fsutil::write_atomic(&dir.join("root.json"), root).map_err(|e| e.to_string())?;
    Ok(parsed)
}

/// The root key ids of a root, for a person to compare out of band.
pub fn root_key_ids(root: &Signed<Root>) -> Vec<String> {
    let mut ids: Vec<String> = root
        .signed
        .roles
        .get(&RoleType::Root)
        .map(|r| r.keyids.iter().map(|k| hex::encode(k.as_ref())).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Loads the control plane's metadata against the host's trusted root (following root
/// rotations, refusing rollbacks, expired or under-signed metadata), then reads and binds the
/// offer document for this host's org and channel. `Err` says why, for a person.
pub async fn fetch_offer<T: tough::Transport + Send + Sync + 'static>(
    home: &Path,
    server: &str,
    transport: T,
    org: Option<&str>,
    channel: &Channel,
    allowed: &[Channel],
) -> std::result::Result<Verified, String> {
    let dir = trust_dir(home);
    let root_path = dir.join("root.json");
    let root = match std::fs::metadata(&root_path) {
        Ok(m) if m.len() <= MAX_ROOT => std::fs::read(&root_path).map_err(|e| e.to_string())?,
        Ok(_) => return Err(format!("{}: larger than {MAX_ROOT} bytes", root_path.display())),
        Err(_) => {
            return Err(
                "no trusted root: this host installs only what TUF metadata signed by a root it trusts allows; pin the control plane's root with `canary-runner update init ... --root root.json` (from its admin), or trust the first one served with `--trust-on-first-use`"
                    .into(),
            );
        }
    };
    let base = |p: &str| {
        reqwest::Url::parse(&format!("{}/v1/tuf/{p}", server.trim_end_matches('/')))
            .map_err(|e| format!("server URL: {e}"))
    };
    let repo = tough::RepositoryLoader::new(&root, base("")?, base("targets/")?)
        .transport(transport)
        .datastore(&dir)
        .load()
        .await
        .map_err(|e| explain(&e))?;
    let targets = &repo.targets().signed.targets;
    let mut names = Vec::new();
    if let Some(o) = org {
        names.push((Some(o), target_name(Some(o), channel)));
    }
    names.push((None, target_name(None, channel)));
    let (doc_org, name) = names
        .into_iter()
        .find(|(_, n)| tough::TargetName::new(n.clone()).is_ok_and(|t| targets.contains_key(&t)))
        .ok_or_else(|| format!("the signed metadata offers nothing for channel {channel}"))?;
    let tname = tough::TargetName::new(name.clone()).map_err(|e| e.to_string())?;
    let stream = repo
        .read_target(&tname)
        .await
        .map_err(|e| explain(&e))?
        .ok_or_else(|| format!("target {name} vanished"))?;
    use tough::IntoVec;
    let bytes = stream.into_vec().await.map_err(|e| explain(&e))?;
    let manifest: BuildManifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("the signed offer {name} is not a build manifest: {e}"))?;
    bind(&manifest, doc_org, channel, allowed)?;
    Ok(Verified {
        manifest,
        target: name,
        root_version: repo.root().signed.version.get(),
        version: repo.timestamp().signed.version.get(),
    })
}

/// Why a verified document does not hold for this host: it must say the org and channel of the
/// target it was read from, and a pin's channel must be one the host allows.
pub fn bind(
    m: &BuildManifest,
    doc_org: Option<&str>,
    host_channel: &Channel,
    allowed: &[Channel],
) -> std::result::Result<(), String> {
    let Some(s) = &m.statement else {
        return Err("the signed offer carries no statement (org, channel, status)".into());
    };
    if s.org.as_deref() != doc_org {
        return Err(format!(
            "the signed offer was issued for org {}, not {}",
            crate::text::clean(s.org.as_deref().unwrap_or("(none)")),
            crate::text::clean(doc_org.unwrap_or("(none)"))
        ));
    }
    let pinned = doc_org.is_some_and(|o| m.offered_for == format!("pin:{o}"));
    if s.channel != *host_channel && !(pinned && allowed.contains(&s.channel)) {
        return Err(format!(
            "the signed offer was issued for channel {}, this host follows {host_channel}",
            crate::text::clean(&s.channel)
        ));
    }
    Ok(())
}

/// A tough error as a host's admin should read it: what was refused and what it means.
pub fn explain(e: &tough::error::Error) -> String {
    use tough::error::Error as E;
    let full = chain(e);
    let why = match e {
        E::Transport { .. } if full.contains("Hash mismatch") => {
            "a file does not match the digest the signed metadata gives (mixed or altered files)".into()
        }
        E::ExpiredMetadata { role, .. } => format!(
            "the {role} metadata has expired: the control plane stopped publishing fresh metadata (a freeze), or this host's clock is wrong"
        ),
        E::OlderMetadata {
            role,
            current_version,
            new_version,
            ..
        } => format!(
            "the control plane served {role} version {new_version}, older than version {current_version} this host already trusts (a rollback)"
        ),
        E::VerifyMetadata { role, .. } => {
            format!("the {role} metadata is not signed by a threshold of its trusted keys")
        }
        E::VerifyTrustedMetadata { .. } => "the metadata this host trusts no longer verifies".into(),
        E::VerifyRoleMetadata { role, .. } => {
            format!("the {role} metadata is not signed by a threshold of its trusted keys")
        }
        E::HashMismatch { .. } => {
            "a file does not match the digest the signed metadata gives (mixed or altered files)".into()
        }
        E::MaxSizeExceeded { .. } => "a file is larger than the signed metadata allows".into(),
        E::Transport { .. } => "the control plane did not serve the metadata".into(),
        _ => "the update metadata was refused".into(),
    };
    format!("{why} ({full})")
}
