//! The announcement on [`crate::UPDATE_TOPIC`] (retained): every bundle the
//! transmitter serves, as
//! `{"bundles":[{"version":"0.2.0","target":"...","url":"/api/v1/updates/<file>","size":N,"sha256":"...","signature":"..."}]}`.
//! A relative `url` is on the transmitter's HTTP server.

use serde::{Deserialize, Serialize};

use crate::bundle::Manifest;
use crate::Refusal;

/// Largest announcement payload, bytes.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;
/// Most bundles in one announcement.
pub const MAX_BUNDLES: usize = 64;

/// One announced bundle: its manifest's fields and where to get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncedBundle {
    /// Semantic version.
    pub version: String,
    /// Rust target triple.
    pub target: String,
    /// `http://host:port/path` or a path on the transmitter's HTTP server.
    pub url: String,
    /// Size of the binary, bytes.
    pub size: u64,
    /// SHA-256 of the binary, hex.
    pub sha256: String,
    /// Ed25519 signature (hex), empty if unsigned.
    #[serde(default)]
    pub signature: String,
}

impl AnnouncedBundle {
    /// The bundle `manifest` served at `url`.
    pub fn new(manifest: &Manifest, url: String) -> Self {
        Self {
            version: manifest.version.clone(),
            target: manifest.target.clone(),
            url,
            size: manifest.size,
            sha256: manifest.sha256.clone(),
            signature: manifest.signature.clone(),
        }
    }

    /// The manifest this entry announces.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            version: self.version.clone(),
            target: self.target.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// What the transmitter publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// The bundles served, any order.
    pub bundles: Vec<AnnouncedBundle>,
}

/// Parses an announcement payload.
///
/// Errors: [`Refusal::Malformed`] for a payload over [`MAX_ANNOUNCEMENT_BYTES`], bad
/// JSON (naming the field), more than [`MAX_BUNDLES`] entries or an entry whose
/// manifest fields are invalid.
pub fn parse(payload: &[u8]) -> Result<Announcement, Refusal> {
    if payload.len() > MAX_ANNOUNCEMENT_BYTES {
        return Err(Refusal::malformed(
            "announcement",
            format!("{} bytes (at most {MAX_ANNOUNCEMENT_BYTES})", payload.len()),
        ));
    }
    let a: Announcement =
        serde_json::from_slice(payload).map_err(|e| Refusal::malformed("announcement", e))?;
    if a.bundles.len() > MAX_BUNDLES {
        return Err(Refusal::malformed(
            "announcement",
            format!("{} bundles (at most {MAX_BUNDLES})", a.bundles.len()),
        ));
    }
    for (i, b) in a.bundles.iter().enumerate() {
        b.manifest()
            .validate()
            .map_err(|e| Refusal::malformed("announcement", format!("bundles[{i}]: {e}")))?;
        if b.url.is_empty() || b.url.len() > 1024 {
            return Err(Refusal::malformed(
                "announcement",
                format!("bundles[{i}].url must be 1 to 1024 characters"),
            ));
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_bad_entries() {
        let ok = br#"{"bundles":[{"version":"0.2.0","target":"x86_64-unknown-linux-gnu","url":"/api/v1/updates/a.bundle","size":3,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","signature":""}]}"#;
        assert_eq!(parse(ok).unwrap().bundles.len(), 1);
        let bad_version = String::from_utf8_lossy(ok).replace("0.2.0", "two");
        let err = parse(bad_version.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("bundles[0]"), "{err}");
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(&vec![b' '; MAX_ANNOUNCEMENT_BYTES + 1]).is_err());
    }
}
