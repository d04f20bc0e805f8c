//! Signed build manifests: the control plane signs what it offers a customer-hosted runner with
//! an ed25519 key (`canary keys create`), and the runner checks the signature against the public
//! key its admin configured before it installs anything. Keys are stored as hex: the 32-byte
//! seed (private, mode 0600) and the 32-byte public key.

use crate::error::{LabError, Result};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::Digest;
use std::path::Path;

/// A control plane's signing key.
pub struct Key(SigningKey);

/// A public key a runner trusts.
#[derive(Clone)]
pub struct Trusted(VerifyingKey);

impl Key {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Key> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| LabError::usage(format!("no random source: {e}"), "internal"))?;
        Ok(Key(SigningKey::from_bytes(&seed)))
    }

    /// Reads a key written by [`Key::write`]; a key readable by others is refused.
    pub fn load(path: &Path) -> Result<Key> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| LabError::read(path, e))?;
        if !meta.is_file() {
            return Err(LabError::usage(
                format!("{}: not a regular file", path.display()),
                "give the `.key` file `canary keys create` wrote",
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(LabError::usage(
                format!("{}: the signing key is readable by other users", path.display()),
                format!("chmod 600 {}", path.display()),
            ));
        }
        let text = crate::fsutil::read_input(path, "signing key", 1024)?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                LabError::usage(
                    format!("{}: not a signing key (64 hex digits)", path.display()),
                    "create one with `canary keys create --out DIR`",
                )
            })?;
        Ok(Key(SigningKey::from_bytes(&bytes)))
    }

    /// Writes the private key (0600, refusing to replace one) and the public key beside it.
    pub fn write(&self, private: &Path, public: &Path) -> Result<()> {
        if let Some(dir) = private.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LabError::write(dir, e))?;
        }
        crate::fsutil::write_new(
            private,
            format!("{}\n", hex::encode(self.0.to_bytes())).as_bytes(),
            0o600,
            "a signing key is never overwritten",
            "choose another --out folder, or remove the old key yourself",
        )?;
        crate::fsutil::write_atomic(public, format!("{}\n", self.public().hex()).as_bytes())
    }

    pub fn public(&self) -> Trusted {
        Trusted(self.0.verifying_key())
    }

    /// The signature of `msg`, raw.
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// The signature of `payload`, hex.
    pub fn sign(&self, payload: &str) -> String {
        hex::encode(self.0.sign(payload.as_bytes()).to_bytes())
    }
}

impl Trusted {
    /// A public key given as 64 hex digits, or a file holding them.
    pub fn parse(text_or_file: &str) -> Result<Trusted> {
        let text = if Path::new(text_or_file).is_file() {
            crate::fsutil::read_input(Path::new(text_or_file), "public key", 1024)?
        } else {
            text_or_file.to_string()
        };
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                LabError::usage(
                    "the public key is not 64 hex digits (or a file holding them)",
                    "use the `.pub` file `canary keys create` wrote",
                )
            })?;
        VerifyingKey::from_bytes(&bytes).map(Trusted).map_err(|_| {
            LabError::usage(
                "the public key is not a valid ed25519 key",
                "use the `.pub` file `canary keys create` wrote",
            )
        })
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A short name for the key: the first 16 hex digits of its SHA-256.
    pub fn id(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.0.to_bytes()))[..16].to_string()
    }

    /// Whether `signature` (hex) is this key's signature of `payload`.
    pub fn verify(&self, payload: &str, signature: &str) -> bool {
        let Some(bytes) = hex::decode(signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        self.0
            .verify_strict(payload.as_bytes(), &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_only_and_only_for_its_payload() {
        let a = Key::generate().unwrap();
        let b = Key::generate().unwrap();
        let sig = a.sign("{\"build\":\"sha256:1\"}");
        assert!(a.public().verify("{\"build\":\"sha256:1\"}", &sig));
        assert!(!a.public().verify("{\"build\":\"sha256:2\"}", &sig), "another payload");
        assert!(!b.public().verify("{\"build\":\"sha256:1\"}", &sig), "another key");
        assert!(!a.public().verify("{\"build\":\"sha256:1\"}", "zz"), "not hex");
        assert!(!a.public().verify("{\"build\":\"sha256:1\"}", &sig[..64]), "cut");
    }

    #[test]
    fn keys_round_trip_through_files_and_are_never_overwritten_or_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        let k = Key::generate().unwrap();
        k.write(&private, &public).unwrap();
        let again = Key::load(&private).unwrap();
        assert_eq!(again.public().hex(), k.public().hex());
        let trusted = Trusted::parse(public.to_str().unwrap()).unwrap();
        assert_eq!(trusted.id(), k.public().id());
        assert!(k.write(&private, &public).is_err(), "an existing key stays");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Key::load(&private).is_err(), "a key others can read is refused");
        assert!(Trusted::parse("abcd").is_err());
    }
}
