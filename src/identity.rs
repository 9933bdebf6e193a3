//! The key a worker signs its results with and a requester its requests (protocol.md, "Keys are
//! for Pier signatures only"): `signingSeed` when set, else a key of its own, made on first use
//! and kept in a file (`identityFile`, or the default below) that only its owner can read. Never
//! the NATS login key: a key that logs in signs whatever nonce the server sends.

use crate::config::{Config, Secret};
use crate::error::PierError;
use crate::signature::SigningKey;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The identity file's first lines; the seed is the first line that is not a comment.
const HEADER: &str = "# pier-connector identity: the seed of this worker's and requester's own Pier signing key.\n\
# A secret: keep a copy where you keep secrets, share it with nobody, never use it to log in to NATS.\n";

/// Where the key of a worker or requester comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The configured `signingSeed`.
    SigningSeed,
    /// A key file: `identityFile`, or the default.
    File { path: PathBuf, created: bool },
}

/// The signing key with where it came from. Prints redacted.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: SigningKey,
    pub source: IdentitySource,
}

impl Identity {
    pub fn public_key(&self) -> &str {
        self.key.public_key()
    }

    pub fn file(&self) -> Option<&Path> {
        match &self.source {
            IdentitySource::File { path, .. } => Some(path),
            IdentitySource::SigningSeed => None,
        }
    }
}

/// The identity file used when `identityFile` is unset: `$XDG_CONFIG_HOME/pier-connector/
/// identity.seed`, else `~/.config/pier-connector/identity.seed`. (The OpenClaw plugin names a
/// file per account under its state dir instead.)
pub fn default_identity_file() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = non_empty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("pier-connector").join("identity.seed"))
}

/// The config's identity file: `identityFile`, else [`default_identity_file`].
pub fn identity_file_of(config: &Config) -> Result<PathBuf, PierError> {
    config
        .identity_file
        .clone()
        .or_else(default_identity_file)
        .ok_or_else(|| {
            PierError::Config(
                "no place for this worker's own signing key: HOME is not set; set identityFile (or signingSeed)".into(),
            )
        })
}

/// The identity of `config`: `signingSeed`, else the identity file's key, made now when the
/// file does not exist. Refused when it is the connection's login key.
pub fn resolve(config: &Config) -> Result<Identity, PierError> {
    let identity = match &config.signing_seed {
        Some(seed) => Identity {
            key: SigningKey::from_seed(seed.expose())
                .map_err(|why| PierError::Config(format!("signingSeed: {why}")))?,
            source: IdentitySource::SigningSeed,
        },
        None => {
            let path = identity_file_of(config)?;
            let (key, created) = load_or_create(&path).map_err(PierError::Config)?;
            Identity {
                key,
                source: IdentitySource::File { path, created },
            }
        }
    };
    refuse_login_key(config, &identity)?;
    Ok(identity)
}

/// Reads the identity file without making one: `None` when it does not exist.
pub fn peek(config: &Config) -> Result<Option<Identity>, PierError> {
    if config.signing_seed.is_some() {
        return resolve(config).map(Some);
    }
    let path = identity_file_of(config)?;
    if !path.exists() {
        return Ok(None);
    }
    let key = load(&path).map_err(PierError::Config)?;
    let identity = Identity {
        key,
        source: IdentitySource::File {
            path,
            created: false,
        },
    };
    refuse_login_key(config, &identity)?;
    Ok(Some(identity))
}

/// A rotated identity file: the new key, and the old one's public key and backup file.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub identity: Identity,
    pub previous_public_key: Option<String>,
    pub backup: Option<PathBuf>,
}

/// Replaces the identity file's key with a new one; the old file is kept as `<file>.old`
/// (replacing an earlier `.old`). Refused when the config has a `signingSeed`: that key is
/// rotated by configuring another.
pub fn rotate(config: &Config) -> Result<Rotated, PierError> {
    if config.signing_seed.is_some() {
        return Err(PierError::Config(
            "the signing key is signingSeed, not an identity file: rotate it by setting a new signingSeed (pier-connector keygen)".into(),
        ));
    }
    let path = identity_file_of(config)?;
    let previous = if path.exists() {
        Some(load(&path).map_err(PierError::Config)?)
    } else {
        None
    };
    let (seed, _) = SigningKey::generate()
        .map_err(|why| PierError::Config(format!("could not make a key: {why}")))?;
    let key = SigningKey::from_seed(&seed).map_err(PierError::Config)?;
    let tmp = write_new(&path, &Secret::new(seed), &key).map_err(PierError::Config)?;
    let backup = previous.as_ref().map(|_| backup_path(&path));
    if let Some(backup) = &backup {
        // A hard link keeps the old file's mode; the rename below then replaces the name only.
        let _ = std::fs::remove_file(backup);
        std::fs::hard_link(&path, backup)
            .or_else(|_| std::fs::copy(&path, backup).map(|_| ()))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                PierError::Config(format!(
                    "cannot keep the old identity as {}: {}",
                    backup.display(),
                    crate::error::one_line(&e.to_string())
                ))
            })?;
        restrict(backup);
    }
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PierError::Config(format!(
            "cannot replace the identity file {}: {}",
            path.display(),
            crate::error::one_line(&e.to_string())
        ))
    })?;
    let identity = Identity {
        key,
        source: IdentitySource::File {
            path,
            created: true,
        },
    };
    refuse_login_key(config, &identity)?;
    Ok(Rotated {
        previous_public_key: previous.map(|k| k.public_key().to_string()),
        identity,
        backup,
    })
}

fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".old");
    path.with_file_name(name)
}

/// The public key of the connection's login seed (`nkeySeed`, or the seed in `credsFile`), if
/// it has one that decodes.
pub fn login_public_key(config: &Config) -> Option<String> {
    let seed = match (&config.nkey_seed, &config.creds_file) {
        (Some(seed), _) => seed.clone(),
        (None, Some(path)) => crate::config::creds_seed(path)?,
        (None, None) => return None,
    };
    SigningKey::from_seed(seed.expose())
        .ok()
        .map(|k| k.public_key().to_string())
}

fn refuse_login_key(config: &Config, identity: &Identity) -> Result<(), PierError> {
    if login_public_key(config).as_deref() != Some(identity.public_key()) {
        return Ok(());
    }
    let what = match &identity.source {
        IdentitySource::SigningSeed => "signingSeed".to_string(),
        IdentitySource::File { path, .. } => format!("the identity file {}", path.display()),
    };
    let login = if config.nkey_seed.is_some() {
        "nkeySeed"
    } else {
        "the credsFile seed"
    };
    Err(crate::config::login_key_refused(&what, login))
}

/// The key in an identity file.
fn load(path: &Path) -> Result<SigningKey, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the identity file {shown}: {}",
            crate::error::one_line(&e.to_string())
        )
    })?;
    check_private(path)?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    // The error never quotes the file: it holds a seed.
    SigningKey::from_seed(seed).map_err(|why| format!("the identity file {shown}: {why}"))
}

/// The key in `path`, made and written there first when the file does not exist; `true` when
/// it was made now. Two processes that start at once end with the same key: the file appears
/// whole (a link to a finished temporary file) or not at all.
pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), String> {
    if path.exists() {
        return load(path).map(|key| (key, false));
    }
    let (seed, _) = SigningKey::generate()?;
    let key = SigningKey::from_seed(&seed)?;
    let tmp = write_new(path, &Secret::new(seed), &key)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((key, true)),
        // Another process made it first: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            load(path).map(|key| (key, false))
        }
        Err(e) => Err(format!(
            "cannot keep this worker's own signing key at {}: {}; set identityFile to a writable path (or signingSeed)",
            path.display(),
            crate::error::one_line(&e.to_string())
        )),
    }
}

/// Writes `seed` to a new temporary file beside `path` (mode 0600; its directory made 0700 if
/// missing) and returns the temporary file's path.
fn write_new(path: &Path, seed: &Secret, key: &SigningKey) -> Result<PathBuf, String> {
    let failed = |what: &str, e: std::io::Error| {
        format!(
            "cannot keep this worker's own signing key at {}: {what}: {}; set identityFile to a writable path (or signingSeed)",
            path.display(),
            crate::error::one_line(&e.to_string())
        )
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|e| failed("cannot make its directory", e))?;
        }
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .map_err(|e| failed("cannot write it", e))?;
    let text = format!(
        "{HEADER}# Public key (for requesters to pin): {}\n{}\n",
        key.public_key(),
        seed.expose()
    );
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed("cannot write it", e));
    }
    Ok(tmp)
}

