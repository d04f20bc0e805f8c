//! The Update Framework (TUF) for customer-hosted runners, through the `tough` crate.
//!
//! Roles and keys:
//! - **root**: k-of-n ed25519 keys kept offline (`canary keys create`); `canary keys init-root`
//!   writes `1.root.json`, `canary keys rotate` writes the next version, signed by a threshold of
//!   the old root keys and of the new ones. Hosts walk the chain of root versions.
//! - **targets, snapshot, timestamp**: one online key held by `canary serve --online-key`. The
//!   targets role lists one offer document per channel (`offers/channel/<channel>.json`) and per
//!   org with a pin or a policy (`offers/org/<org>/<channel>.json`); each document is the
//!   [`BuildManifest`] a host installs from (build, components with artifact digests, evidence,
//!   traffic light, signing policy, rollback instructions).
//!
//! The control plane republishes when a document changes, when the root changes, and before the
//! timestamp is half-way to expiry; every file of a publication is written in one registry
//! transaction and served by path from `GET /v1/tuf/...` with consistent snapshots, so a host
//! never mixes files of two publications. A host keeps the metadata it trusted in `<home>/tuf/`
//! (tough's datastore) and refuses older versions, expired metadata, files signed below a
//! role's threshold, and a document that was not issued for its org and channel.

use super::sign::{Key, Trusted};
use crate::error::{LabError, Result};
pub use canary_runner::update::tuf::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{Hashes, RoleKeys, RoleType, Root, Signed, Target};

/// How many root files a control plane's root folder may hold.
const MAX_ROOTS: usize = 1000;

/// How long each role's metadata holds once signed.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub targets: Duration,
    pub snapshot: Duration,
    pub timestamp: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            targets: Duration::from_secs(7 * 24 * 3600),
            snapshot: Duration::from_secs(7 * 24 * 3600),
            timestamp: Duration::from_secs(24 * 3600),
        }
    }
}

/// One of our ed25519 keys as tough signs with it.
#[derive(Clone)]
pub struct Signer(Arc<Key>);

impl Signer {
    pub fn new(key: Key) -> Signer {
        Signer(Arc::new(key))
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.0.public().id())
    }
}

fn tuf_key(public: &Trusted) -> tough::schema::key::Key {
    use tough::schema::key::{Ed25519Key, Ed25519Scheme, Key as TufKey};
    TufKey::Ed25519 {
        keyval: Ed25519Key {
            public: public.bytes().to_vec().into(),
            _extra: HashMap::new(),
        },
        scheme: Ed25519Scheme::Ed25519,
        _extra: HashMap::new(),
    }
}

/// A key's TUF key id (hex), as root metadata lists it.
pub fn key_id(public: &Trusted) -> String {
    tuf_key(public)
        .key_id()
        .map(|id| hex::encode(id.as_ref()))
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl tough::sign::Sign for Signer {
    fn tuf_key(&self) -> tough::schema::key::Key {
        tuf_key(&self.0.public())
    }

    async fn sign(
        &self,
        msg: &[u8],
        _rng: &(dyn aws_lc_rs::rand::SecureRandom + Sync),
    ) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.0.sign_bytes(msg).to_vec())
    }
}

#[async_trait::async_trait]
impl tough::key_source::KeySource for Signer {
    async fn as_sign(
        &self,
    ) -> std::result::Result<Box<dyn tough::sign::Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(Box::new(self.clone()))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("canary keys are written by `canary keys create` only".into())
    }
}

fn sources(keys: &[Signer]) -> Vec<Box<dyn tough::key_source::KeySource>> {
    keys.iter()
        .map(|k| Box::new(k.clone()) as Box<dyn tough::key_source::KeySource>)
        .collect()
}

/// What a root version says: its root keys and threshold, and the online key of the other roles.
pub struct RootSpec<'a> {
    pub version: u64,
    pub root_keys: &'a [Trusted],
    pub threshold: u64,
    pub online: &'a Trusted,
    pub expires: jiff::Timestamp,
}

fn tuf_err(what: &str) -> impl Fn(tough::error::Error) -> LabError + '_ {
    move |e| LabError::usage(format!("{what}: {}", chain(&e)), "internal: the TUF library refused")
}

