//! Signed updates over MQTT.
//!
//! A release is a **bundle**: one file holding a manifest (version, target, size and
//! SHA-256 of the binary, and an Ed25519 signature over those four) and the binary
//! ([`bundle`]). `syncstream release sign` makes one with a secret key ([`keys`]).
//! The transmitter serves bundles over HTTP and announces them, retained, on
//! [`UPDATE_TOPIC`] ([`announce`]). A device whose configuration pins the release
//! public key ([`updater`]):
//!
//! 1. takes the announced bundle for its own target ([`BUILD_TARGET`]) if it is newer
//!    than the running version and its signature verifies;
//! 2. downloads it (bounded by the announced size) and checks the bundle's manifest
//!    against the announcement, the binary's size, hash and signature, all before
//!    anything is written;
//! 3. installs it atomically beside the packaged binary ([`install`]: write beside,
//!    fsync, rename, with the previous binary kept) and exits so systemd restarts it;
//! 4. on the next start the launcher ([`launcher`]) runs the new binary, which
//!    confirms itself once it is healthy (online, playing); a binary that is not
//!    healthy within the health timeout (60 s by default) or keeps failing to start
//!    is rolled back to the previous one.
//!
//! Every refusal ([`Refusal`]) names the bundle and the reason, is logged, published
//! in the device's update status ([`agent`]) and leaves the installed binaries as
//! they were.

pub mod agent;
pub mod announce;
pub mod bundle;
pub mod install;
pub mod keys;
pub mod launcher;
mod refusal;
pub mod updater;

pub use refusal::Refusal;

/// The Rust target triple this crate was compiled for (`arm-unknown-linux-musleabihf`
/// for the ARMv6 receiver, `aarch64-unknown-linux-gnu`, `x86_64-unknown-linux-gnu`):
/// the target a device asks bundles for.
pub const BUILD_TARGET: &str = env!("SYNCSTREAM_BUILD_TARGET");

/// The version of the packaged binary (the workspace's version).
pub const PACKAGE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Retained topic on which the transmitter announces the bundles it serves.
pub const UPDATE_TOPIC: &str = "syncstream/update";

/// Retained topic on which a device publishes its update status
/// (`syncstream/update_status/<device>`).
pub fn status_topic(device: &str) -> String {
    format!("syncstream/update_status/{device}")
}

/// Path prefix under which the transmitter's HTTP server serves bundles.
pub const HTTP_PREFIX: &str = "/api/v1/updates/";
