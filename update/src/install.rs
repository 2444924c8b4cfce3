//! Installed updates under the state folder (`/var/lib/syncstream`), beside the
//! packaged binary (which is never written: `/usr` is read-only to the service):
//!
//! - `bin/syncstream`: the installed update (if any), run by the launcher;
//! - `bin/syncstream.prev`: the one before it (the rollback target);
//! - `update-state.json`: versions and hashes of both, the update waiting for its
//!   health check (`pending`) and the last outcome, written atomically.
//!
//! An install writes `bin/.syncstream.incoming`, fsyncs it, records the new state,
//! then renames the current binary to `.prev` and the new one into place and fsyncs
//! the folder: at every instant either the old or the new binary is complete at
//! `bin/syncstream`, and the launcher checks its hash against the state before
//! running it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::bundle::{sha256_hex, Manifest};
use crate::Refusal;

/// An installed binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Its signed version.
    pub version: String,
    /// SHA-256 of the binary, hex.
    pub sha256: String,
}

/// An update installed but not yet confirmed healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The new version.
    pub version: String,
    /// When it was installed, Unix seconds.
    pub installed_at_unix_s: u64,
    /// How many times the launcher has started it.
    pub attempts: u32,
}

/// What happened to the last update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `installed` (confirmed healthy) or `rolled_back`.
    pub state: String,
    /// The version concerned.
    pub version: String,
    /// Why (for a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When, Unix seconds.
    pub at_unix_s: u64,
}

/// `update-state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    /// The binary at `bin/syncstream`.
    pub current: Option<Installed>,
    /// The binary at `bin/syncstream.prev`.
    pub previous: Option<Installed>,
    /// The update waiting for its health check.
    pub pending: Option<Pending>,
    /// The last update's outcome.
    pub last: Option<Outcome>,
}

/// Where updates live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The state folder (`/var/lib/syncstream`).
    pub state_dir: PathBuf,
}

