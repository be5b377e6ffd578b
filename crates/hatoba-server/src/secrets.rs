//! Secrets at rest: the server's key and the AEAD that seals each secret
//! version before it reaches the store.
//!
//! The key is 32 random bytes, written as 64 hex digits in
//! `STATE/secret.key` (created 0600 on first use; a symlink or a key file
//! that the group or others may read is refused) or given in
//! `HATOBA_SECRET_KEY`. It never enters the database, so a copy of the
//! database alone reveals no value.
//!
//! Each version is sealed with ChaCha20-Poly1305 (ring) under a fresh
//! random 96-bit nonce, with `hatoba-secret/v1`, the environment, the name
//! and the version as associated data: a ciphertext moved to another name,
//! environment or version does not open. A row also names the key it was
//! sealed with by a digest (`key_id`), so opening with another key says
//! "wrong key" rather than "tampered".
//!
//! Plain values exist only as [`SecretValue`]s (their `Debug` and `Display`
//! print `‹secret›`) on their way into an instance's environment.

use hatoba_core::{EnvName, Millis, SecretValue};
use hatoba_store::SealedSecret;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The environment variable that may hold the key instead of the file.
pub const KEY_ENV: &str = "HATOBA_SECRET_KEY";

/// The key file's name in the state directory.
pub const KEY_FILE: &str = "secret.key";

/// The largest secret value accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 32 * 1024;

const KEY_LEN: usize = 32;

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file is a symbolic link: someone could point it anywhere.
    #[error("the secret key file {path} is a symbolic link; refusing to follow it")]
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// The group or others may read or write the key file.
    #[error("the secret key file {path} has mode {mode:o}: others than its owner may read it")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file could not be read or created.
    #[error("cannot {doing} the secret key file {path}")]
    Io {
        /// `read`, `create`.
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key text is not 64 hex digits.
    #[error("the secret key from {origin} is not 64 hex digits (found {found_len} characters)")]
    Malformed {
        /// The file or `HATOBA_SECRET_KEY`.
        origin: String,
        /// How long the text was (never the text).
        found_len: usize,
    },
    /// The system's random generator failed.
    #[error("the system's random number generator failed")]
    Random,
}

impl KeyError {
    /// What the operator does about it.
    pub fn hint(&self) -> &'static str {
        match self {
            KeyError::Symlink { .. } => "replace the link by the key file itself",
            KeyError::Permissions { .. } => "run `chmod 600` on it (and check who read it)",
            KeyError::Io { .. } => "check the state directory's owner and permissions",
            KeyError::Malformed { .. } => {
                "the key is 32 bytes as 64 hex digits, e.g. from `openssl rand -hex 32`"
            }
            KeyError::Random => "try again",
        }
    }
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The value was sealed with another key.
    #[error(
        "secret `{name}` version {version} in `{environment}` was stored with key {stored_key}, \
         but this server has key {key}"
    )]
    WrongKey {
        /// The environment.
        environment: EnvName,
        /// The secret.
        name: String,
        /// Its version.
        version: u64,
        /// The key it was sealed with (a digest).
        stored_key: String,
        /// The key this server has (a digest).
        key: String,
    },
    /// The key is right but the ciphertext does not authenticate: it was
    /// altered, or moved from another name, environment or version.
    #[error(
        "secret `{name}` version {version} in `{environment}` does not authenticate: \
         its stored bytes were altered"
    )]
    Tampered {
        /// The environment.
        environment: EnvName,
        /// The secret.
        name: String,
        /// Its version.
        version: u64,
    },
    /// The value opened but is not UTF-8 text.
    #[error("secret `{name}` version {version} in `{environment}` is not UTF-8 text")]
    NotText {
        /// The environment.
        environment: EnvName,
        /// The secret.
        name: String,
        /// Its version.
        version: u64,
    },
    /// The version is not (or no longer) stored.
    #[error("secret `{name}` version {version} in `{environment}` is not stored (removed?)")]
    Missing {
        /// The environment.
        environment: EnvName,
        /// The secret.
        name: String,
        /// Its version.
        version: u64,
    },
    /// The system's random generator failed.
    #[error("the system's random number generator failed")]
    Random,
    /// The store failed.
    #[error("cannot read or write secrets in the store")]
    Store(#[from] hatoba_store::StoreError),
}

