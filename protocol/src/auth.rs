//! The pairing key and every credential derived from it.
//!
//! A transmitter creates one random 256-bit **pairing key** on its first start
//! (`pairing.key` in its state folder, mode 0600); a receiver is paired by giving it
//! the same key (`--key-file`, `--key`, `key_file` in its config file). Every
//! credential the system uses is derived from it with HMAC-SHA256 (RFC 2104,
//! FIPS 180-4) under a distinct label, so one secret is all a user copies and
//! rotating it (a new key file, then the receivers re-paired) rotates everything:
//!
//! - the **stream handshake** ([`StreamAuth`]): mutual challenge-response on the stream
//!   and clock connections, so only paired receivers get audio and receivers play only
//!   from a paired transmitter;
//! - the **MQTT password** of each user name ([`PairingKey::mqtt_password`]), checked
//!   by the embedded broker and usable in a mosquitto password file;
//! - the **API token** ([`PairingKey::api_token`]) that the HTTP API, the dashboard and
//!   the source-window service take as `Authorization: Bearer <token>`.
//!
//! The derivations are documented in docs/security.md; none of them reveals the key.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::Frame;

type HmacSha256 = Hmac<Sha256>;

/// Length of the pairing key, bytes.
pub const KEY_BYTES: usize = 32;
/// Length of a handshake nonce, bytes.
pub const NONCE_BYTES: usize = 16;
/// The pairing key's file name in a state folder.
pub const KEY_FILE_NAME: &str = "pairing.key";
/// Largest key file read, bytes (a key is 64 hex digits and a newline).
pub const MAX_KEY_FILE_BYTES: u64 = 4096;
/// The MQTT user name of the transmitter's own clients (receivers use their device
/// name).
pub const TRANSMITTER_MQTT_USER: &str = "syncstream-transmitter";

/// The default key file: `$SYNCSTREAM_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/syncstream/pairing.key`, else `$HOME/.config/syncstream/pairing.key`,
/// else `/etc/syncstream/pairing.key`. A transmitter and a receiver started by one user
/// on one machine share it, so they pair with no step at all.
pub fn default_key_file() -> PathBuf {
    if let Some(p) = std::env::var_os("SYNCSTREAM_KEY_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    match config {
        Some(c) => c.join("syncstream").join(KEY_FILE_NAME),
        None => PathBuf::from("/etc/syncstream").join(KEY_FILE_NAME),
    }
}

/// A handshake nonce.
pub type Nonce = [u8; NONCE_BYTES];
/// A handshake proof (an HMAC-SHA256 tag).
pub type Proof = [u8; 32];

/// The shared secret of one SyncStream system (256 random bits).
///
/// `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingKey([u8; KEY_BYTES]);

impl std::fmt::Debug for PairingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingKey(…)")
    }
}

/// A key that could not be read, parsed or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Text that is not 64 hex digits.
    #[error("a pairing key is 64 hexadecimal digits; {0}")]
    Malformed(String),
    /// The key file could not be read or written.
    #[error("pairing key file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The system's random number source failed.
    #[error("cannot draw a random pairing key: {0}")]
    Random(String),
}

