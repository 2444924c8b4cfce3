//! Release keys: the secret key file (`syncstream release keygen`) and the public
//! key pinned in device configurations, both as hex text.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// A new random signing key (from the operating system's random source).
///
/// Errors: the random source cannot be read.
pub fn generate() -> anyhow::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to a new file at `path` (mode 0600) as one line of 64 hex digits.
///
/// Errors: the file exists already (a release key is never overwritten) or cannot be
/// written; the error names the path.
pub fn write_secret(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the secret key file {}", path.display()))?;
    writeln!(f, "{}", hex::encode(key.to_bytes()))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a secret key file written by [`write_secret`].
///
/// Errors: unreadable, or not 64 hex digits; the error names the path.
pub fn read_secret(path: &Path) -> anyhow::Result<SigningKey> {
    let text = syncstream_shared::fsutil::read_input_string(path, 4096, "the secret key file")?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{}: not a secret key (64 hex digits)", path.display()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// The public key of `key`, as 64 hex digits (what device configurations pin).
pub fn public_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// Parses a public key given as 64 hex digits.
///
/// Errors: not 64 hex digits, or not a valid Ed25519 point.
pub fn parse_public(text: &str) -> anyhow::Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("release public key '{text}' is not 64 hex digits (32 bytes)"))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("release public key '{text}' is not an Ed25519 key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("release.key");
        let k = generate().unwrap();
        write_secret(&p, &k).unwrap();
        assert_eq!(read_secret(&p).unwrap().to_bytes(), k.to_bytes());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_secret(&p, &generate().unwrap()).is_err());
        assert_eq!(parse_public(&public_hex(&k)).unwrap(), k.verifying_key());
    }

    #[test]
    fn bad_public_keys_name_the_reason() {
        assert!(parse_public("abcd")
            .unwrap_err()
            .to_string()
            .contains("64 hex"));
        assert!(parse_public(&"zz".repeat(32)).is_err());
    }
}