/// Unix time now, seconds.
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Layout {
    /// The layout under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
        }
    }
    /// `bin/`.
    pub fn bin_dir(&self) -> PathBuf {
        self.state_dir.join("bin")
    }
    /// The installed update, `bin/syncstream`.
    pub fn current(&self) -> PathBuf {
        self.bin_dir().join("syncstream")
    }
    /// The rollback target, `bin/syncstream.prev`.
    pub fn previous(&self) -> PathBuf {
        self.bin_dir().join("syncstream.prev")
    }
    fn incoming(&self) -> PathBuf {
        self.bin_dir().join(".syncstream.incoming")
    }
    /// `update-state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("update-state.json")
    }

    /// Reads the state; a missing file is the empty state.
    ///
    /// Errors: unreadable or malformed file, named.
    pub fn load(&self) -> anyhow::Result<State> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: malformed update state", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state atomically.
    ///
    /// Errors: the folder is not writable; named.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(state)?;
        syncstream_shared::fsutil::write_atomic(&self.state_file(), &json)
    }

    /// Installs a verified `binary` described by `manifest` as the current update,
    /// keeping the current one (if any) as the previous, and marks it pending.
    ///
    /// Errors: [`Refusal::Install`] naming the path that failed; the binary at
    /// `bin/syncstream` is then the old one, complete.
    pub fn install(
        &self,
        manifest: &Manifest,
        binary: &[u8],
        now_unix_s: u64,
    ) -> Result<(), Refusal> {
        let fail = |e: anyhow::Error| Refusal::Install {
            version: manifest.version.clone(),
            reason: format!("{e:#}"),
        };
        self.install_inner(manifest, binary, now_unix_s)
            .map_err(fail)
    }

    fn install_inner(&self, manifest: &Manifest, binary: &[u8], now: u64) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let bin = self.bin_dir();
        std::fs::create_dir_all(&bin)
            .with_context(|| format!("cannot create {}", bin.display()))?;
        let incoming = self.incoming();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&incoming)
            .with_context(|| format!("cannot create {}", incoming.display()))?;
        f.write_all(binary)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", incoming.display()))?;
        drop(f);
        let mut state = self.load()?;
        let current_exists = self.current().exists();
        let new_state = State {
            previous: if current_exists {
                state.current.take()
            } else {
                None
            },
            current: Some(Installed {
                version: manifest.version.clone(),
                sha256: sha256_hex(binary),
            }),
            pending: Some(Pending {
                version: manifest.version.clone(),
                installed_at_unix_s: now,
                attempts: 0,
            }),
            last: state.last.take(),
        };
        self.save(&new_state)?;
        if current_exists {
            std::fs::rename(self.current(), self.previous()).with_context(|| {
                format!(
                    "cannot keep {} as the previous binary",
                    self.current().display()
                )
            })?;
        }
        std::fs::rename(&incoming, self.current()).with_context(|| {
            format!("cannot move the new binary to {}", self.current().display())
        })?;
        sync_dir(&bin)
    }

    /// Marks the pending update healthy.
    ///
    /// Errors: the state cannot be read or written.
    pub fn confirm(&self, now_unix_s: u64) -> anyhow::Result<()> {
        let mut state = self.load()?;
        if let Some(p) = state.pending.take() {
            state.last = Some(Outcome {
                state: "installed".into(),
                version: p.version,
                reason: None,
                at_unix_s: now_unix_s,
            });
            self.save(&state)?;
        }
        Ok(())
    }

    /// Rolls the current update back: the previous binary (if any) becomes current
    /// again, otherwise the installed update is removed and the packaged binary runs.
    /// Records `reason` as the last outcome.
    ///
    /// Errors: the renames or the state write failed.
    pub fn rollback(&self, reason: &str, now_unix_s: u64) -> anyhow::Result<()> {
        let mut state = self.load()?;
        let failed = state
            .pending
            .take()
            .map(|p| p.version)
            .or_else(|| state.current.as_ref().map(|c| c.version.clone()))
            .unwrap_or_default();
        if self.previous().exists() {
            std::fs::rename(self.previous(), self.current())
                .with_context(|| format!("cannot restore {}", self.previous().display()))?;
            state.current = state.previous.take();
        } else {
            match std::fs::remove_file(self.current()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot remove {}", self.current().display()))
                }
            }
            state.current = None;
        }
        state.last = Some(Outcome {
            state: "rolled_back".into(),
            version: failed,
            reason: Some(reason.to_string()),
            at_unix_s: now_unix_s,
        });
        self.save(&state)?;
        sync_dir(&self.bin_dir())
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush the folder {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str, binary: &[u8]) -> Manifest {
        Manifest {
            version: version.into(),
            target: "t".into(),
            size: binary.len() as u64,
            sha256: sha256_hex(binary),
            signature: String::new(),
        }
    }

    #[test]
    fn install_keeps_the_previous_and_rollback_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        l.install(&manifest("0.2.0", b"two"), b"two", 10).unwrap();
        l.confirm(11).unwrap();
        l.install(&manifest("0.3.0", b"three"), b"three", 20)
            .unwrap();
        assert_eq!(std::fs::read(l.current()).unwrap(), b"three");
        assert_eq!(std::fs::read(l.previous()).unwrap(), b"two");
        let s = l.load().unwrap();
        assert_eq!(s.pending.as_ref().unwrap().version, "0.3.0");
        assert_eq!(s.previous.as_ref().unwrap().version, "0.2.0");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(l.current()).unwrap().permissions().mode() & 0o111,
            0o111
        );

        l.rollback("not healthy within 60 s", 30).unwrap();
        assert_eq!(std::fs::read(l.current()).unwrap(), b"two");
        let s = l.load().unwrap();
        assert_eq!(s.current.unwrap().version, "0.2.0");
        assert_eq!(s.pending, None);
        let last = s.last.unwrap();
        assert_eq!(
            (last.state.as_str(), last.version.as_str()),
            ("rolled_back", "0.3.0")
        );
        // No stray temporary files.
        let names: Vec<_> = std::fs::read_dir(l.bin_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn rolling_back_the_first_update_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        l.install(&manifest("0.2.0", b"two"), b"two", 10).unwrap();
        l.rollback("crashed", 11).unwrap();
        assert!(!l.current().exists());
        assert_eq!(l.load().unwrap().current, None);
    }

    #[test]
    fn a_malformed_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        std::fs::write(l.state_file(), b"{").unwrap();
        let err = l.load().unwrap_err();
        assert!(format!("{err:#}").contains("update-state.json"));
    }
}