/// An identity file others can read is refused, as ssh refuses such a key.
fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(format!(
                "the identity file {} can be read by others (mode {:o}): chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pier-identity-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(extra: serde_json::Value) -> Config {
        Config::from_value(extra).unwrap()
    }

    #[test]
    fn a_key_is_made_once_kept_private_and_read_again() {
        let dir = temp_dir("made");
        let file = dir.join("sub").join("id.seed");
        let c = config(json!({ "identityFile": file }));
        let first = resolve(&c).unwrap();
        assert!(matches!(
            first.source,
            IdentitySource::File { created: true, .. }
        ));
        let again = resolve(&c).unwrap();
        assert_eq!(again.public_key(), first.public_key());
        assert!(matches!(
            again.source,
            IdentitySource::File { created: false, .. }
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&file), 0o600);
            assert_eq!(mode(file.parent().unwrap()), 0o700);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = resolve(&c).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // Only the seed file is left: no temporary files.
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn processes_starting_at_once_share_one_key() {
        let dir = temp_dir("race");
        let file = dir.join("id.seed");
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&file).unwrap().0.public_key().to_string()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_login_key_never_signs() {
        let dir = temp_dir("login");
        let (seed, _) = SigningKey::generate().unwrap();
        // The same key as signingSeed and as nkeySeed.
        let err = Config::from_value(json!({ "nkeySeed": seed, "signingSeed": seed })).unwrap_err();
        assert_eq!(err.code(), "PIER_CONFIG");
        let text = err.to_string();
        assert!(
            text.contains("signingSeed is the NATS login key (nkeySeed)"),
            "{text}"
        );
        assert!(!text.contains(&seed), "{text}");
        // As the seed in a creds file.
        let creds = dir.join("user.creds");
        std::fs::write(
            &creds,
            format!("-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"),
        )
        .unwrap();
        let c = config(json!({ "credsFile": creds, "signingSeed": seed }));
        assert!(resolve(&c)
            .unwrap_err()
            .to_string()
            .contains("credsFile seed"));
        // An identity file that holds the login seed (copied there by hand) is refused too.
        let file = dir.join("id.seed");
        let (key, _) = load_or_create(&file).unwrap();
        let c = config(json!({ "identityFile": file, "nkeySeed": seed }));
        assert_eq!(resolve(&c).unwrap().public_key(), key.public_key());
        let mut text = std::fs::read_to_string(&file).unwrap();
        let stored = text.lines().last().unwrap().to_string();
        text = text.replace(&stored, &seed);
        std::fs::write(&file, text).unwrap();
        let err = resolve(&c).unwrap_err().to_string();
        assert!(err.contains("is the NATS login key"), "{err}");
        // Without a signingSeed, the login key is not used: a key of its own is.
        let c = config(json!({ "nkeySeed": seed, "identityFile": dir.join("other.seed") }));
        let own = resolve(&c).unwrap();
        assert_ne!(Some(own.public_key().to_string()), login_public_key(&c));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rotation_keeps_the_old_key_beside_the_new() {
        let dir = temp_dir("rotate");
        let file = dir.join("id.seed");
        let c = config(json!({ "identityFile": file }));
        let old = resolve(&c).unwrap();
        let rotated = rotate(&c).unwrap();
        assert_eq!(
            rotated.previous_public_key.as_deref(),
            Some(old.public_key())
        );
        assert_ne!(rotated.identity.public_key(), old.public_key());
        assert_eq!(
            resolve(&c).unwrap().public_key(),
            rotated.identity.public_key()
        );
        let backup = rotated.backup.unwrap();
        assert_eq!(load(&backup).unwrap().public_key(), old.public_key());
        let seeded = config(json!({ "signingSeed": SigningKey::generate().unwrap().0 }));
        assert!(rotate(&seeded)
            .unwrap_err()
            .to_string()
            .contains("signingSeed"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_file_is_an_error_that_quotes_nothing_of_it() {
        let dir = temp_dir("bad");
        let file = dir.join("id.seed");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&file)
            .unwrap()
            .write_all(b"SUsecret-but-broken\n")
            .unwrap();
        let err = resolve(&config(json!({ "identityFile": file })))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a user nkey seed"), "{err}");
        assert!(!err.contains("secret-but-broken"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_creds_file_seed_never_signs() {
        let dir = std::env::temp_dir().join(format!("pier-sign-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("user.creds");
        std::fs::write(
            &path,
            "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\nSUAAOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBZ5FE\n\
             ------END USER NKEY SEED------\n",
        )
        .unwrap();
        let login = "UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF";
        let c = Config::from_value(
            json!({ "signingSeed": "SUAAOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBZ5FE" }),
        )
        .unwrap();
        assert_eq!(
            resolve(&c).unwrap().public_key(),
            login,
            "signingSeed signs"
        );
        let c = Config::from_value(json!({ "credsFile": path, "identityFile": dir.join("id") }))
            .unwrap();
        assert_ne!(resolve(&c).unwrap().public_key(), login);
        let c = Config::from_value(json!({
            "credsFile": path,
            "signingSeed": "SUAAOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBYHA4DQOBZ5FE"
        }))
        .unwrap();
        let err = resolve(&c).unwrap_err().to_string();
        assert!(
            err.contains("signingSeed is the NATS login key (the credsFile seed)"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
