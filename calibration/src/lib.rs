//! SyncStream acoustic calibration engine.
//!
//! A receiver plays a test signal through its real output path and records its own
//! speaker with its microphone; this crate turns the recording into the device's output
//! latency and writes it into the device's JSON profile.
//!
//! - [`signals`]: exponential sine sweep and maximum-length sequence, and their
//!   deconvolution into an impulse response ([`TestSignal`]).
//! - [`orthogonal`]: a set of mutually orthogonal signals to calibrate N devices in one
//!   room at once.
//! - [`onset`]: direct-path onset of an impulse response, with sub-sample accuracy.
//! - [`latency`]: the measurement, [`latency::measure`]: onset − acoustic path − alignment.
//! - [`profile_update`]: writes a measurement into a profile (atomically).
//! - [`run`]: the outcome of a calibration run, per device.
//! - `report` (feature `plots`): plots and a JSON summary per calibration run.
//! - `live` (feature `live`): `syncstream calibrate --mqtt`, which calibrates the
//!   receivers of a running system over MQTT.
//!
//! Receivers use the signals and the measurement only, so they build this crate
//! without either feature (no plotting library, no MQTT client of its own). Playing
//! the signals in the virtual room is the simulator's (`syncstream-sim`).
//!
//! Units: time in ms (`*_ms`) or samples at 48 kHz (`*_samples`), levels in dBFS,
//! distances in m. See `docs/calibration.md` for the method and measured accuracy.

pub mod latency;
#[cfg(feature = "live")]
pub mod live;
pub mod onset;
pub mod orthogonal;
pub mod profile_update;
#[cfg(feature = "plots")]
pub mod report;
pub mod run;
pub mod signals;

mod fft;

pub use latency::{analyse, measure, ImpulseAnalysis, LatencyMeasurement};
pub use signals::{MlsParams, SignalKind, SignalParams, SweepParams, TestSignal, SAMPLE_RATE};

use syncstream_shared::profile::ProfileError;

/// Everything that can go wrong in a calibration; every message says what and why.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// A parameter is out of range; the message names it.
    #[error("invalid calibration parameter: {0}")]
    InvalidParameter(String),
    /// The recording does not hold enough of the test signal.
    #[error("recording too short: need at least {needed} samples, got {got}")]
    RecordingTooShort {
        /// Samples needed.
        needed: usize,
        /// Samples given.
        got: usize,
    },
    /// No test signal in the recording (silence, noise or unrelated sound).
    #[error(
        "no test signal found in the recording: strongest peak {peak_to_noise_db:.1} dB above \
         the noise floor, at least {required_db:.1} dB needed (is the speaker on and the \
         microphone connected?)"
    )]
    NoSignal {
        /// Strongest peak of the impulse response over its noise floor, dB.
        peak_to_noise_db: f64,
        /// Threshold, dB.
        required_db: f64,
    },
    /// The measurement came out of the range a device can have.
    #[error("implausible measurement: {0}")]
    Implausible(String),
    /// A profile could not be read, parsed or written (it is left untouched).
    #[error("{0} (profile left untouched)")]
    Profile(#[from] ProfileError),
    /// The profile file is marked read-only.
    #[error("profile {path} is read-only; not updated (make it writable to calibrate it)")]
    ReadOnlyProfile {
        /// File.
        path: String,
    },
    /// A report file could not be written.
    #[error("cannot write calibration report {path}: {reason}")]
    Report {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// The virtual room refused a configuration or an audio device.
    #[error("virtual room: {0}")]
    Room(String),
}
