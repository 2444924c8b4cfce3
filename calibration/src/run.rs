//! The outcome of a calibration run (`syncstream calibrate`), as printed in JSON and
//! published on `syncstream/calibration/summary`: one [`DeviceOutcome`] per device.

use crate::profile_update::ProfileChange;
use serde::{Deserialize, Serialize};

/// One device's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeviceOutcome {
    /// Device name.
    pub device: String,
    /// Measured output latency, ms.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_ms: Option<f64>,
    /// 1 σ uncertainty of the measurement, ms.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uncertainty_ms: Option<f64>,
    /// Confidence of the measurement, 0..=1.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub confidence: Option<f64>,
    /// `sweep` or `mls`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signal: Option<String>,
    /// True latency, ms (simulated rooms only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub true_latency_ms: Option<f64>,
    /// Measured − true latency, ms (simulated rooms only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_ms: Option<f64>,
    /// The profile update, when a profile was written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub profile: Option<ProfileChange>,
    /// Why the device has no measurement, or why its profile was not updated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure: Option<String>,
}

impl DeviceOutcome {
    /// Whether the device was measured and, when a profile was to be written, it was.
    pub fn succeeded(&self) -> bool {
        self.latency_ms.is_some() && self.failure.is_none()
    }
}

/// The result of one `syncstream calibrate` run (printed as JSON, published on
/// `syncstream/calibration/summary` in live mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CalibrationRun {
    /// `scenario` or `mqtt`.
    pub mode: String,
    /// Run id sent with the test-tone commands (live mode).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub run_id: Option<String>,
    /// `sweep` or `mls`.
    pub signal: String,
    /// All devices at once (orthogonal MLS) or one after the other.
    pub simultaneous: bool,
    /// Room audio the calibration took, s (scenario mode).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub audio_s: Option<f64>,
    /// Wall-clock time the run took, s (live mode).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub elapsed_s: Option<f64>,
    /// Per device, in the order calibrated.
    pub devices: Vec<DeviceOutcome>,
    /// Largest |measured − true|, ms (scenario mode, over the measured devices).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_abs_error_ms: Option<f64>,
    /// Devices that succeeded.
    pub succeeded: usize,
    /// Devices that failed.
    pub failed: usize,
    /// Where the report (plots, summary.json) was written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub report_dir: Option<String>,
}

impl CalibrationRun {
    /// Fills `succeeded`, `failed` and `max_abs_error_ms` from `devices`.
    pub fn tally(&mut self) {
        self.succeeded = self.devices.iter().filter(|d| d.succeeded()).count();
        self.failed = self.devices.len() - self.succeeded;
        self.max_abs_error_ms = self
            .devices
            .iter()
            .filter_map(|d| d.error_ms.map(f64::abs))
            .reduce(f64::max);
    }
}

/// Longest output latency listened for when a device's profile says `base_latency_ms`,
/// ms: the base plus 500 ms, at most 2000 ms (profiles may be far off before the
/// first calibration; a sweep recording grows by this much).
pub fn listen_window_ms(base_latency_ms: f64) -> f64 {
    (base_latency_ms.max(0.0) + 500.0).min(2000.0)
}
