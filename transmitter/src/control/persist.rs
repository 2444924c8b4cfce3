//! The control plane's state file: `<state dir>/state.json` ([`super::state::Settings`]:
//! groups, memberships, device volumes, mutes and manual adjustments, streams added at
//! runtime), written atomically (a temporary file renamed over the old one) after
//! every change, read once at start. A file that is not valid is reported and set
//! aside as `state.json.bad`, and the transmitter starts with defaults.

use std::path::{Path, PathBuf};

use syncstream_shared::fsutil::{read_capped, write_atomic};

use super::state::Settings;

/// Name of the state file in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Largest state file read, bytes.
pub const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// Where the state lives (`None`: nowhere, nothing persists).
#[derive(Debug, Clone)]
pub struct Persister {
    path: Option<PathBuf>,
}

impl Persister {
    /// Persists into `dir/state.json` (`dir` is created), or nowhere.
    ///
    /// Errors: `dir` cannot be created.
    pub fn new(dir: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow::anyhow!("state directory {}: {e}", d.display()))?;
        }
        Ok(Self {
            path: dir.map(|d| d.join(STATE_FILE)),
        })
    }

    /// The state file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reads the state file: its settings, or the defaults when there is none or it
    /// is not valid (logged, and the bad file kept beside as `state.json.bad`).
    pub fn load(&self) -> Settings {
        let Some(path) = &self.path else {
            return Settings::default();
        };
        let bytes = match read_capped(path, MAX_STATE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Settings::default(),
            Err(e) => {
                tracing::warn!("state file {}: {e}; starting with defaults", path.display());
                return Settings::default();
            }
        };
        let parsed =
            syncstream_protocol::messages::parse::<Settings>(&path.display().to_string(), &bytes)
                .map_err(|e| e.reason)
                .and_then(|s| s.check().map(|()| s));
        match parsed {
            Ok(s) => s,
            Err(e) => {
                let bad = path.with_extension("json.bad");
                tracing::warn!(
                    "state file {} is not valid ({e}); starting with defaults, the file is kept as {}",
                    path.display(),
                    bad.display()
                );
                let _ = std::fs::rename(path, &bad);
                Settings::default()
            }
        }
    }

    /// Writes `settings` atomically. Errors: the file cannot be written (the old one
    /// is then intact).
    pub fn save(&self, settings: &Settings) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut json = serde_json::to_vec_pretty(settings)?;
        json.push(b'\n');
        write_atomic(path, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::state::{GroupSettings, DEFAULT_GROUP};

    #[test]
    fn settings_survive_a_round_trip_and_bad_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persister::new(Some(dir.path())).unwrap();
        assert_eq!(p.load(), Settings::default());
        let mut s = Settings::default();
        s.groups.insert(
            "up".into(),
            GroupSettings {
                stream: "radio".into(),
                volume: 0.5,
                muted: true,
            },
        );
        s.membership.insert("tv".into(), "up".into());
        p.save(&s).unwrap();
        assert_eq!(p.load(), s);
        std::fs::write(
            dir.path().join(STATE_FILE),
            b"{\"version\":1,\"groups\":{}}",
        )
        .unwrap();
        let loaded = p.load();
        assert!(loaded.groups.contains_key(DEFAULT_GROUP));
        assert!(dir.path().join("state.json.bad").exists());
        std::fs::write(dir.path().join(STATE_FILE), b"\xff not json").unwrap();
        assert_eq!(p.load(), Settings::default());
    }
}