/// The key secrets are sealed with. `Debug` shows its id only.
pub struct SecretKey {
    key: LessSafeKey,
    id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// A key from 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretKey {
        let id = {
            let mut input = b"hatoba-secret-key-id/v1\0".to_vec();
            input.extend_from_slice(bytes);
            let d = ring::digest::digest(&ring::digest::SHA256, &input);
            format!("k-{}", hex::encode(&d.as_ref()[..8]))
        };
        // CHACHA20_POLY1305 takes exactly 32 bytes, which `bytes` is.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("a 32-byte key fits ChaCha20-Poly1305"));
        SecretKey {
            key: LessSafeKey::new(unbound),
            id,
            rng: SystemRandom::new(),
        }
    }

    /// A key from its text (64 hex digits, surrounding whitespace ignored).
    pub fn from_hex(text: &str, origin: &str) -> Result<SecretKey, KeyError> {
        let t = text.trim();
        let malformed = || KeyError::Malformed {
            origin: origin.to_owned(),
            found_len: t.chars().count(),
        };
        let bytes = hex::decode(t).map_err(|_| malformed())?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| malformed())?;
        Ok(SecretKey::from_bytes(&bytes))
    }

    /// The key from `HATOBA_SECRET_KEY` when set, else from
    /// `STATE/secret.key`, which is created (0600, never over a link) when
    /// missing.
    pub fn load(state_dir: &Path) -> Result<SecretKey, KeyError> {
        match std::env::var(KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => SecretKey::from_hex(&text, KEY_ENV),
            _ => SecretKey::load_file(&state_dir.join(KEY_FILE)),
        }
    }

    /// The key in `path`, created when missing.
    pub fn load_file(path: &Path) -> Result<SecretKey, KeyError> {
        use std::io::{Read as _, Write as _};
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let io = |doing| {
            let path = path.to_path_buf();
            move |source| KeyError::Io {
                doing,
                path,
                source,
            }
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(KeyError::Symlink {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| KeyError::Random)?;
                // `create_new` refuses an existing file or link (O_EXCL), so
                // nothing is written through a link planted in between.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io("create"))?;
                let mut text = hex::encode(bytes);
                text.push('\n');
                f.write_all(text.as_bytes()).map_err(io("create"))?;
                f.sync_all().map_err(io("create"))?;
                return Ok(SecretKey::from_bytes(&bytes));
            }
            Err(e) => return Err(io("read")(e)),
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW)
            .open(path)
            .map_err(io("read"))?;
        let meta = f.metadata().map_err(io("read"))?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        f.take(1024).read_to_string(&mut text).map_err(io("read"))?;
        SecretKey::from_hex(&text, &path.display().to_string())
    }

    /// The key's id: a digest that names it without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals one version of a secret.
    pub fn seal(
        &self,
        environment: &EnvName,
        name: &str,
        version: u64,
        value: &SecretValue,
        created_at: Millis,
        created_by: &str,
    ) -> Result<SealedSecret, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut in_out = value.expose().as_bytes().to_vec();
        let sealed = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(environment, name, version)),
            &mut in_out,
        );
        if sealed.is_err() {
            // Only for inputs beyond ChaCha20's 256 GiB limit.
            in_out.fill(0);
            return Err(SecretError::Random);
        }
        Ok(SealedSecret {
            environment: environment.clone(),
            name: name.to_owned(),
            version,
            key_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: in_out,
            created_at,
            created_by: created_by.to_owned(),
        })
    }

    /// Opens a sealed version.
    pub fn open(&self, sealed: &SealedSecret) -> Result<SecretValue, SecretError> {
        if sealed.key_id != self.id {
            return Err(SecretError::WrongKey {
                environment: sealed.environment.clone(),
                name: sealed.name.clone(),
                version: sealed.version,
                stored_key: sealed.key_id.clone(),
                key: self.id.clone(),
            });
        }
        let tampered = || SecretError::Tampered {
            environment: sealed.environment.clone(),
            name: sealed.name.clone(),
            version: sealed.version,
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| tampered())?;
        let mut in_out = sealed.ciphertext.clone();
        let plain_len = self
            .key
            .open_in_place(
                nonce,
                Aad::from(aad(&sealed.environment, &sealed.name, sealed.version)),
                &mut in_out,
            )
            .map_err(|_| tampered())?
            .len();
        in_out.truncate(plain_len);
        match String::from_utf8(in_out) {
            Ok(text) => Ok(SecretValue::new(text)),
            Err(e) => {
                let mut bytes = e.into_bytes();
                bytes.fill(0);
                Err(SecretError::NotText {
                    environment: sealed.environment.clone(),
                    name: sealed.name.clone(),
                    version: sealed.version,
                })
            }
        }
    }
}

/// `O_NOFOLLOW` on Linux (all architectures Hatoba builds for), without a
/// `libc` dependency for one constant.
const O_NOFOLLOW: i32 = 0o400_000;

/// What binds a ciphertext to its place: domain, environment, name,
/// version, separated by NULs (none of them can hold one).
fn aad(environment: &EnvName, name: &str, version: u64) -> Vec<u8> {
    format!("hatoba-secret/v1\0{environment}\0{name}\0{version}").into_bytes()
}

