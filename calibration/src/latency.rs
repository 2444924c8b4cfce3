//! Output latency from a recording of a test signal.
//!
//! **Convention.** `recording_start_offset_samples` is when the recording's sample 0
//! was taken, in samples at 48 kHz after the instant the signal's sample 0 was handed
//! to the output path (its DAC time on the receiver's clock). With the usual set-up
//! (recording started at the same DAC/ADC time as the signal) it is 0; a recording
//! started 10 ms early has −480. Fractions are allowed. Then, with the direct-path
//! onset found at impulse-response delay `d` samples after the signal's start:
//!
//! ```text
//! latency_ms = d / 48 − mic_distance_m / 343 m/s × 1000
//! ```
//!
//! i.e. the time from handing sample 0 to the output until it leaves the speaker,
//! without the acoustic flight time to the microphone (`SPEED_OF_SOUND_M_S`). The
//! recording should start no later than the direct sound (`offset ≤ latency`), and
//! for a sweep last [`TestSignal::recording_samples`].
//!
//! **Uncertainty** (1 σ, ms) combines in quadrature: the noise propagated through the
//! sub-sample peak fit ([`crate::onset`]), for an MLS the spread of the onset over the
//! analysed periods divided by √periods, and a 0.1-sample (2 µs) floor for the
//! interpolation's own bias. **Confidence** (0..=1) grows with the direct path's
//! peak-to-noise ratio in the impulse response, from 0 at 20 dB to 1 at 40 dB; a
//! recording without the signal is an error, never a number.

use serde::{Deserialize, Serialize};
use syncstream_shared::profile::SPEED_OF_SOUND_M_S;

use crate::onset::{detect_onset, Onset, OnsetParams};
use crate::signals::{SignalKind, TestSignal, SAMPLE_RATE};
use crate::CalibrationError;

/// Floor of the position uncertainty, samples (bias of the parabolic fit).
const INTERPOLATION_FLOOR_SAMPLES: f64 = 0.1;

/// One latency measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyMeasurement {
    /// Output latency, ms: onset − acoustic delay.
    pub latency_ms: f64,
    /// 1 σ uncertainty of `latency_ms`, ms.
    pub uncertainty_ms: f64,
    /// 0..=1.
    pub confidence: f64,
    /// Arrival of the direct sound after the signal's start, ms.
    pub onset_ms: f64,
    /// Speaker-to-microphone flight time that was subtracted, ms.
    pub acoustic_delay_ms: f64,
    /// Direct-path peak over the impulse response's noise floor, dB.
    pub peak_to_noise_db: f64,
    /// Test signal used.
    pub signal: SignalKind,
    /// Periods averaged (MLS) or 1 (sweep).
    pub periods: usize,
}

/// A measurement with what it was made from, for reports and plots.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpulseAnalysis {
    /// The impulse response (circular for an MLS).
    pub ir: Vec<f32>,
    /// Delay of `ir[0]` after the signal's start, samples (fractional).
    pub ir_origin_samples: f64,
    /// The detected direct path (positions in `ir` indices).
    pub onset: Onset,
    /// The result.
    pub measurement: LatencyMeasurement,
}

/// Measures a device's output latency from `recording` (mono, 48 kHz) of `signal`
/// played through it, with the microphone `mic_distance_m` from the speaker. See the
/// module docs for the convention.
///
/// Errors: bad arguments, a recording too short, or no signal in it.
pub fn measure(
    signal: &TestSignal,
    recording: &[f32],
    recording_start_offset_samples: f64,
    mic_distance_m: f64,
) -> Result<LatencyMeasurement, CalibrationError> {
    analyse(
        signal,
        recording,
        recording_start_offset_samples,
        mic_distance_m,
        &OnsetParams::default(),
    )
    .map(|a| a.measurement)
}