fn unsigned_root(spec: &RootSpec<'_>) -> Result<Root> {
    let bad = |m: String| LabError::usage(m, "see `canary keys init-root --help`");
    if spec.root_keys.is_empty() {
        return Err(bad("a root needs at least one root key".into()));
    }
    if spec.threshold == 0 || spec.threshold > spec.root_keys.len() as u64 {
        return Err(bad(format!(
            "threshold {} is not between 1 and the {} root keys given",
            spec.threshold,
            spec.root_keys.len()
        )));
    }
    let mut ids: Vec<String> = spec.root_keys.iter().map(key_id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != spec.root_keys.len() {
        return Err(bad("the same root key is given twice".into()));
    }
    if ids.contains(&key_id(spec.online)) {
        return Err(bad(
            "the online key is also a root key: the root keys stay offline, the online key is another".into(),
        ));
    }
    let mut keys = HashMap::new();
    for k in spec.root_keys.iter().chain([spec.online]) {
        keys.insert(decoded(&key_id(k)), tuf_key(k));
    }
    let role = |ids: Vec<String>, threshold: u64| RoleKeys {
        keyids: ids.iter().map(|i| decoded(i)).collect(),
        threshold: NonZeroU64::new(threshold).expect("checked"),
        _extra: HashMap::new(),
    };
    let mut roles = HashMap::new();
    roles.insert(RoleType::Root, role(ids, spec.threshold));
    for r in [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
        roles.insert(r, role(vec![key_id(spec.online)], 1));
    }
    Ok(Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version: NonZeroU64::new(spec.version).ok_or_else(|| bad("root versions start at 1".into()))?,
        expires: spec.expires,
        keys,
        roles,
        _extra: HashMap::new(),
    })
}

fn decoded(hex_text: &str) -> Decoded<Hex> {
    hex::decode(hex_text).expect("key ids are hex").into()
}

/// Signs a root: with `signers` (keys of this root), and for a rotation also with `old_signers`
/// of the `previous` root. Refused unless both the previous root's threshold and this root's
/// threshold are met, so a host can follow it.
pub async fn sign_root(
    spec: &RootSpec<'_>,
    signers: &[Signer],
    previous: Option<(&Signed<Root>, &[Signer])>,
) -> Result<Vec<u8>> {
    use tough::editor::signed::SignedRole;
    use tough::schema::KeyHolder;
    let root = unsigned_root(spec)?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut signed = SignedRole::new(root.clone(), &KeyHolder::Root(root.clone()), &sources(signers), &rng)
        .await
        .map_err(tuf_err("signing the root"))?;
    if let Some((old, old_signers)) = previous {
        if spec.version != old.signed.version.get() + 1 {
            return Err(LabError::usage(
                format!(
                    "the new root must be version {}, not {}",
                    old.signed.version.get() + 1,
                    spec.version
                ),
                "rotate from the newest root",
            ));
        }
        let by_old = SignedRole::new(
            root.clone(),
            &KeyHolder::Root(old.signed.clone()),
            &sources(old_signers),
            &rng,
        )
        .await
        .map_err(tuf_err("signing the new root with the old root keys"))?;
        signed = signed
            .add_old_signatures(by_old.signed().signatures.clone())
            .map_err(tuf_err("joining the signatures"))?;
        old.signed.verify_role(signed.signed()).map_err(|e| {
            LabError::usage(
                format!("the old root's keys given do not meet its threshold: {}", chain(&e)),
                format!(
                    "sign with {} of the old root keys (--old-key, once per key file)",
                    old.signed.roles.get(&RoleType::Root).map_or(1, |r| r.threshold.get())
                ),
            )
        })?;
    }
    signed.signed().signed.verify_role(signed.signed()).map_err(|e| {
        LabError::usage(
            format!("the root keys given do not meet the new threshold: {}", chain(&e)),
            format!("sign with {} of the new root's keys (--root-key)", spec.threshold),
        )
    })?;
    Ok(signed.buffer().clone())
}

/// The root folder's newest root, verified along the chain from `1.root.json`.
pub fn latest_root(dir: &Path) -> Result<(u64, PathBuf, Signed<Root>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| LabError::read(dir, e))?;
    let mut versions = Vec::new();
    for e in entries.take(MAX_ROOTS * 4) {
        let e = e.map_err(|e| LabError::read(dir, e))?;
        let name = e.file_name();
        let Some(v) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".root.json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        versions.push(v);
    }
    versions.sort();
    if versions.is_empty() {
        return Err(LabError::usage(
            format!("{}: no root metadata (1.root.json)", dir.display()),
            "create it offline with `canary keys init-root --out DIR ...`",
        ));
    }
    let mut trusted: Option<Signed<Root>> = None;
    for (i, v) in versions.iter().enumerate() {
        if *v != i as u64 + 1 {
            return Err(LabError::usage(
                format!(
                    "{}: root versions are not 1, 2, 3, ... (found {v} after {i})",
                    dir.display()
                ),
                "keep every root version in the folder",
            ));
        }
        let path = dir.join(format!("{v}.root.json"));
        let text = crate::fsutil::read_input(&path, "TUF root", MAX_ROOT)?;
        let root = parse_root(text.as_bytes())
            .map_err(|m| LabError::usage(format!("{}: {m}", path.display()), "write it again with `canary keys`"))?;
        let checked = match &trusted {
            None => self_signed(&root),
            Some(prev) => prev
                .signed
                .verify_role(&root)
                .map_err(|e| format!("not signed by the previous root's threshold: {}", chain(&e)))
                .and_then(|_| self_signed(&root)),
        };
        checked.map_err(|m| LabError::usage(format!("{}: {m}", path.display()), "rotate with `canary keys rotate`"))?;
        if root.signed.version.get() != *v {
            return Err(LabError::usage(
                format!("{}: the file says version {}", path.display(), root.signed.version),
                "keep the file names `canary keys` wrote",
            ));
        }
        trusted = Some(root);
    }
    let v = *versions.last().expect("not empty");
    Ok((v, dir.join(format!("{v}.root.json")), trusted.expect("not empty")))
}

