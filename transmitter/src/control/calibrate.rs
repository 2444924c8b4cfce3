//! Calibration started from the control API (`POST /api/v1/calibrate`): runs the live
//! calibrator ([`syncstream_calibration::live`]) in the background, one run at a time,
//! and keeps each device's progress (`pending` → `measuring` → `done` or `failed`, as
//! the test-tone commands and the receivers' answers pass on MQTT) and results
//! (latency, uncertainty, confidence, the impulse response around the direct sound)
//! for the API and the dashboard.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use syncstream_protocol::messages::CalibrationResult;

/// A calibration request.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CalibrateRequest {
    /// Devices to calibrate (default: every online device).
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// All at once with orthogonal MLS sequences.
    #[serde(default)]
    pub simultaneous: bool,
    /// `sweep` or `mls` (default: sweep, or mls when simultaneous).
    #[serde(default)]
    pub signal: Option<String>,
}

/// One device's progress.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceProgress {
    /// `pending`, `measuring`, `done` or `failed`.
    pub state: String,
    /// Measured latency, ms.
    pub latency_ms: Option<f64>,
    /// Its 1 σ uncertainty, ms.
    pub uncertainty_ms: Option<f64>,
    /// Confidence, 0..=1.
    pub confidence: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Impulse response from 10 ms before to 60 ms after the direct sound (48 kHz).
    pub ir: Option<Vec<f32>>,
    /// Delay of `ir[0]` after the signal's start, samples.
    pub ir_origin_samples: Option<f64>,
}

/// The calibration state shown on `GET /api/v1/calibrate` and the WebSocket.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Calibration {
    /// A run is going on.
    pub running: bool,
    /// The run's devices.
    pub devices: BTreeMap<String, DeviceProgress>,
    /// The finished run's summary (`syncstream calibrate`'s JSON), or its error.
    pub result: Option<Value>,
    /// Why the run failed as a whole.
    pub error: Option<String>,
}

impl Calibration {
    /// A run on `devices` starts.
    pub fn start(&mut self, devices: &[String]) {
        self.running = true;
        self.result = None;
        self.error = None;
        self.devices = devices
            .iter()
            .map(|d| {
                (
                    d.clone(),
                    DeviceProgress {
                        state: "pending".into(),
                        latency_ms: None,
                        uncertainty_ms: None,
                        confidence: None,
                        error: None,
                        ir: None,
                        ir_origin_samples: None,
                    },
                )
            })
            .collect();
    }

    /// A test tone was sent to `device`. Returns whether anything changed.
    pub fn on_test_tone(&mut self, device: &str) -> bool {
        match self.devices.get_mut(device) {
            Some(p) if self.running && p.state == "pending" => {
                p.state = "measuring".into();
                true
            }
            _ => false,
        }
    }

    /// A receiver answered. Returns whether anything changed.
    pub fn on_result(&mut self, r: &CalibrationResult) -> bool {
        let Some(p) = self.devices.get_mut(&r.device) else {
            return false;
        };
        if !self.running {
            return false;
        }
        p.state = if r.error.is_some() { "failed" } else { "done" }.into();
        p.latency_ms = r.latency_ms;
        p.uncertainty_ms = r.uncertainty_ms;
        p.confidence = r.confidence;
        p.error = r.error.clone();
        p.ir = r.ir.clone().map(|mut v| {
            v.truncate(MAX_IR_SAMPLES);
            v
        });
        p.ir_origin_samples = r.ir_origin_samples;
        true
    }

    /// The run ended with `result` (the run's JSON) or an error.
    pub fn finish(&mut self, result: Result<Value, String>) {
        self.running = false;
        match result {
            Ok(v) => self.result = Some(v),
            Err(e) => self.error = Some(e),
        }
        for p in self.devices.values_mut() {
            if p.state == "pending" || p.state == "measuring" {
                p.state = "failed".into();
                p.error.get_or_insert_with(|| "no answer".into());
            }
        }
    }
}

/// Longest impulse response kept per device, samples.
pub const MAX_IR_SAMPLES: usize = 4_800;
