//! Test signals played through a device's output path, and their deconvolution into
//! an impulse response.
//!
//! Two families, both at [`SAMPLE_RATE`] (48 kHz), mono:
//! - [`sweep`]: an exponential sine sweep (Farina, "Simultaneous measurement of impulse
//!   response and distortion with a swept-sine technique", AES 108th Convention, 2000),
//!   deconvolved by regularised spectral division;
//! - [`mls`]: a maximum-length sequence played for several periods (Rife & Vanderkooy,
//!   "Transfer-function measurement with maximum-length sequences", JAES 37(6), 1989),
//!   deconvolved by circular cross-correlation over the steady-state periods.
//!
//! A [`TestSignal`] keeps what was played (kind, parameters, samples) and turns a
//! recording into an impulse response with [`TestSignal::impulse_response`].
//!
//! **Time convention.** Impulse-response index `n` is a delay of `n` samples after the
//! signal's sample 0 entered the output path, provided the recording's sample 0 was
//! taken at that same instant. [`crate::latency`] handles recordings that start at
//! another time.

use serde::{Deserialize, Serialize};

use crate::CalibrationError;

pub mod mls;
pub mod sweep;

pub use mls::MlsParams;
pub use sweep::SweepParams;

/// Sample rate of every test signal and recording, Hz (the stream rate).
pub const SAMPLE_RATE: u32 = syncstream_shared::time::STREAM_SAMPLE_RATE;

/// The family of a test signal; serialised as `"sweep"` or `"mls"` (the strings stored
/// in a profile's `calibration.signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// Exponential sine sweep.
    Sweep,
    /// Maximum-length sequence.
    Mls,
}

impl SignalKind {
    /// `"sweep"` or `"mls"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Sweep => "sweep",
            SignalKind::Mls => "mls",
        }
    }
}

impl std::str::FromStr for SignalKind {
    type Err = CalibrationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sweep" => Ok(SignalKind::Sweep),
            "mls" => Ok(SignalKind::Mls),
            other => Err(CalibrationError::InvalidParameter(format!(
                "unknown test signal '{other}' (expected 'sweep' or 'mls')"
            ))),
        }
    }
}

/// Parameters of a test signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalParams {
    /// Exponential sine sweep.
    Sweep(SweepParams),
    /// Maximum-length sequence.
    Mls(MlsParams),
}

/// What is deconvolved against: kept beside the samples so a recording can be turned
/// into an impulse response without regenerating the signal.
#[derive(Debug, Clone, PartialEq)]
enum Reference {
    /// The whole played sweep (deconvolution by spectral division).
    Sweep,
    /// One period of the ±1 sequence and its amplitude.
    Mls { period: Vec<f32>, amplitude: f64 },
}

/// A test signal: what was played and how to deconvolve a recording of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSignal {
    /// Family.
    pub kind: SignalKind,
    /// Parameters it was made from.
    pub params: SignalParams,
    /// The samples to play, mono, at [`SAMPLE_RATE`], full scale ±1.
    pub samples: Vec<f32>,
    reference: Reference,
}

impl TestSignal {
    /// Builds a test signal from parameters. Errors name the bad parameter.
    pub fn new(params: SignalParams) -> Result<Self, CalibrationError> {
        match params {
            SignalParams::Sweep(p) => sweep::generate(&p).map(|samples| Self {
                kind: SignalKind::Sweep,
                params: SignalParams::Sweep(p),
                samples,
                reference: Reference::Sweep,
            }),
            SignalParams::Mls(p) => {
                let (samples, period, amplitude) = mls::generate(&p)?;
                Ok(Self {
                    kind: SignalKind::Mls,
                    params: SignalParams::Mls(p),
                    samples,
                    reference: Reference::Mls { period, amplitude },
                })
            }
        }
    }

    /// The default exponential sweep ([`SweepParams::default`]).
    pub fn default_sweep() -> Self {
        // The defaults are valid, so this cannot fail; fall back to an empty signal
        // rather than panicking if they ever were not.
        Self::new(SignalParams::Sweep(SweepParams::default())).unwrap_or_else(|_| Self {
            kind: SignalKind::Sweep,
            params: SignalParams::Sweep(SweepParams::default()),
            samples: Vec::new(),
            reference: Reference::Sweep,
        })
    }

    /// The default signal of `kind`.
    pub fn default_for(kind: SignalKind) -> Result<Self, CalibrationError> {
        match kind {
            SignalKind::Sweep => Self::new(SignalParams::Sweep(SweepParams::default())),
            SignalKind::Mls => Self::new(SignalParams::Mls(MlsParams::default())),
        }
    }

    /// Duration of the played signal, ms.
    pub fn duration_ms(&self) -> f64 {
        self.samples.len() as f64 * 1000.0 / SAMPLE_RATE as f64
    }

    /// How many samples to record, from the signal's start, so that a device with an
    /// output latency up to `max_latency_ms` is measured: the signal plus the latency
    /// and 100 ms of room response for a sweep; an MLS is analysed on its steady-state
    /// periods only, so its own length suffices.
    pub fn recording_samples(&self, max_latency_ms: f64) -> usize {
        match self.kind {
            SignalKind::Sweep => {
                let extra_ms = max_latency_ms.clamp(0.0, 10_000.0) + 100.0;
                self.samples.len() + (extra_ms * SAMPLE_RATE as f64 / 1000.0).ceil() as usize
            }
            SignalKind::Mls => self.samples.len(),
        }
    }