/// One document to publish as a target.
#[derive(Debug, Clone)]
pub struct Doc {
    pub org: Option<String>,
    pub channel: canary_contract::Channel,
    pub body: String,
}

impl Doc {
    pub fn name(&self) -> String {
        target_name(self.org.as_deref(), &self.channel)
    }
}

/// A name fit for a target path: a valid lab name that is not only dots.
pub fn fit_for_target(name: &str) -> bool {
    crate::gate::ops::check_name("name", name).is_ok() && !name.starts_with('.')
}

/// What the publisher remembers between publications (kept as `_state.json`, never served).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub root_version: u64,
    /// SHA-256 of the newest root file: another root folder with the same version republishes.
    #[serde(default)]
    pub root_sha: String,
    /// The version of the last targets, snapshot and timestamp (all three move together).
    pub version: u64,
    /// Target name → SHA-256 of its document.
    pub docs: BTreeMap<String, String>,
    pub timestamp_expires: Option<jiff::Timestamp>,
}

impl State {
    /// Whether the published metadata still says what `docs` say under `root_version`, with more
    /// than half of the timestamp's life left at `now`.
    pub fn current(
        &self,
        root: (u64, &str),
        docs: &BTreeMap<String, String>,
        now: jiff::Timestamp,
        l: &Lifetimes,
    ) -> bool {
        let half = jiff::SignedDuration::try_from(l.timestamp / 2).unwrap_or(jiff::SignedDuration::ZERO);
        self.root_version == root.0
            && self.root_sha == root.1
            && &self.docs == docs
            && self.timestamp_expires.is_some_and(|e| e.duration_since(now) > half)
    }
}

const STATE: &str = "_state.json";