impl PairingKey {
    /// A new random key from the operating system's random source.
    ///
    /// Errors: [`KeyError::Random`] when the source fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = [0u8; KEY_BYTES];
        getrandom::fill(&mut k).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(k))
    }

    /// The key from its text form (64 hex digits; surrounding white space ignored).
    ///
    /// Errors: [`KeyError::Malformed`] saying what is wrong (never echoing the text).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let t = text.trim();
        if t.len() != 2 * KEY_BYTES {
            return Err(KeyError::Malformed(format!(
                "got {} characters",
                t.chars().count()
            )));
        }
        let mut k = [0u8; KEY_BYTES];
        hex::decode_to_slice(t, &mut k)
            .map_err(|_| KeyError::Malformed("it has a character that is not one".into()))?;
        Ok(Self(k))
    }

    /// The text form: 64 lower-case hex digits.
    pub fn to_text(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads the key from `path` (at most [`MAX_KEY_FILE_BYTES`]).
    ///
    /// Errors: [`KeyError::File`] naming the file (missing, unreadable, too big, not a
    /// key).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes =
            syncstream_shared::fsutil::read_capped(path, MAX_KEY_FILE_BYTES).map_err(|e| {
                KeyError::File {
                    path: path.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let text = String::from_utf8_lossy(&bytes);
        Self::parse(&text).map_err(|e| KeyError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Reads the key from `path`, or creates it there (a new random key, mode 0600,
    /// written atomically and never over a key another process created at the same
    /// moment). Returns the key and whether it was created now.
    ///
    /// Errors: [`KeyError::File`] when the file exists but is not a key, or the folder
    /// cannot be created or written.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match Self::load(path) {
            Ok(k) => return Ok((k, false)),
            Err(KeyError::File { .. }) if !path.exists() => {}
            Err(e) => return Err(e),
        }
        let file_err = |reason: String| KeyError::File {
            path: path.to_owned(),
            reason,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| file_err(format!("cannot create its folder: {e}")))?;
        let key = Self::generate()?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| file_err(format!("cannot create a temporary file: {e}")))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| file_err(e.to_string()))?;
        }
        writeln!(tmp, "{}", key.to_text()).map_err(|e| file_err(e.to_string()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| file_err(e.to_string()))?;
        match tmp.persist_noclobber(path) {
            Ok(_) => Ok((key, true)),
            // Another process created it first: use theirs.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::load(path)?, false))
            }
            Err(e) => Err(file_err(e.error.to_string())),
        }
    }

    /// HMAC-SHA256 of `parts` (each length-prefixed, so no two lists of parts give the
    /// same input) under this key.
    fn tag(&self, label: &str, parts: &[&[u8]]) -> HmacSha256 {
        // Any key length is valid for HMAC; this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        for p in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    fn tag_bytes(&self, label: &str, parts: &[&[u8]]) -> Proof {
        self.tag(label, parts).finalize().into_bytes().into()
    }

    /// The MQTT password of user `username` (a receiver's device name, or
    /// [`TRANSMITTER_MQTT_USER`]): 32 hex digits of HMAC(key, "mqtt", username).
    pub fn mqtt_password(&self, username: &str) -> String {
        hex::encode(&self.tag_bytes("syncstream/mqtt", &[username.as_bytes()])[..16])
    }

    /// Whether `password` is `username`'s MQTT password (constant time).
    pub fn check_mqtt_password(&self, username: &str, password: &str) -> bool {
        let Ok(given) = hex::decode(password.trim()) else {
            return false;
        };
        let mac = self.tag("syncstream/mqtt", &[username.as_bytes()]);
        mac.verify_truncated_left(&given).is_ok() && given.len() == 16
    }

    /// The HTTP API token (dashboard, control API, source windows): 32 hex digits of
    /// HMAC(key, "api").
    pub fn api_token(&self) -> String {
        hex::encode(&self.tag_bytes("syncstream/api", &[])[..16])
    }

    /// Whether `token` is the API token (constant time).
    pub fn check_api_token(&self, token: &str) -> bool {
        let Ok(given) = hex::decode(token.trim()) else {
            return false;
        };
        given.len() == 16
            && self
                .tag("syncstream/api", &[])
                .verify_truncated_left(&given)
                .is_ok()
    }
}

/// A fresh random nonce (falls back to a time-derived one only if the random source
/// fails, which the proof's other inputs keep unique per connection).
pub fn nonce() -> Nonce {
    let mut n = [0u8; NONCE_BYTES];
    if getrandom::fill(&mut n).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        n.copy_from_slice(&t.to_le_bytes());
    }
    n
}

/// Who is proving: the two directions use different labels, so a proof cannot be
/// reflected back.
const SERVER_LABEL: &str = "syncstream/stream/server";
const CLIENT_LABEL: &str = "syncstream/stream/client";

/// The mutual challenge-response of a stream or clock connection.
///
/// 1. The receiver opens with its hello ([`Frame::ClientHello`] or
///    [`Frame::ClockHello`]) carrying a fresh `client_nonce`.
/// 2. The transmitter answers [`Frame::AuthChallenge`] with its own fresh
///    `server_nonce` and `server_proof` = HMAC(key, server label, client nonce, server
///    nonce, device, instance): the receiver checks it, so it plays only from a
///    transmitter that holds the key.
/// 3. The receiver answers [`Frame::AuthResponse`] with `proof` = HMAC(key, client
///    label, server nonce, client nonce, device, instance); the transmitter checks it
///    before it sends a `ServerHello` or answers a clock request.
///
/// Both nonces are fresh per connection, so a recorded exchange cannot be replayed;
/// the key never crosses the network. The audio itself is not encrypted (see
/// docs/security.md).
#[derive(Debug, Clone)]
pub struct StreamAuth {
    key: PairingKey,
}

impl StreamAuth {
    /// The handshake under `key`.
    pub fn new(key: PairingKey) -> Self {
        Self { key }
    }

    fn proof(
        &self,
        label: &str,
        first: &Nonce,
        second: &Nonce,
        device: &str,
        instance: u64,
    ) -> Proof {
        self.key.tag_bytes(
            label,
            &[first, second, device.as_bytes(), &instance.to_be_bytes()],
        )
    }

    /// Transmitter, step 2: the challenge for a hello from `device`/`instance` with
    /// `client_nonce`, and the server nonce to keep for [`Self::check_response`].
    pub fn challenge(&self, client_nonce: &Nonce, device: &str, instance: u64) -> (Frame, Nonce) {
        let server_nonce = nonce();
        let server_proof = self.proof(SERVER_LABEL, client_nonce, &server_nonce, device, instance);
        (
            Frame::AuthChallenge {
                server_nonce,
                server_proof,
            },
            server_nonce,
        )
    }

