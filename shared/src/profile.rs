//! Per-device JSON profiles (`profiles/*.json`).
//!
//! A profile says what sits behind a receiver's output and where its microphone is:
//! `{"type":"chromecast","target":"NestAudio-LR","base_latency_ms":300}`. Every field
//! is documented in `profiles/README.md`.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Kind of output behind the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// 3.5 mm jack, I²S DAC or USB DAC driving an analog speaker.
    #[default]
    Analog,
    /// A TV or AV receiver behind HDMI.
    Hdmi,
    /// A Google Cast target.
    Chromecast,
    /// An AirPlay target.
    Airplay,
    /// A Bluetooth (A2DP) speaker.
    Bluetooth,
}

impl OutputType {
    /// The lowercase name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputType::Analog => "analog",
            OutputType::Hdmi => "hdmi",
            OutputType::Chromecast => "chromecast",
            OutputType::Airplay => "airplay",
            OutputType::Bluetooth => "bluetooth",
        }
    }
}

/// The result of the last acoustic calibration of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// When, RFC 3339 (UTC).
    pub date: String,
    /// Measured output latency, ms.
    pub latency_ms: f64,
    /// Uncertainty of the measurement (1 σ), ms.
    #[serde(default)]
    pub uncertainty_ms: f64,
    /// Confidence 0..=1.
    pub confidence: f64,
    /// Test signal used: `sweep`, `mls` or `history` (learned from the sync loop).
    pub signal: String,
}

/// A device profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Output type.
    #[serde(rename = "type")]
    pub output_type: OutputType,
    /// Name of the output target (e.g. the Cast device's name), free text.
    #[serde(default)]
    pub target: String,
    /// Expected output latency: time from the receiver handing a sample to its
    /// output until it leaves the speaker, ms (0 to 9950; a playout delay of P ms holds
    /// at most P − 50, see [`crate::limits`]).
    pub base_latency_ms: f64,
    /// Distance from the speaker to the receiver's microphone, m (0..=20). Its
    /// acoustic delay (distance / 343 m/s) is taken out of every drift measurement.
    #[serde(default = "default_mic_distance_m")]
    pub mic_distance_m: f64,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The room or area the device is in (`Kitchen`), free text; Home Assistant
    /// suggests it as the device's area.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub area: String,
    /// Last calibration, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationRecord>,
}

fn default_mic_distance_m() -> f64 {
    0.3
}

/// Longest `area`, characters.
pub const MAX_AREA_CHARS: usize = 64;

/// Largest profile file read, bytes (a profile is a few hundred).
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024;

/// Speed of sound used everywhere, m/s (dry air at 20 °C).
pub const SPEED_OF_SOUND_M_S: f64 = 343.0;

/// A profile that could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read profile {path}: {error}")]
    Read {
        /// File.
        path: String,
        /// Cause (a missing file, or one over [`MAX_PROFILE_BYTES`]).
        error: std::io::Error,
    },
    /// The file is not a valid profile.
    #[error("invalid profile {path}: {reason}")]
    Invalid {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file could not be written.
    #[error("cannot write profile {path}: {reason}")]
    Write {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

impl DeviceProfile {
    /// A profile with defaults for `output_type` (typical latencies, see `profiles/README.md`).
    pub fn default_for(output_type: OutputType) -> Self {
        let base_latency_ms = match output_type {
            OutputType::Analog => 5.0,
            OutputType::Hdmi => 70.0,
            OutputType::Chromecast => 300.0,
            OutputType::Airplay => 250.0,
            OutputType::Bluetooth => 200.0,
        };
        Self {
            output_type,
            target: String::new(),
            base_latency_ms,
            mic_distance_m: default_mic_distance_m(),
            description: String::new(),
            area: String::new(),
            calibration: None,
        }
    }

    /// Acoustic delay from speaker to microphone, ms.
    pub fn mic_delay_ms(&self) -> f64 {
        self.mic_distance_m / SPEED_OF_SOUND_M_S * 1000.0
    }

    /// Checks ranges. Errors name the field and the reason.
    pub fn validate(&self) -> Result<(), String> {
        let max = crate::limits::OffsetLimits::widest().max_ms;
        if !self.base_latency_ms.is_finite() || !(0.0..=max).contains(&self.base_latency_ms) {
            return Err(format!(
                "base_latency_ms must be between 0 and {max} ms, got {}",
                self.base_latency_ms
            ));
        }
        if !self.mic_distance_m.is_finite() || !(0.0..=20.0).contains(&self.mic_distance_m) {
            return Err(format!(
                "mic_distance_m must be between 0 and 20 m, got {}",
                self.mic_distance_m
            ));
        }
        if self.area.chars().count() > MAX_AREA_CHARS {
            return Err(format!("area must be at most {MAX_AREA_CHARS} characters"));
        }
        Ok(())
    }

    /// Parses and validates a profile from JSON text; `name` is used in errors.
    pub fn from_json(name: &str, text: &[u8]) -> Result<Self, ProfileError> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let p: DeviceProfile =
            serde_path_to_error::deserialize(de).map_err(|e| ProfileError::Invalid {
                path: name.to_string(),
                reason: if e.path().to_string() == "." {
                    e.inner().to_string()
                } else {
                    format!("{}: {}", e.path(), e.inner())
                },
            })?;
        p.validate().map_err(|reason| ProfileError::Invalid {
            path: name.to_string(),
            reason,
        })?;
        Ok(p)
    }

    /// Loads a profile from a JSON file. Errors name the file and the reason.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = crate::fsutil::read_capped(path, MAX_PROFILE_BYTES).map_err(|error| {
            ProfileError::Read {
                path: path.display().to_string(),
                error,
            }
        })?;
        Self::from_json(&path.display().to_string(), &text)
    }

    /// Saves the profile as pretty JSON, atomically (see [`crate::fsutil::write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| ProfileError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        crate::fsutil::write_atomic(path, &text).map_err(|e| ProfileError::Write {
            path: path.display().to_string(),
            reason: format!("{e:#}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses() {
        let p = DeviceProfile::from_json(
            "x",
            br#"{"type":"chromecast","target":"NestAudio-LR","base_latency_ms":300}"#,
        )
        .unwrap();
        assert_eq!(p.output_type, OutputType::Chromecast);
        assert_eq!(p.base_latency_ms, 300.0);
        assert_eq!(p.mic_distance_m, 0.3);
    }

    #[test]
    fn malformed_profiles_name_file_and_reason() {
        for (text, needle) in [
            (&br#"{"type":"toaster","base_latency_ms":3}"#[..], "toaster"),
            (br#"{"type":"hdmi"}"#, "base_latency_ms"),
            (
                br#"{"type":"hdmi","base_latency_ms":-4}"#,
                "between 0 and 9950",
            ),
            (
                br#"{"type":"hdmi","base_latency_ms":4,"colour":1}"#,
                "colour",
            ),
            (b"", "EOF"),
        ] {
            let e = DeviceProfile::from_json("profiles/bad.json", text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("profiles/bad.json") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tv.json");
        let p = DeviceProfile::default_for(OutputType::Hdmi);
        p.save(&path).unwrap();
        assert_eq!(DeviceProfile::load(&path).unwrap(), p);
        assert!(DeviceProfile::load(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string()
            .contains("missing.json"));
    }
}