fn root_digest(path: &Path) -> Result<String> {
    let text = crate::fsutil::read_input(path, "TUF root", MAX_ROOT)?;
    Ok(sha256_hex(text.as_bytes()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn plus(now: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The files of one publication (path under `/v1/tuf/`, text) and the state after it.
pub async fn sign_publication(
    root_dir: &Path,
    key: &Signer,
    previous: &State,
    docs: &[Doc],
    now: jiff::Timestamp,
    lifetimes: &Lifetimes,
) -> Result<(Vec<(String, String)>, State)> {
    use tough::editor::RepositoryEditor;
    let (root_version, root_path, _) = latest_root(root_dir)?;
    let root_sha = root_digest(&root_path)?;
    let version = NonZeroU64::new(previous.version + 1).expect("positive");
    let mut editor = RepositoryEditor::new(&root_path)
        .await
        .map_err(tuf_err("reading the root"))?;
    editor.targets_version(version).map_err(tuf_err("targets"))?;
    editor
        .targets_expires(plus(now, lifetimes.targets))
        .map_err(tuf_err("targets"))?;
    editor
        .snapshot_version(version)
        .snapshot_expires(plus(now, lifetimes.snapshot))
        .timestamp_version(version)
        .timestamp_expires(plus(now, lifetimes.timestamp));
    let mut files = Vec::new();
    let mut state = State {
        root_version,
        root_sha,
        version: version.get(),
        docs: BTreeMap::new(),
        timestamp_expires: Some(plus(now, lifetimes.timestamp)),
    };
    for d in docs {
        let name = d.name();
        let sha = sha256_hex(d.body.as_bytes());
        let mut custom = HashMap::new();
        custom.insert("org".to_string(), serde_json::json!(d.org));
        custom.insert("channel".to_string(), serde_json::json!(d.channel));
        let target = Target {
            length: d.body.len() as u64,
            hashes: Hashes {
                sha256: hex::decode(&sha).expect("hex").into(),
                _extra: HashMap::new(),
            },
            custom,
            _extra: HashMap::new(),
        };
        let tname = tough::TargetName::new(name.clone()).map_err(tuf_err("target name"))?;
        editor.add_target(tname, target).map_err(tuf_err("adding a target"))?;
        files.push((format!("targets/{sha}.{name}"), d.body.clone()));
        state.docs.insert(name, sha);
    }
    let signed = editor
        .sign(&sources(std::slice::from_ref(key)))
        .await
        .map_err(|e| {
            LabError::usage(
                format!("signing the update metadata: {}", chain(&e)),
                "the online key must be the one the root names for targets, snapshot and timestamp (canary keys init-root --online-key)",
            )
        })?;
    let out = tempfile::tempdir().map_err(|e| LabError::write(Path::new("temporary folder"), e))?;
    signed
        .write(out.path())
        .await
        .map_err(tuf_err("writing the metadata"))?;
    for name in [
        format!("{version}.targets.json"),
        format!("{version}.snapshot.json"),
        "timestamp.json".to_string(),
    ] {
        let path = out.path().join(&name);
        let text = std::fs::read_to_string(&path).map_err(|e| LabError::read(&path, e))?;
        files.push((name, text));
    }
    for v in 1..=root_version {
        let path = root_dir.join(format!("{v}.root.json"));
        let text = crate::fsutil::read_input(&path, "TUF root", MAX_ROOT)?;
        files.push((format!("{v}.root.json"), text));
    }
    files.push((STATE.to_string(), serde_json::to_string(&state).expect("json")));
    Ok((files, state))
}

/// The control plane's publisher: the root folder (offline-made roots) and the online key.
pub struct Publisher {
    pub root_dir: PathBuf,
    key: Signer,
    pub lifetimes: Lifetimes,
    /// Serialises publications of this process.
    lock: tokio::sync::Mutex<()>,
}

impl Publisher {
    /// Checks that the newest root in `root_dir` names `key` for the online roles.
    pub fn open(root_dir: &Path, key: Key, lifetimes: Lifetimes) -> Result<Publisher> {
        let (_, path, root) = latest_root(root_dir)?;
        if root.signed.expires <= jiff::Timestamp::now() {
            return Err(LabError::usage(
                format!("{}: the root expired at {}", path.display(), root.signed.expires),
                "hosts refuse an expired root: rotate to a new one with `canary keys rotate`",
            ));
        }
        let id = key_id(&key.public());
        for role in [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
            let named = root
                .signed
                .roles
                .get(&role)
                .is_some_and(|r| r.keyids.iter().any(|k| hex::encode(k.as_ref()) == id));
            if !named {
                return Err(LabError::usage(
                    format!(
                        "{}: the online key {} is not the root's {role} key",
                        path.display(),
                        &id[..16]
                    ),
                    "give serve the online key the root was made with (canary keys init-root --online-key), or rotate the root",
                ));
            }
        }
        Ok(Publisher {
            root_dir: root_dir.to_path_buf(),
            key: Signer::new(key),
            lifetimes,
            lock: Default::default(),
        })
    }

    /// Publishes `docs` if they, the root or the timestamp's freshness call for it; returns the
    /// new version when it did.
    pub async fn publish(
        &self,
        reg: &crate::registry::Registry,
        docs: &[Doc],
        now: jiff::Timestamp,
    ) -> Result<Option<u64>> {
        let _one = self.lock.lock().await;
        let previous: State = reg
            .tuf_file(STATE)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let (root_version, root_path, _) = latest_root(&self.root_dir)?;
        let root_sha = root_digest(&root_path)?;
        let wanted: BTreeMap<String, String> = docs.iter().map(|d| (d.name(), sha256_hex(d.body.as_bytes()))).collect();
        if previous.current((root_version, &root_sha), &wanted, now, &self.lifetimes) {
            return Ok(None);
        }
        let (files, state) = sign_publication(&self.root_dir, &self.key, &previous, docs, now, &self.lifetimes).await?;
        reg.put_tuf_files(&files).await?;
        Ok(Some(state.version))
    }
}

/// Who may read a path under `/v1/tuf/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any runner's token: metadata, roots, channel offers.
    Runners,
    /// Only tokens bound to this org: its own offer documents.
    Org(String),
    /// Never served: not a path a publication writes (the publisher's state, dot segments, ...).
    Never,
}

/// Who may read `path` (under `/v1/tuf/`).
pub fn access(path: &str) -> Access {
    let ok_chars = !path.is_empty()
        && path.len() <= 400
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if !ok_chars || path.starts_with('_') || path.split('/').any(|s| s.is_empty() || s.starts_with('.')) {
        return Access::Never;
    }
    if let Some(rest) = path.strip_prefix("targets/") {
        let Some((sha, name)) = rest.split_once('.') else {
            return Access::Never;
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Access::Never;
        }
        if let Some(org_part) = name.strip_prefix("offers/org/") {
            // `<org>/<channel>.json`, as publications name them; anything else is never served.
            return match org_part.split_once('/') {
                Some((org, channel)) if fit_for_target(org) && !channel.contains('/') => Access::Org(org.to_string()),
                _ => Access::Never,
            };
        }
    }
    Access::Runners
}

#[cfg(test)]
mod tests;
