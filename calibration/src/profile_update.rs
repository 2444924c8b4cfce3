//! Writes a latency measurement into a device's JSON profile.
//!
//! The profile is loaded with [`DeviceProfile::load`] (so a malformed profile is
//! reported with its file name and reason, and never overwritten), updated —
//! `base_latency_ms` and `calibration: {date, latency_ms, uncertainty_ms, confidence,
//! signal}` — and saved with [`DeviceProfile::save`], which writes a temporary file in
//! the same folder and renames it over the old one: the profile is always either the
//! old or the whole new file.
//!
//! A profile file whose permissions are read-only (`chmod a-w`) is refused before
//! anything is written, even when running as root (who could write it anyway): a
//! read-only profile is the user's way to pin a device's latency.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use syncstream_shared::profile::{CalibrationRecord, DeviceProfile};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::latency::LatencyMeasurement;
use crate::CalibrationError;

/// What an update changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileChange {
    /// The profile file.
    pub path: PathBuf,
    /// `base_latency_ms` before, ms.
    pub previous_base_latency_ms: f64,
    /// `base_latency_ms` after, ms.
    pub new_base_latency_ms: f64,
    /// new − previous, ms.
    pub change_ms: f64,
    /// The calibration record written.
    pub record: CalibrationRecord,
}

/// The current time as RFC 3339 UTC, e.g. `2026-03-01T12:34:56Z`.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Updates the profile at `path` with `m`, dated now. See [`apply_measurement_at`].
pub fn apply_measurement(
    path: &Path,
    m: &LatencyMeasurement,
) -> Result<ProfileChange, CalibrationError> {
    apply_measurement_at(path, m, &now_rfc3339())
}

/// Updates the profile at `path` with `m`, dated `date` (RFC 3339 UTC).
///
/// Errors (the file is left as it was in every case): the profile cannot be read or
/// does not parse ([`CalibrationError::Profile`]), it is marked read-only
/// ([`CalibrationError::ReadOnlyProfile`]), the measurement is not usable (non-finite,
/// outside 0..=2000 ms, confidence 0), or the atomic write fails.
pub fn apply_measurement_at(
    path: &Path,
    m: &LatencyMeasurement,
    date: &str,
) -> Result<ProfileChange, CalibrationError> {
    apply_record(
        path,
        CalibrationRecord {
            date: date.to_string(),
            latency_ms: m.latency_ms,
            uncertainty_ms: m.uncertainty_ms,
            confidence: m.confidence,
            signal: m.signal.as_str().to_string(),
        },
    )
}

/// Sets the profile at `path`'s `base_latency_ms` to `record.latency_ms` and its
/// `calibration` to `record` (whatever produced it: a test signal, or `"history"` for
/// the sync controller's long-term offset), atomically.
///
/// Errors (the file is left as it was in every case): as [`apply_measurement_at`].
pub fn apply_record(
    path: &Path,
    record: CalibrationRecord,
) -> Result<ProfileChange, CalibrationError> {
    let latency_ms = record.latency_ms;
    if !(latency_ms.is_finite() && (0.0..=2000.0).contains(&latency_ms)) {
        return Err(CalibrationError::Implausible(format!(
            "measured latency {latency_ms} ms is outside 0..=2000 ms; profile {} not updated",
            path.display()
        )));
    }
    if !(record.confidence.is_finite() && record.confidence > 0.0) {
        return Err(CalibrationError::Implausible(format!(
            "measurement has no confidence; profile {} not updated",
            path.display()
        )));
    }
    let mut profile = DeviceProfile::load(path)?;
    let meta = std::fs::metadata(path).map_err(|e| {
        CalibrationError::Profile(syncstream_shared::profile::ProfileError::Read {
            path: path.display().to_string(),
            error: e,
        })
    })?;
    if meta.permissions().readonly() {
        return Err(CalibrationError::ReadOnlyProfile {
            path: path.display().to_string(),
        });
    }
    let previous = profile.base_latency_ms;
    profile.base_latency_ms = latency_ms;
    profile.calibration = Some(record.clone());
    profile.save(path)?;
    Ok(ProfileChange {
        path: path.to_path_buf(),
        previous_base_latency_ms: previous,
        new_base_latency_ms: latency_ms,
        change_ms: latency_ms - previous,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::SignalKind;

    fn meas(latency_ms: f64) -> LatencyMeasurement {
        LatencyMeasurement {
            latency_ms,
            uncertainty_ms: 0.01,
            confidence: 0.9,
            onset_ms: latency_ms + 0.87,
            acoustic_delay_ms: 0.87,
            peak_to_noise_db: 45.0,
            signal: SignalKind::Sweep,
            periods: 1,
        }
    }

    const TV: &str = r#"{"type":"hdmi","target":"TV","base_latency_ms":70,"mic_distance_m":0.5}"#;

    #[test]
    fn writes_latency_and_record_and_returns_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tv.json");
        std::fs::write(&path, TV).unwrap();
        let c = apply_measurement_at(&path, &meas(83.25), "2026-01-02T03:04:05Z").unwrap();
        assert_eq!(c.previous_base_latency_ms, 70.0);
        assert_eq!(c.new_base_latency_ms, 83.25);
        assert!((c.change_ms - 13.25).abs() < 1e-12);
        let p = DeviceProfile::load(&path).unwrap();
        assert_eq!(p.base_latency_ms, 83.25);
        assert_eq!(p.mic_distance_m, 0.5);
        assert_eq!(p.target, "TV");
        let r = p.calibration.unwrap();
        assert_eq!(r.date, "2026-01-02T03:04:05Z");
        assert_eq!(r.signal, "sweep");
        assert_eq!((r.uncertainty_ms, r.confidence), (0.01, 0.9));
        // Only the profile is in the folder: no temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn now_is_rfc3339_utc() {
        let d = now_rfc3339();
        // YYYY-MM-DDTHH:MM:SSZ
        let b = d.as_bytes();
        assert_eq!(b.len(), 20, "{d}");
        assert!(
            b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':',
            "{d}"
        );
        assert!(d.ends_with('Z'), "{d}");
    }

    #[test]
    fn a_malformed_profile_is_reported_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        let text = r#"{"type":"hdmi","base_latency_ms":"seventy"}"#;
        std::fs::write(&path, text).unwrap();
        let e = apply_measurement(&path, &meas(80.0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.json") && e.contains("base_latency_ms"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_read_only_profile_is_refused_and_left_untouched() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tv.json");
        std::fs::write(&path, TV).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let e = apply_measurement(&path, &meas(80.0)).unwrap_err();
        assert!(matches!(e, CalibrationError::ReadOnlyProfile { .. }), "{e}");
        assert!(e.to_string().contains("tv.json"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), TV);
    }

    #[test]
    fn an_unwritable_location_is_a_clear_error() {
        // Tests run as root, which ignores permission bits, so an unwritable place is
        // made with a path whose parent is a regular file (ENOTDIR).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let path = file.join("tv.json");
        let e = apply_measurement(&path, &meas(80.0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not-a-dir/tv.json") && e.contains("untouched"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn unusable_measurements_do_not_touch_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tv.json");
        std::fs::write(&path, TV).unwrap();
        for m in [
            meas(f64::NAN),
            meas(-3.0),
            meas(5000.0),
            LatencyMeasurement {
                confidence: 0.0,
                ..meas(80.0)
            },
        ] {
            assert!(apply_measurement(&path, &m).is_err());
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), TV);
    }
}