/// The secrets a deployment runs with: the version of each (recorded) and
/// the values (held in memory only, for starting instances).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretEnv {
    /// Name → version, as the history records it.
    pub versions: BTreeMap<String, u64>,
    /// Name → value, for the runtime; never saved.
    pub values: BTreeMap<String, SecretValue>,
}

impl SecretEnv {
    /// Opens the given versions of an environment's secrets from the store.
    pub async fn open(
        key: &SecretKey,
        store: &dyn hatoba_store::Store,
        environment: &EnvName,
        versions: &BTreeMap<String, u64>,
    ) -> Result<SecretEnv, SecretError> {
        let mut values = BTreeMap::new();
        for (name, version) in versions {
            let Some(sealed) = store.secret(environment, name, *version).await? else {
                return Err(SecretError::Missing {
                    environment: environment.clone(),
                    name: name.clone(),
                    version: *version,
                });
            };
            values.insert(name.clone(), key.open(&sealed)?);
        }
        Ok(SecretEnv {
            versions: versions.clone(),
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(name: &str) -> EnvName {
        name.parse().unwrap()
    }

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; KEY_LEN])
    }

    const CANARY: &str = "s3cr3t-canary-7f2a";

    fn sealed(k: &SecretKey) -> SealedSecret {
        k.seal(
            &env("production"),
            "DB_PASSWORD",
            2,
            &SecretValue::new(CANARY.to_owned()),
            Millis(1),
            "alice",
        )
        .unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_shows_nothing() {
        let k = key(1);
        let s = sealed(&k);
        assert!(
            !s.ciphertext
                .windows(CANARY.len())
                .any(|w| w == CANARY.as_bytes())
        );
        assert!(!format!("{s:?} {k:?}").contains(CANARY));
        assert_eq!(k.open(&s).unwrap().expose(), CANARY);
    }

    #[test]
    fn the_wrong_key_is_named_as_such() {
        let s = sealed(&key(1));
        let e = key(2).open(&s).unwrap_err();
        assert!(matches!(e, SecretError::WrongKey { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("stored with key k-"), "{text}");
        assert!(text.contains("DB_PASSWORD"), "{text}");
        // Even with the id forged to match, the other key does not open it.
        let mut forged = s.clone();
        forged.key_id = key(2).id().to_owned();
        assert!(matches!(
            key(2).open(&forged),
            Err(SecretError::Tampered { .. })
        ));
    }

    #[test]
    fn tampered_or_moved_ciphertext_does_not_open() {
        let k = key(1);
        let s = sealed(&k);
        for i in [0, s.ciphertext.len() / 2, s.ciphertext.len() - 1] {
            let mut t = s.clone();
            t.ciphertext[i] ^= 1;
            assert!(matches!(k.open(&t), Err(SecretError::Tampered { .. })));
        }
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert!(matches!(k.open(&t), Err(SecretError::Tampered { .. })));
        // The same bytes under another version, name or environment.
        for moved in [
            SealedSecret {
                version: 3,
                ..s.clone()
            },
            SealedSecret {
                name: "API_TOKEN".to_owned(),
                ..s.clone()
            },
            SealedSecret {
                environment: env("staging"),
                ..s.clone()
            },
        ] {
            let e = k.open(&moved).unwrap_err();
            assert!(matches!(e, SecretError::Tampered { .. }), "{e:?}");
            assert!(e.to_string().contains("altered"));
        }
    }

    #[test]
    fn every_seal_has_its_own_nonce() {
        let k = key(1);
        let mut nonces = std::collections::HashSet::new();
        let mut ciphertexts = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = sealed(&k);
            assert!(nonces.insert(s.nonce.clone()), "a nonce was used twice");
            ciphertexts.insert(s.ciphertext.clone());
        }
        assert_eq!(ciphertexts.len(), 1000);
    }

    #[test]
    fn key_text_is_checked() {
        let good = "ab".repeat(32);
        assert!(SecretKey::from_hex(&format!(" {good}\n"), "test").is_ok());
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(31)] {
            let e = SecretKey::from_hex(bad, "HATOBA_SECRET_KEY").unwrap_err();
            assert!(e.to_string().contains("not 64 hex digits"), "{bad:?}: {e}");
        }
        // The same text is the same key.
        assert_eq!(
            SecretKey::from_hex(&good, "a").unwrap().id(),
            SecretKey::from_hex(&good, "b").unwrap().id()
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_checked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = SecretKey::load_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Read back: the same key.
        assert_eq!(SecretKey::load_file(&path).unwrap().id(), first.id());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = SecretKey::load_file(&path).unwrap_err();
        assert!(
            matches!(e, KeyError::Permissions { mode: 0o640, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("640"), "{e}");

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = SecretKey::load_file(&link).unwrap_err();
        assert!(matches!(e, KeyError::Symlink { .. }), "{e:?}");
    }
}