/// [`measure`] with detector settings, returning the impulse response and onset too.
pub fn analyse(
    signal: &TestSignal,
    recording: &[f32],
    recording_start_offset_samples: f64,
    mic_distance_m: f64,
    params: &OnsetParams,
) -> Result<ImpulseAnalysis, CalibrationError> {
    let offset = recording_start_offset_samples;
    if !offset.is_finite() || offset.abs() > 1e9 {
        return Err(CalibrationError::InvalidParameter(format!(
            "recording_start_offset_samples must be finite, got {offset}"
        )));
    }
    if !(mic_distance_m.is_finite() && (0.0..=20.0).contains(&mic_distance_m)) {
        return Err(CalibrationError::InvalidParameter(format!(
            "mic_distance_m must be between 0 and 20 m, got {mic_distance_m}"
        )));
    }
    let whole = offset.round();
    let frac = offset - whole;
    let d = signal.impulse_response_at(recording, whole as i64)?;
    // Delays before the signal's start are impossible: do not search there.
    let search_from = (-d.delay_origin).max(0) as usize;
    let onset = detect_onset(&d.ir, search_from, params)?;
    let origin = d.delay_origin as f64 + frac;
    let fs = SAMPLE_RATE as f64;

    // Spread over periods (MLS): the onset of each period's response near the main one.
    let mut var = onset.position_sigma.powi(2) + INTERPOLATION_FLOOR_SAMPLES.powi(2);
    if d.periods.len() > 1 {
        let near = OnsetParams {
            relative_threshold_db: params.relative_threshold_db,
            min_peak_to_noise_db: 0.0,
            ..params.clone()
        };
        let from = onset.index.saturating_sub(8);
        let to = (onset.index + 9).min(d.ir.len());
        let pos: Vec<f64> = d
            .periods
            .iter()
            .filter_map(|p| {
                let mut w = vec![0.0f32; p.len()];
                w[from..to].copy_from_slice(&p[from..to]);
                detect_onset(&w, from, &near).ok().map(|o| o.position)
            })
            .collect();
        if pos.len() > 1 {
            let mean = pos.iter().sum::<f64>() / pos.len() as f64;
            let v = pos.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (pos.len() - 1) as f64;
            var += v / pos.len() as f64;
        }
    }
    let onset_ms = (onset.position + origin) / fs * 1000.0;
    let acoustic_delay_ms = mic_distance_m / SPEED_OF_SOUND_M_S * 1000.0;
    let latency_ms = onset_ms - acoustic_delay_ms;
    if latency_ms < -1.0 {
        return Err(CalibrationError::Implausible(format!(
            "direct sound {onset_ms:.3} ms after the signal's start is earlier than the \
             {acoustic_delay_ms:.3} ms acoustic path: check the recording alignment \
             (offset {offset} samples) and mic_distance_m"
        )));
    }
    let measurement = LatencyMeasurement {
        latency_ms,
        uncertainty_ms: var.sqrt() / fs * 1000.0,
        confidence: onset.confidence,
        onset_ms,
        acoustic_delay_ms,
        peak_to_noise_db: onset.peak_to_noise_db,
        signal: signal.kind,
        periods: d.periods.len().max(1),
    };
    Ok(ImpulseAnalysis {
        ir: d.ir,
        ir_origin_samples: origin,
        onset,
        measurement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{MlsParams, SignalParams};

    /// The signal delayed by `delay` samples (linear interpolation for fractions),
    /// scaled, in a recording of `len` samples.
    fn delayed(x: &[f32], delay: f64, g: f32, len: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; len];
        let d0 = delay.floor() as usize;
        let f = (delay - delay.floor()) as f32;
        for (i, v) in x.iter().enumerate() {
            if let Some(s) = y.get_mut(i + d0) {
                *s += g * v * (1.0 - f);
            }
            if let Some(s) = y.get_mut(i + d0 + 1) {
                *s += g * v * f;
            }
        }
        y
    }

    #[test]
    fn sweep_measures_latency_minus_the_acoustic_path() {
        let s = TestSignal::default_sweep();
        // 70 ms latency + 0.5 m → 1.4577 ms acoustic → onset 71.4577 ms = 3429.97 samples.
        let onset = (70.0 + 0.5 / 343.0 * 1000.0) * 48.0;
        let y = delayed(&s.samples, onset, 0.3, s.recording_samples(500.0));
        let m = measure(&s, &y, 0.0, 0.5).unwrap();
        assert!((m.latency_ms - 70.0).abs() < 0.01, "{m:?}");
        assert!(m.uncertainty_ms < 0.01 && m.confidence > 0.9, "{m:?}");
        // The same recording with 480 samples of silence in front and offset −480.
        let mut early = vec![0.0f32; 480];
        early.extend_from_slice(&y);
        let m2 = measure(&s, &early, -480.0, 0.5).unwrap();
        assert!((m2.latency_ms - 70.0).abs() < 0.01, "{m2:?}");
        // A fractional offset shifts the result by that fraction.
        let m3 = measure(&s, &y, 0.5, 0.5).unwrap();
        assert!((m3.latency_ms - (70.0 + 0.5 / 48.0)).abs() < 0.01, "{m3:?}");
    }

    #[test]
    fn mls_measures_latency_with_period_spread() {
        let s = TestSignal::new(SignalParams::Mls(MlsParams {
            order: 14,
            periods: 3,
            ..MlsParams::default()
        }))
        .unwrap();
        let onset = (8.0 + 0.3 / 343.0 * 1000.0) * 48.0;
        let y = delayed(&s.samples, onset, 0.5, s.recording_samples(0.0));
        let m = measure(&s, &y, 0.0, 0.3).unwrap();
        assert!((m.latency_ms - 8.0).abs() < 0.01, "{m:?}");
        assert_eq!(m.periods, 3);
        assert_eq!(m.signal, SignalKind::Mls);
    }

    #[test]
    fn silence_noise_and_bad_arguments_are_errors() {
        let s = TestSignal::default_sweep();
        let silent = vec![0.0f32; s.recording_samples(100.0)];
        assert!(matches!(
            measure(&s, &silent, 0.0, 0.3),
            Err(CalibrationError::NoSignal { .. })
        ));
        // Unrelated sound (a 440 Hz tone) is not the signal either.
        let tone: Vec<f32> = (0..silent.len())
            .map(|i| (0.3 * (i as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin()) as f32)
            .collect();
        assert!(matches!(
            measure(&s, &tone, 0.0, 0.3),
            Err(CalibrationError::NoSignal { .. })
        ));
        assert!(measure(&s, &silent[..100], 0.0, 0.3).is_err());
        assert!(measure(&s, &silent, f64::NAN, 0.3).is_err());
        assert!(measure(&s, &silent, 0.0, -1.0).is_err());
        // A recording aligned wrongly (direct sound before the acoustic path allows).
        let y = delayed(&s.samples, 10.0, 0.3, s.recording_samples(100.0));
        assert!(matches!(
            measure(&s, &y, 0.0, 3.0),
            Err(CalibrationError::Implausible(_))
        ));
    }
}
