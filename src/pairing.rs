//! Where the pairing key comes from on the command line (see
//! [`syncstream_protocol::auth`] and docs/security.md), and `syncstream key`.
//!
//! - The transmitter reads `--key-file`, else `pairing.key` in its `--state-dir`, else
//!   the default file ([`default_key_file`]); it creates the key there on its first
//!   start and says so.
//! - A receiver takes `--key` (or `SYNCSTREAM_KEY`), else reads `--key-file`, else the
//!   default file; it never creates one (a key of its own would pair it with nobody).

use std::path::Path;

use anyhow::Context;
use syncstream_protocol::auth::{default_key_file, PairingKey};

/// The transmitter's key file for `--key-file` and `--state-dir`.
#[cfg(feature = "transmitter")]
pub fn transmitter_key_file(
    key_file: Option<&Path>,
    state_dir: Option<&Path>,
) -> std::path::PathBuf {
    match (key_file, state_dir) {
        (Some(f), _) => f.to_owned(),
        (None, Some(d)) => d.join(syncstream_protocol::auth::KEY_FILE_NAME),
        (None, None) => default_key_file(),
    }
}

/// The transmitter's key: read from `path`, or created there (logged with how to pair
/// receivers).
///
/// Errors: the file exists but is not a key, or cannot be created.
#[cfg(feature = "transmitter")]
pub fn transmitter_key(path: &Path) -> anyhow::Result<PairingKey> {
    let (key, created) = PairingKey::load_or_create(path)?;
    if created {
        tracing::info!(
            "created the pairing key {} (mode 0600): copy it to each receiver \
             (--key-file, or key_file in receiver.toml; docs/security.md)",
            path.display()
        );
    }
    Ok(key)
}

/// A receiver's key: `key` (text), else the file `key_file`, else the default file.
///
/// Errors: a malformed key, or no key file (the message says how to pair).
pub fn receiver_key(key: Option<&str>, key_file: Option<&Path>) -> anyhow::Result<PairingKey> {
    if let Some(k) = key {
        return PairingKey::parse(k).context("--key");
    }
    let path = key_file.map_or_else(default_key_file, Path::to_owned);
    if !path.exists() {
        anyhow::bail!(
            "no pairing key at {}: copy the transmitter's pairing.key there, or give \
             --key-file or --key (see docs/security.md)",
            path.display()
        );
    }
    Ok(PairingKey::load(&path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmitter_key_file_prefers_the_flag_then_the_state_folder() {
        let f = Path::new("/k/key");
        let d = Path::new("/state");
        assert_eq!(transmitter_key_file(Some(f), Some(d)), f);
        assert_eq!(transmitter_key_file(None, Some(d)), d.join("pairing.key"));
        assert_eq!(transmitter_key_file(None, None), default_key_file());
    }

    #[test]
    fn a_receiver_without_a_key_says_how_to_pair() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let e = receiver_key(None, Some(&missing)).unwrap_err().to_string();
        assert!(
            e.contains("nope.key") && e.contains("copy the transmitter"),
            "{e}"
        );
        let e = format!("{:#}", receiver_key(Some("xyz"), None).unwrap_err());
        assert!(e.contains("--key") && e.contains("64 hexadecimal"), "{e}");
        let k = PairingKey::generate().unwrap();
        assert_eq!(receiver_key(Some(&k.to_text()), None).unwrap(), k);
        let f = dir.path().join("pairing.key");
        let t = transmitter_key(&f).unwrap();
        assert_eq!(receiver_key(None, Some(&f)).unwrap(), t);
    }
}
