//! The root keys' ceremonies, done where those keys are kept: the first TUF root and each
//! rotation to the next version, signed and written as `<dir>/<version>.root.json` (never over
//! an existing version). `canary keys init-root` and `canary keys rotate` call these.

use super::sign::{Key, Trusted};
use super::tuf::{self, Signer};
use crate::error::{LabError, Result};
use std::path::{Path, PathBuf};
use tough::schema::{Root, Signed};

/// A root version written: where, its version, its root keys' TUF ids and their threshold.
#[derive(Debug, serde::Serialize)]
pub struct WrittenRoot {
    pub root: PathBuf,
    pub version: u64,
    pub root_key_ids: Vec<String>,
    pub threshold: u64,
}

impl WrittenRoot {
    pub fn lines(&self) -> Vec<String> {
        let head = format!(
            "root {} (version {}, {} of {} root keys)",
            self.root.display(),
            self.version,
            self.threshold,
            self.root_key_ids.len()
        );
        std::iter::once(head)
            .chain(self.root_key_ids.iter().map(|id| format!("  root key {id}")))
            .collect()
    }
}

/// What a root names: its root keys (all sign it; the threshold defaults to all of them), the
/// online key and when it expires.
pub struct RootKeys {
    /// Key files (`canary keys create`), loaded when the root is signed.
    pub keys: Vec<PathBuf>,
    pub threshold: Option<u64>,
    pub expires: jiff::Timestamp,
}

/// A key made by [`create`]: where its halves are, and its ids.
#[derive(Debug, serde::Serialize)]
pub struct CreatedKey {
    pub private_key: PathBuf,
    pub public_key: String,
    pub public_key_file: PathBuf,
    pub key_id: String,
    pub tuf_key_id: String,
}

impl CreatedKey {
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "private key  {} (keep it secret; mode 0600)",
                self.private_key.display()
            ),
            format!("public key   {} ({})", self.public_key_file.display(), self.public_key),
            format!("key id       {}", self.tuf_key_id),
            "next: canary keys init-root --out DIR --root-key ROOT.key ... --online-key ONLINE.pub".into(),
        ]
    }
}

/// Creates an ed25519 key: `<dir>/<name>.key` (mode 0600, never overwritten) and
/// `<dir>/<name>.pub`.
pub fn create(dir: &Path, name: &str) -> Result<CreatedKey> {
    crate::gate::ops::check_name("key", name)?;
    let key = Key::generate()?;
    let (private, public) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    key.write(&private, &public)?;
    let p = key.public();
    Ok(CreatedKey {
        private_key: private,
        public_key: p.hex(),
        public_key_file: public,
        key_id: p.id(),
        tuf_key_id: tuf::key_id(&p),
    })
}

/// Loads key files, once per path.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Key>> {
    paths.iter().map(|p| Key::load(p)).collect()
}

/// Writes the first root, `<dir>/1.root.json`.
pub async fn init_root(dir: &Path, keys: RootKeys, online: &str) -> Result<WrittenRoot> {
    let signing = load(&keys.keys)?;
    write(dir, 1, (&keys, signing), &Trusted::parse(online)?, None).await
}

/// Writes the next root version in `dir`, cross-signed by `old` (at least the current root's
/// threshold of its keys); the online key stays the current one unless `online` names another.
pub async fn rotate(dir: &Path, old: &[PathBuf], keys: RootKeys, online: Option<&str>) -> Result<WrittenRoot> {
    let (version, _, current) = tuf::latest_root(dir)?;
    let old: Vec<Signer> = load(old)?.into_iter().map(Signer::new).collect();
    let signing = load(&keys.keys)?;
    let online = match online {
        Some(k) => Trusted::parse(k)?,
        None => current_online(&current)?,
    };
    write(dir, version + 1, (&keys, signing), &online, Some((&current, &old))).await
}

/// Signs a root version (cross-signed by `previous` when rotating) and writes it.
async fn write(
    dir: &Path,
    version: u64,
    (keys, signing): (&RootKeys, Vec<Key>),
    online: &Trusted,
    previous: Option<(&Signed<Root>, &[Signer])>,
) -> Result<WrittenRoot> {
    let publics: Vec<Trusted> = signing.iter().map(|k| k.public()).collect();
    let threshold = keys.threshold.unwrap_or(publics.len() as u64);
    let spec = tuf::RootSpec {
        version,
        root_keys: &publics,
        threshold,
        online,
        expires: keys.expires,
    };
    let signers: Vec<Signer> = signing.into_iter().map(Signer::new).collect();
    let text = tuf::sign_root(&spec, &signers, previous).await?;
    std::fs::create_dir_all(dir).map_err(|e| LabError::write(dir, e))?;
    let path = dir.join(format!("{version}.root.json"));
    create_new(&path, &text)?;
    Ok(WrittenRoot {
        root: path,
        version,
        root_key_ids: publics.iter().map(tuf::key_id).collect(),
        threshold,
    })
}

/// Writes a root file that must not exist yet: a root version is never overwritten.
fn create_new(path: &Path, text: &[u8]) -> Result<()> {
    crate::fsutil::write_new(
        path,
        text,
        0o644,
        "a root version is never overwritten",
        "rotate to the next version with `canary keys rotate`",
    )
}

/// The online key a root names for timestamp.
fn current_online(root: &Signed<Root>) -> Result<Trusted> {
    use tough::schema::{RoleType, key::Key as TufKey};
    let key = root
        .signed
        .roles
        .get(&RoleType::Timestamp)
        .and_then(|r| r.keyids.first())
        .and_then(|id| root.signed.keys.get(id));
    match key {
        Some(TufKey::Ed25519 { keyval, .. }) => Trusted::parse(&hex::encode(keyval.public.as_ref())),
        _ => Err(LabError::usage(
            "the current root names no ed25519 online key",
            "give the online key with --online-key",
        )),
    }
}
