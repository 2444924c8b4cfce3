//! The bundle file and its signed manifest.
//!
//! A bundle is, byte for byte:
//!
//! ```text
//! SYNCSTREAM-BUNDLE 1\n
//! {"version":"0.2.0","target":"arm-unknown-linux-musleabihf","size":8123456,"sha256":"<64 hex>","signature":"<128 hex>"}\n
//! <size bytes: the binary>
//! ```
//!
//! The signature is Ed25519 over [`Manifest::statement`], a fixed text of the version,
//! target, size and SHA-256 (domain-separated by its first line), so neither the
//! binary nor any of those fields can be changed without the release key. The
//! manifest line is at most [`MAX_MANIFEST_BYTES`], the binary at most
//! [`MAX_BINARY_BYTES`].

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Refusal;

/// First line of every bundle.
pub const MAGIC: &[u8] = b"SYNCSTREAM-BUNDLE 1\n";
/// Largest manifest line, bytes.
pub const MAX_MANIFEST_BYTES: usize = 4096;
/// Largest binary a bundle may carry, bytes (the ARMv6 receiver is about 10 MB).
pub const MAX_BINARY_BYTES: u64 = 128 * 1024 * 1024;
/// Largest whole bundle file, bytes.
pub const MAX_BUNDLE_BYTES: u64 = MAX_BINARY_BYTES + MAX_MANIFEST_BYTES as u64 + 64;

/// What a bundle says about its binary, with the release key's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Semantic version of the binary (`0.2.0`).
    pub version: String,
    /// Rust target triple the binary was built for.
    pub target: String,
    /// Size of the binary, bytes.
    pub size: u64,
    /// SHA-256 of the binary, 64 lowercase hex digits.
    pub sha256: String,
    /// Ed25519 signature over [`Manifest::statement`], 128 hex digits; empty when
    /// unsigned (always refused by devices).
    #[serde(default)]
    pub signature: String,
}

impl Manifest {
    /// The bytes that are signed: `syncstream-update-v1\n<version>\n<target>\n<size>\n<sha256>\n`.
    pub fn statement(&self) -> Vec<u8> {
        format!(
            "syncstream-update-v1\n{}\n{}\n{}\n{}\n",
            self.version, self.target, self.size, self.sha256
        )
        .into_bytes()
    }