    /// The longest output latency this signal can tell apart without ambiguity, ms:
    /// unbounded for a sweep (given a long enough recording); for an MLS one period,
    /// less the room's response (latencies are measured modulo the period).
    pub fn max_unambiguous_latency_ms(&self) -> f64 {
        match &self.reference {
            Reference::Sweep => f64::INFINITY,
            Reference::Mls { period, .. } => {
                period.len() as f64 * 1000.0 / SAMPLE_RATE as f64 - mls::ROOM_RESPONSE_MARGIN_MS
            }
        }
    }

    /// Impulse response of the path from the signal to `recording` (mono, 48 kHz),
    /// assuming the recording's sample 0 was taken when the signal's sample 0 entered
    /// the output path. Index `n` is a delay of `n` samples; values are path gains (a
    /// direct connection gives a peak of ≈1).
    ///
    /// For a sweep the result covers the delays whose whole response to the sweep is in
    /// the recording (`recording.len() − samples.len() + 1` samples); for an MLS one period
    /// (circular: delays are known modulo the period). A recording too short for the
    /// deconvolution gives an empty vector (use [`crate::latency::analyse`] for an
    /// error that says why).
    pub fn impulse_response(&self, recording: &[f32]) -> Vec<f32> {
        self.impulse_response_at(recording, 0)
            .map(|r| r.ir)
            .unwrap_or_default()
    }

    /// Like [`Self::impulse_response`] for a recording whose sample 0 was taken
    /// `offset` samples after the signal's sample 0 entered the output path (negative:
    /// before). The returned IR's index `n` is a delay of `n + ir_delay_origin`
    /// samples after the signal's start.
    pub(crate) fn impulse_response_at(
        &self,
        recording: &[f32],
        offset: i64,
    ) -> Result<Deconvolved, CalibrationError> {
        match &self.reference {
            Reference::Sweep => {
                let SignalParams::Sweep(p) = &self.params else {
                    return Err(CalibrationError::InvalidParameter(
                        "sweep signal without sweep parameters".into(),
                    ));
                };
                let ir = sweep::deconvolve(&self.samples, p, recording)?;
                Ok(Deconvolved {
                    ir,
                    delay_origin: offset,
                    periods: Vec::new(),
                })
            }
            Reference::Mls { period, amplitude } => {
                let SignalParams::Mls(p) = &self.params else {
                    return Err(CalibrationError::InvalidParameter(
                        "MLS signal without MLS parameters".into(),
                    ));
                };
                mls::deconvolve(period, *amplitude, p, recording, offset)
            }
        }
    }
}

/// An impulse response with its time origin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Deconvolved {
    /// Impulse response (circular for an MLS).
    pub ir: Vec<f32>,
    /// Delay, in samples after the signal's start, of `ir[0]`.
    pub delay_origin: i64,
    /// For an MLS, the impulse response of each analysed period on its own.
    pub periods: Vec<Vec<f32>>,
}

/// Linear gain for a level in dBFS (0 dBFS = full scale 1.0).
pub fn db_to_gain(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Applies raised-cosine (Hann-shaped) fades: the first `fade_in` samples rise from 0
/// to 1 as `0.5·(1 − cos(π·i/fade_in))`, the last `fade_out` fall symmetrically.
pub(crate) fn apply_fades(x: &mut [f32], fade_in: usize, fade_out: usize) {
    let n = x.len();
    let fade_in = fade_in.min(n);
    for (i, v) in x.iter_mut().take(fade_in).enumerate() {
        let g = 0.5 * (1.0 - (std::f64::consts::PI * i as f64 / fade_in as f64).cos());
        *v *= g as f32;
    }
    let fade_out = fade_out.min(n);
    for i in 0..fade_out {
        let g = 0.5 * (1.0 - (std::f64::consts::PI * i as f64 / fade_out as f64).cos());
        x[n - 1 - i] *= g as f32;
    }
}

/// Samples in `ms` milliseconds at [`SAMPLE_RATE`], rounded.
pub(crate) fn ms_to_samples(ms: f64) -> usize {
    (ms * SAMPLE_RATE as f64 / 1000.0).round().max(0.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fades_are_gentle_and_bounded() {
        let mut x = vec![1.0f32; 100];
        apply_fades(&mut x, 10, 20);
        assert_eq!(x[0], 0.0);
        assert_eq!(x[99], 0.0);
        assert!(x[..10].windows(2).all(|w| w[1] >= w[0]));
        assert!(x[80..].windows(2).all(|w| w[1] <= w[0]));
        assert!(x[10..80].iter().all(|&v| v == 1.0));
        // Fades longer than the signal do not panic.
        let mut y = vec![1.0f32; 3];
        apply_fades(&mut y, 10, 10);
    }

    #[test]
    fn kind_parses() {
        assert_eq!("mls".parse::<SignalKind>().unwrap(), SignalKind::Mls);
        assert!("noise"
            .parse::<SignalKind>()
            .unwrap_err()
            .to_string()
            .contains("noise"));
    }
}
