//! Why an update was not applied.

/// Why a device refused (or failed to apply) an update. The running binary and the
/// installed ones are untouched whenever one of these is returned before
/// [`crate::install::Layout::install`] finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The announcement or the bundle cannot be read (bad JSON, bad header, a field
    /// out of range); names the thing and the reason.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// `announcement`, `bundle`, `manifest`, ...
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The bundle carries no signature.
    #[error("bundle {version} for {target} is unsigned")]
    Unsigned {
        /// Its version.
        version: String,
        /// Its target.
        target: String,
    },
    /// The signature does not verify with the pinned public key.
    #[error(
        "bundle {version} for {target}: the signature does not verify with the pinned release key"
    )]
    BadSignature {
        /// Its version.
        version: String,
        /// Its target.
        target: String,
    },
    /// No announced bundle (or the downloaded one) is for this device's target.
    #[error("no bundle for this device's target {want} (offered: {offered})")]
    WrongTarget {
        /// This device's target.
        want: String,
        /// The targets offered, comma-separated.
        offered: String,
    },
    /// The bundle is older than the running version.
    #[error("bundle {version} is older than the running version {running}")]
    Older {
        /// The bundle's version.
        version: String,
        /// The running version.
        running: String,
    },
    /// Fewer bytes than the manifest says (a cut download or a cut file).
    #[error("bundle {version} is truncated: {got} bytes of binary, {expected} expected")]
    Truncated {
        /// Its version.
        version: String,
        /// Bytes expected.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// The binary's SHA-256 is not the signed one.
    #[error(
        "bundle {version}: the binary's SHA-256 is {got}, the signed manifest says {expected}"
    )]
    HashMismatch {
        /// Its version.
        version: String,
        /// Signed hash (hex).
        expected: String,
        /// Computed hash (hex).
        got: String,
    },
    /// The downloaded bundle's manifest differs from the announced one.
    #[error("bundle at {url} does not match its announcement: {reason}")]
    NotAnnounced {
        /// Where it was downloaded from.
        url: String,
        /// Which field differs.
        reason: String,
    },
    /// The download failed (connection, HTTP status, too large).
    #[error("cannot download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Writing the new binary or the state failed; the previous binary stays in place.
    #[error("cannot install bundle {version}: {reason}")]
    Install {
        /// Its version.
        version: String,
        /// Why.
        reason: String,
    },
}

impl Refusal {
    /// A short stable code for status messages and dashboards: `malformed`,
    /// `unsigned`, `bad_signature`, `wrong_target`, `older`, `truncated`,
    /// `hash_mismatch`, `not_announced`, `download`, `install`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed { .. } => "malformed",
            Refusal::Unsigned { .. } => "unsigned",
            Refusal::BadSignature { .. } => "bad_signature",
            Refusal::WrongTarget { .. } => "wrong_target",
            Refusal::Older { .. } => "older",
            Refusal::Truncated { .. } => "truncated",
            Refusal::HashMismatch { .. } => "hash_mismatch",
            Refusal::NotAnnounced { .. } => "not_announced",
            Refusal::Download { .. } => "download",
            Refusal::Install { .. } => "install",
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl ToString) -> Self {
        Refusal::Malformed {
            what,
            reason: reason.to_string(),
        }
    }
}