    /// Receiver, step 2→3: checks the transmitter's `server_proof` and returns the
    /// [`Frame::AuthResponse`] to send.
    ///
    /// Errors: the transmitter does not hold this receiver's key (the message says so).
    pub fn respond(
        &self,
        client_nonce: &Nonce,
        server_nonce: &Nonce,
        server_proof: &Proof,
        device: &str,
        instance: u64,
    ) -> Result<Frame, String> {
        let mac = self.key.tag(
            SERVER_LABEL,
            &[
                client_nonce,
                server_nonce,
                device.as_bytes(),
                &instance.to_be_bytes(),
            ],
        );
        if mac.verify_slice(server_proof).is_err() {
            return Err(
                "the transmitter does not hold this receiver's pairing key (pair it again: docs/security.md)"
                    .into(),
            );
        }
        Ok(Frame::AuthResponse {
            proof: self.proof(CLIENT_LABEL, server_nonce, client_nonce, device, instance),
        })
    }

    /// Transmitter, step 3: checks a receiver's `proof` (constant time).
    ///
    /// Errors: the receiver does not hold the key (the message is what it is told).
    pub fn check_response(
        &self,
        client_nonce: &Nonce,
        server_nonce: &Nonce,
        proof: &Proof,
        device: &str,
        instance: u64,
    ) -> Result<(), String> {
        let mac = self.key.tag(
            CLIENT_LABEL,
            &[
                server_nonce,
                client_nonce,
                device.as_bytes(),
                &instance.to_be_bytes(),
            ],
        );
        mac.verify_slice(proof).map_err(|_| {
            format!(
                "'{device}' is not paired with this transmitter (wrong pairing key; see docs/security.md)"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PairingKey {
        PairingKey([b; KEY_BYTES])
    }

    #[test]
    fn text_form_round_trips_and_bad_text_is_named() {
        let k = PairingKey::generate().unwrap();
        assert_eq!(PairingKey::parse(&k.to_text()).unwrap(), k);
        assert_eq!(
            PairingKey::parse(&format!(" {}\n", k.to_text())).unwrap(),
            k
        );
        let e = PairingKey::parse("abc").unwrap_err().to_string();
        assert!(
            e.contains("64 hexadecimal digits") && e.contains("3 characters"),
            "{e}"
        );
        let e = PairingKey::parse(&"g".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("not one"), "{e}");
        assert_eq!(format!("{k:?}"), "PairingKey(…)");
    }

    #[test]
    fn key_file_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(KEY_FILE_NAME);
        let (k1, created) = PairingKey::load_or_create(&path).unwrap();
        assert!(created);
        let (k2, created) = PairingKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1, k2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        let e = PairingKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("pairing.key") && e.contains("64 hexadecimal"),
            "{e}"
        );
    }

    #[test]
    fn derived_credentials_check_and_differ_per_user_and_key() {
        let k = key(1);
        let p = k.mqtt_password("kitchen");
        assert_eq!(p.len(), 32);
        assert!(k.check_mqtt_password("kitchen", &p));
        assert!(!k.check_mqtt_password("hall", &p));
        assert!(!key(2).check_mqtt_password("kitchen", &p));
        assert!(!k.check_mqtt_password("kitchen", ""));
        assert!(!k.check_mqtt_password("kitchen", &p[..30]));
        assert!(!k.check_mqtt_password("kitchen", "zz"));
        let t = k.api_token();
        assert!(k.check_api_token(&t));
        assert!(!key(2).check_api_token(&t));
        assert!(!k.check_api_token(&p));
        assert_ne!(t, p);
    }

    fn challenge_parts(f: Frame) -> (Nonce, Proof) {
        match f {
            Frame::AuthChallenge {
                server_nonce,
                server_proof,
            } => (server_nonce, server_proof),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_handshake_passes_with_one_key_and_fails_with_another() {
        let tx = StreamAuth::new(key(7));
        let rx = StreamAuth::new(key(7));
        let cn = nonce();
        let (ch, sn) = tx.challenge(&cn, "tv", 42);
        let (sn2, sp) = challenge_parts(ch);
        assert_eq!(sn, sn2);
        let Frame::AuthResponse { proof } = rx.respond(&cn, &sn, &sp, "tv", 42).unwrap() else {
            panic!()
        };
        tx.check_response(&cn, &sn, &proof, "tv", 42).unwrap();
        // Another device name or instance, or a replay against a fresh server nonce.
        assert!(tx.check_response(&cn, &sn, &proof, "hall", 42).is_err());
        assert!(tx.check_response(&cn, &sn, &proof, "tv", 43).is_err());
        let (_, fresh) = tx.challenge(&cn, "tv", 42);
        assert!(tx.check_response(&cn, &fresh, &proof, "tv", 42).is_err());
        // A receiver with another key refuses the transmitter, and is refused.
        let stranger = StreamAuth::new(key(8));
        let e = stranger.respond(&cn, &sn, &sp, "tv", 42).unwrap_err();
        assert!(e.contains("pairing key"), "{e}");
        let forged = stranger.proof(CLIENT_LABEL, &sn, &cn, "tv", 42);
        let e = tx.check_response(&cn, &sn, &forged, "tv", 42).unwrap_err();
        assert!(e.contains("not paired"), "{e}");
        // A server proof reflected as a client proof does not pass.
        assert!(tx.check_response(&cn, &sn, &sp, "tv", 42).is_err());
    }
}
