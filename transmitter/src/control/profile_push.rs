//! The config push: every device's profile from the `--profiles-dir` folder
//! (`<device>.json`, which calibrations and the offset history rewrite), published
//! retained on `syncstream/config` as one [`ConfigPush`]. The folder is read again
//! every [`SCAN_INTERVAL_TICKS`] s, so a calibration or history update reaches the
//! receivers within seconds; the push is published only when it changed.
//!
//! Bounded: at most [`MAX_PROFILES`] files, each at most
//! [`syncstream_shared::profile::MAX_PROFILE_BYTES`]; a file that does not parse, or
//! whose name is not a device name, is left out with one warning (repeated only when
//! the reason changes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use syncstream_protocol::messages::ConfigPush;
use syncstream_shared::names::is_valid_device_name;
use syncstream_shared::profile::DeviceProfile;
use tracing::warn;

/// The folder is read every this many control-plane ticks (1 s each).
pub const SCAN_INTERVAL_TICKS: u64 = 2;
/// Most profiles pushed (the whole push stays well under the MQTT payload limits:
/// a profile is a few hundred bytes).
pub const MAX_PROFILES: usize = 256;

/// Reads the profiles folder and says when the push changed.
#[derive(Debug)]
pub struct ProfilePush {
    dir: PathBuf,
    last: Option<ConfigPush>,
    /// The last warning per file, so it is not repeated every scan.
    warned: BTreeMap<PathBuf, String>,
}

impl ProfilePush {
    /// Pushes the profiles of `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            last: None,
            warned: BTreeMap::new(),
        }
    }

    /// The push as last read (empty before the first scan).
    pub fn current(&self) -> Option<&ConfigPush> {
        self.last.as_ref()
    }

    /// Reads the folder; returns the push when it differs from the last one read
    /// (always on the first scan). A folder that cannot be read is logged and changes
    /// nothing.
    pub fn scan(&mut self) -> Option<&ConfigPush> {
        let push = match read_profiles(&self.dir, &mut self.warned) {
            Ok(p) => p,
            Err(e) => {
                let key = self.dir.clone();
                if self.warned.get(&key) != Some(&e) {
                    warn!("{e}");
                    self.warned.insert(key, e);
                }
                return None;
            }
        };
        if self.last.as_ref() == Some(&push) {
            return None;
        }
        self.last = Some(push);
        self.last.as_ref()
    }
}

fn read_profiles(dir: &Path, warned: &mut BTreeMap<PathBuf, String>) -> Result<ConfigPush, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("profiles folder {}: {e}; nothing pushed", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut push = ConfigPush::default();
    for path in paths {
        let Some(device) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if !is_valid_device_name(device) {
            continue; // README.json, examples: not a device
        }
        if push.devices.len() >= MAX_PROFILES {
            let msg = format!(
                "profiles folder {}: more than {MAX_PROFILES} profiles; the rest are not pushed",
                dir.display()
            );
            if warned.get(dir) != Some(&msg) {
                warn!("{msg}");
                warned.insert(dir.to_path_buf(), msg);
            }
            break;
        }
        match DeviceProfile::load(&path) {
            Ok(p) => {
                warned.remove(&path);
                push.devices.insert(device.to_string(), p);
            }
            Err(e) => {
                let msg = format!("{e}; not pushed on syncstream/config");
                if warned.get(&path) != Some(&msg) {
                    warn!("{msg}");
                    warned.insert(path, msg);
                }
            }
        }
    }
    Ok(push)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_shared::profile::OutputType;

    #[test]
    fn pushes_the_folders_profiles_and_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut tv = DeviceProfile::default_for(OutputType::Hdmi);
        tv.area = "Living room".into();
        tv.save(&dir.path().join("tv.json")).unwrap();
        std::fs::write(dir.path().join("broken.json"), b"{ not json").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.path().join(".hidden.json"), b"{}").unwrap();
        let mut p = ProfilePush::new(dir.path().to_path_buf());
        let push = p.scan().expect("first scan publishes").clone();
        assert_eq!(push.devices.len(), 1);
        assert_eq!(push.devices["tv"].area, "Living room");
        assert!(p.scan().is_none(), "unchanged: nothing to publish");
        tv.base_latency_ms = 81.5;
        tv.save(&dir.path().join("tv.json")).unwrap();
        let push = p.scan().expect("a changed profile is pushed");
        assert_eq!(push.devices["tv"].base_latency_ms, 81.5);
    }

    #[test]
    fn a_missing_folder_changes_nothing() {
        let mut p = ProfilePush::new(PathBuf::from("/nonexistent/syncstream-profiles"));
        assert!(p.scan().is_none());
        assert!(p.current().is_none());
    }
}