    /// Checks the fields' shapes and returns the parsed version. Errors: a version
    /// that is not semver, an empty or odd target, a size of 0 or above
    /// [`MAX_BINARY_BYTES`], a hash that is not 64 hex digits.
    pub fn validate(&self) -> Result<semver::Version, Refusal> {
        let version = semver::Version::parse(&self.version).map_err(|e| {
            Refusal::malformed("manifest", format!("version '{}': {e}", self.version))
        })?;
        let target_ok = !self.target.is_empty()
            && self.target.len() <= 64
            && self
                .target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !target_ok {
            return Err(Refusal::malformed(
                "manifest",
                format!("target '{}' is not a target triple", self.target),
            ));
        }
        if self.size == 0 || self.size > MAX_BINARY_BYTES {
            return Err(Refusal::malformed(
                "manifest",
                format!("size {} outside 1..={MAX_BINARY_BYTES}", self.size),
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refusal::malformed(
                "manifest",
                format!("sha256 '{}' is not 64 hex digits", self.sha256),
            ));
        }
        Ok(version)
    }

    /// Verifies the signature with `key`. Errors: [`Refusal::Unsigned`] without a
    /// signature, [`Refusal::BadSignature`] when it is not 128 hex digits or does not
    /// verify.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), Refusal> {
        if self.signature.is_empty() {
            return Err(Refusal::Unsigned {
                version: self.version.clone(),
                target: self.target.clone(),
            });
        }
        let bad = || Refusal::BadSignature {
            version: self.version.clone(),
            target: self.target.clone(),
        };
        let bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        key.verify(&self.statement(), &Signature::from_bytes(&bytes))
            .map_err(|_| bad())
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The signed manifest of `binary` as `version` for `target`.
///
/// Errors: the resulting manifest is invalid (see [`Manifest::validate`]).
pub fn sign(
    binary: &[u8],
    version: &str,
    target: &str,
    key: &SigningKey,
) -> Result<Manifest, Refusal> {
    let mut m = Manifest {
        version: version.to_string(),
        target: target.to_string(),
        size: binary.len() as u64,
        sha256: sha256_hex(binary),
        signature: String::new(),
    };
    m.validate()?;
    m.signature = hex::encode(key.sign(&m.statement()).to_bytes());
    Ok(m)
}

/// The bundle file for `manifest` and `binary`.
pub fn encode(manifest: &Manifest, binary: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    let mut out = Vec::with_capacity(MAGIC.len() + json.len() + 1 + binary.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&json);
    out.push(b'\n');
    out.extend_from_slice(binary);
    out
}

/// Reads the header of a bundle (or of its first bytes): the manifest and the offset
/// at which the binary starts. Checks the manifest's shape, not its signature.
///
/// Errors: [`Refusal::Malformed`] for a missing magic line, a manifest line longer
/// than [`MAX_MANIFEST_BYTES`] or without its newline, or a bad manifest.
pub fn read_header(bytes: &[u8]) -> Result<(Manifest, usize), Refusal> {
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| {
        Refusal::malformed("bundle", "it does not start with SYNCSTREAM-BUNDLE 1")
    })?;
    let window = &rest[..rest.len().min(MAX_MANIFEST_BYTES + 1)];
    let end = window.iter().position(|&b| b == b'\n').ok_or_else(|| {
        Refusal::malformed(
            "bundle",
            format!("no manifest line of at most {MAX_MANIFEST_BYTES} bytes after the magic"),
        )
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&rest[..end]).map_err(|e| Refusal::malformed("manifest", e))?;
    manifest.validate()?;
    Ok((manifest, MAGIC.len() + end + 1))
}

/// Opens a whole bundle with `key`: header, signature, then the binary's size and
/// hash. Returns the manifest and the binary.
///
/// Errors: [`Refusal::Malformed`], [`Refusal::Unsigned`], [`Refusal::BadSignature`],
/// [`Refusal::Truncated`] (fewer bytes than the manifest says), [`Refusal::Malformed`]
/// (more), [`Refusal::HashMismatch`].
pub fn open<'a>(bytes: &'a [u8], key: &VerifyingKey) -> Result<(Manifest, &'a [u8]), Refusal> {
    let (manifest, start) = read_header(bytes)?;
    manifest.verify(key)?;
    let binary = &bytes[start..];
    let got = binary.len() as u64;
    if got < manifest.size {
        return Err(Refusal::Truncated {
            version: manifest.version.clone(),
            expected: manifest.size,
            got,
        });
    }
    if got > manifest.size {
        return Err(Refusal::malformed(
            "bundle",
            format!(
                "{got} bytes of binary after the manifest, which says {}",
                manifest.size
            ),
        ));
    }
    let hash = sha256_hex(binary);
    if hash != manifest.sha256.to_ascii_lowercase() {
        return Err(Refusal::HashMismatch {
            version: manifest.version.clone(),
            expected: manifest.sha256.clone(),
            got: hash,
        });
    }
    Ok((manifest, binary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn bundle(binary: &[u8]) -> (Manifest, Vec<u8>) {
        let m = sign(binary, "1.2.3", "x86_64-unknown-linux-gnu", &key(1)).unwrap();
        let b = encode(&m, binary);
        (m, b)
    }

    #[test]
    fn a_signed_bundle_opens_to_its_binary() {
        let (m, b) = bundle(b"\x7fELF binary");
        let (m2, bin) = open(&b, &key(1).verifying_key()).unwrap();
        assert_eq!(m2, m);
        assert_eq!(bin, b"\x7fELF binary");
    }

    #[test]
    fn another_key_is_a_bad_signature() {
        let (_, b) = bundle(b"bin");
        let err = open(&b, &key(2).verifying_key()).unwrap_err();
        assert_eq!(err.code(), "bad_signature", "{err}");
    }

    #[test]
    fn an_unsigned_bundle_is_refused() {
        let mut m = sign(b"bin", "1.2.3", "x", &key(1)).unwrap();
        m.signature.clear();
        let err = open(&encode(&m, b"bin"), &key(1).verifying_key()).unwrap_err();
        assert_eq!(err.code(), "unsigned");
    }

    #[test]
    fn a_changed_field_breaks_the_signature() {
        let mut m = sign(b"bin", "1.2.3", "x86_64-unknown-linux-gnu", &key(1)).unwrap();
        m.target = "aarch64-unknown-linux-gnu".into();
        assert_eq!(
            m.verify(&key(1).verifying_key()).unwrap_err().code(),
            "bad_signature"
        );
    }

    #[test]
    fn a_cut_bundle_is_truncated_and_a_changed_binary_mismatches() {
        let (_, b) = bundle(b"0123456789");
        let k = key(1).verifying_key();
        let err = open(&b[..b.len() - 3], &k).unwrap_err();
        assert_eq!(
            err,
            Refusal::Truncated {
                version: "1.2.3".into(),
                expected: 10,
                got: 7
            }
        );
        let mut changed = b.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(open(&changed, &k).unwrap_err().code(), "hash_mismatch");
        let mut longer = b;
        longer.push(0);
        assert_eq!(open(&longer, &k).unwrap_err().code(), "malformed");
    }

    #[test]
    fn garbage_headers_are_malformed_not_panics() {
        let k = key(1).verifying_key();
        for bytes in [
            &b""[..],
            b"SYNCSTREAM-BUNDLE 1\n",
            b"SYNCSTREAM-BUNDLE 1\n{\"version\":1}\n",
            b"SYNCSTREAM-BUNDLE 2\n{}\n",
            b"SYNCSTREAM-BUNDLE 1\n{\"version\":\"x\",\"target\":\"t\",\"size\":1,\"sha256\":\"00\"}\n",
        ] {
            assert_eq!(open(bytes, &k).unwrap_err().code(), "malformed");
        }
        let mut long = MAGIC.to_vec();
        long.extend(std::iter::repeat_n(b' ', MAX_MANIFEST_BYTES + 10));
        let err = read_header(&long).unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");
    }
}
