//! The sync controller's state across restarts: `controller.json` in the
//! transmitter's state folder, every locked device's offset and rate
//! ([`crate::controller::PersistedState`]). Loaded at start (a missing file is a first
//! start; an unreadable or malformed one is logged and ignored), written atomically at
//! most every [`SAVE_EVERY`] when it changed, and the offsets are published retained
//! again each time the controller (re)connects to the broker, so a broker that lost
//! its retained messages (restarted without persistence) has them back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::controller::{PersistedState, SyncController};

/// The file's name in the state folder.
pub const FILE_NAME: &str = "controller.json";
/// Largest file read, bytes (256 devices take about 25 kB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// How often the state is written when it changed.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// Reads `dir/controller.json`; `None` when it is missing or cannot be used (logged).
pub fn load(dir: &Path) -> Option<PersistedState> {
    let path = dir.join(FILE_NAME);
    let bytes = match syncstream_shared::fsutil::read_capped(&path, MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(
                "cannot read {}: {e}; the controller starts afresh",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(
                "{} is not a controller state ({e}); the controller starts afresh",
                path.display()
            );
            None
        }
    }
}

/// Restores `controller` from `dir` if an earlier run kept something there.
pub fn restore(controller: &Mutex<SyncController>, dir: &Path) {
    if let Some(state) = load(dir) {
        let n = lock(controller).restore(&state);
        info!(
            "controller: {n} devices restored from {}",
            dir.join(FILE_NAME).display()
        );
    }
}

/// Writes the controller's state to `dir` every [`SAVE_EVERY`] when it changed; runs
/// forever.
pub async fn keep(controller: Arc<Mutex<SyncController>>, dir: PathBuf) {
    let path = dir.join(FILE_NAME);
    let mut last: Option<PersistedState> = None;
    let mut tick = tokio::time::interval(SAVE_EVERY);
    loop {
        tick.tick().await;
        let state = lock(&controller).persisted();
        if last.as_ref() == Some(&state) {
            continue;
        }
        let Ok(bytes) = serde_json::to_vec_pretty(&state) else {
            continue;
        };
        let p = path.clone();
        match tokio::task::spawn_blocking(move || {
            syncstream_shared::fsutil::write_atomic(&p, &bytes)
        })
        .await
        {
            Ok(Ok(())) => last = Some(state),
            Ok(Err(e)) => warn!("cannot keep the controller's state: {e:#}"),
            Err(e) => warn!("cannot keep the controller's state: {e}"),
        }
    }
}

fn lock(c: &Mutex<SyncController>) -> std::sync::MutexGuard<'_, SyncController> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{ControllerConfig, Decision};
    use syncstream_protocol::messages::DriftReport;

    #[test]
    fn a_locked_device_survives_a_restart_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = SyncController::new(ControllerConfig::default());
        let r = DriftReport {
            device: "tv".into(),
            drift_ms: Some(42.0),
            confidence: 0.995,
            ts_us: 5_000_000,
            applied_offset_ms: 70.0,
            ..Default::default()
        };
        assert!(matches!(c.on_report(&r, r.ts_us), Decision::Publish(_)));
        let bytes = serde_json::to_vec(&c.persisted()).unwrap();
        std::fs::write(dir.path().join(FILE_NAME), bytes).unwrap();
        let restarted = Mutex::new(SyncController::new(ControllerConfig::default()));
        restore(&restarted, dir.path());
        let offsets = restarted.lock().unwrap().republish(6_000_000);
        assert_eq!(offsets.len(), 1);
        assert!((offsets[0].offset_ms - 112.0).abs() < 1e-9, "{offsets:?}");
        // Malformed and absurd contents start afresh.
        for bad in [&b"{not json"[..], br#"{"devices":{"a/b":{"offset_ms":1,"rate_ms_per_s":0,"ref_us":0},"x":{"offset_ms":1e300,"rate_ms_per_s":0,"ref_us":0}}}"#] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            let fresh = Mutex::new(SyncController::new(ControllerConfig::default()));
            restore(&fresh, dir.path());
            assert!(fresh.lock().unwrap().is_empty());
        }
    }
}
