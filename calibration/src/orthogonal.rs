//! Mutually orthogonal test signals, to calibrate N devices in one room in one pass.
//!
//! **Method: one distinct maximum-length sequence per device.** Every device plays an
//! MLS of the same order but with a different primitive feedback polynomial, all at
//! the same time; each microphone records the sum. Deconvolving microphone `k`'s
//! recording with device `k`'s own sequence ([`TestSignal::impulse_response`]) gives
//! device `k`'s impulse response; every other device's sound correlates with the wrong
//! sequence and is spread into a low, noise-like floor. Two distinct m-sequences of
//! period `P` have a circular cross-correlation of RMS `√P` against the
//! autocorrelation peak `P`, with peaks of a few `√P` (Sarwate & Pursley, Proc. IEEE
//! 68(5), 1980). The set is picked so every pair peaks below
//! [`CROSS_CORRELATION_BOUND`] (−32 dB at order 16), so a device heard at −10 dB leaks
//! at most −42 dB at any one lag (and typically −58 dB); four such devices together
//! stay below −35 dB (tested), 15 dB under the onset detector's threshold.
//!
//! **Why this and not the alternatives.**
//! - *Time-interleaved exponential sweeps* (the "multiple exponential sweep method",
//!   Majdak, Balazs & Laback, JAES 55(7/8), 2007) separate devices by giving each a
//!   time slot in one deconvolved response. That is only valid when every device's
//!   latency plus room response is shorter than the slot, and output latencies range
//!   from 5 ms (analog) to several hundred ms (Cast, Bluetooth): an unknown 300 ms
//!   latency would put a device's direct sound in its neighbour's slot. Slots long
//!   enough to rule that out make five devices take longer than 15 s.
//! - *Shifted copies of one MLS* have the same slot problem.
//! - *Frequency-interleaved signals* separate perfectly, but each device then has
//!   only every N-th frequency, which aliases its impulse response every
//!   `1/(N·Δf)` seconds; keeping that above 1 s for 5 devices needs periods of 5 s+.
//!
//! Distinct sequences separate devices whatever their latencies (up to one period),
//! every device plays for the whole pass (full energy, so SNR), and five devices take
//! one pre-roll plus three analysed periods of 1.37 s: 5.5 s. Their weakness, shared by
//! every MLS method, is sensitivity to non-linear distortion and to clock drift
//! between output and microphone during the pass; a sequential sweep is the fallback
//! for such devices.

use crate::fft::{irfft, rfft};
use crate::signals::mls::{sequence, MAX_SEQUENCES};
use crate::signals::{MlsParams, SignalParams, TestSignal};
use crate::CalibrationError;

/// Largest accepted circular cross-correlation between two sequences of a set, as a
/// multiple of `2^((m+2)/2)` (the Gold bound for preferred pairs), relative to the
/// autocorrelation peak `2^m − 1`. 3.2 gives −32 dB at order 16, −35 dB at order 17.
pub const CROSS_CORRELATION_BOUND: f64 = 3.2;

/// Peak circular cross-correlation of two ±1 sequences of equal length, relative to
/// their autocorrelation peak (`0..=1`).
pub fn peak_cross_correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len();
    if n == 0 || b.len() != n {
        return 1.0;
    }
    let to64 = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (sa, sb) = (rfft(&to64(a), n), rfft(&to64(b), n));
    let prod: Vec<_> = sa.iter().zip(&sb).map(|(x, y)| x * y.conj()).collect();
    irfft(&prod, n).iter().fold(0.0f64, |m, v| m.max(v.abs())) / n as f64
}

/// `n` mutually orthogonal MLS signals built from `base` (its `sequence` is replaced).
/// Device `k` plays `result[k]`, all starting at the same instant.
///
/// Sequences are picked greedily, in the order of their feedback polynomials, so that
/// every pair's peak cross-correlation stays under [`CROSS_CORRELATION_BOUND`]; the
/// choice is deterministic and recorded in each signal's `MlsParams::sequence`.
///
/// Errors: `n` is 0, no set of `n` sequences meets the bound among the first 64
/// polynomials of the order, or `base` is invalid.
pub fn orthogonal_set(n: usize, base: &MlsParams) -> Result<Vec<TestSignal>, CalibrationError> {
    base.validate()?;
    if n == 0 || n > MAX_SEQUENCES as usize {
        return Err(CalibrationError::InvalidParameter(format!(
            "simultaneous calibration needs 1..={MAX_SEQUENCES} devices, got {n}"
        )));
    }
    let bound = CROSS_CORRELATION_BOUND * 2f64.powf((base.order as f64 + 2.0) / 2.0)
        / base.period_len() as f64;
    let mut chosen: Vec<(u32, Vec<f32>)> = Vec::new();
    for k in 0..MAX_SEQUENCES {
        if chosen.len() == n {
            break;
        }
        let Ok(s) = sequence(base.order, k) else {
            break;
        };
        if chosen
            .iter()
            .all(|(_, c)| peak_cross_correlation(c, &s) <= bound)
        {
            chosen.push((k, s));
        }
    }
    if chosen.len() < n {
        return Err(CalibrationError::InvalidParameter(format!(
            "only {} mutually orthogonal sequences of order {} found, {n} needed: use a \
             higher mls order or calibrate sequentially",
            chosen.len(),
            base.order
        )));
    }
    chosen
        .into_iter()
        .map(|(k, _)| {
            TestSignal::new(SignalParams::Mls(MlsParams {
                sequence: k,
                ..base.clone()
            }))
        })
        .collect()
}

/// Total audio of one simultaneous pass, ms (every signal has the same length).
pub fn pass_duration_ms(set: &[TestSignal]) -> f64 {
    set.iter().map(|s| s.duration_ms()).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::measure;

    fn add_delayed(y: &mut [f32], x: &[f32], delay: usize, g: f32) {
        for (i, v) in x.iter().enumerate() {
            if let Some(s) = y.get_mut(i + delay) {
                *s += g * v;
            }
        }
    }

    #[test]
    fn five_devices_separate_from_one_microphone() {
        let base = MlsParams::default();
        let set = orthogonal_set(5, &base).unwrap();
        assert!(pass_duration_ms(&set) < 15_000.0);
        // Latencies chosen so that slot-based separation would fail: device 0 is
        // 300 ms late, device 1 is 8 ms.
        let lat = [14_400usize, 384, 12_000, 9_600, 3_360];
        let len = set[0].samples.len();
        for own in 0..5 {
            // This microphone hears its own device at 0 dB, all others at −10 dB.
            let mut y = vec![0.0f32; len];
            for (k, s) in set.iter().enumerate() {
                let g = if k == own { 1.0 } else { 0.316 };
                add_delayed(&mut y, &s.samples, lat[k], g);
            }
            let ir = set[own].impulse_response(&y);
            let peak = ir[lat[own]];
            assert!((peak - 1.0).abs() < 0.01, "own peak {peak}");
            // Everything else, including where the other devices' direct sound would
            // be with the right sequence, is ≥ 35 dB down.
            let leak = ir
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != lat[own])
                .fold(0.0f32, |m, (_, v)| m.max(v.abs()));
            let leak_db = 20.0 * (leak / peak).log10();
            assert!(leak_db < -35.0, "device {own}: leak {leak_db:.1} dB");
            let m = measure(&set[own], &y, 0.0, 0.0).unwrap();
            assert!(
                (m.latency_ms - lat[own] as f64 / 48.0).abs() < 0.01,
                "{m:?}"
            );
        }
    }

    #[test]
    fn set_size_is_checked() {
        assert!(orthogonal_set(0, &MlsParams::default()).is_err());
        assert!(orthogonal_set(65, &MlsParams::default()).is_err());
        let s = orthogonal_set(3, &MlsParams::default()).unwrap();
        assert_ne!(s[0].samples, s[1].samples);
        assert_ne!(s[1].samples, s[2].samples);
        let p = |x: &TestSignal| match &x.params {
            SignalParams::Mls(p) => p.sequence,
            _ => 99,
        };
        // Deterministic choice.
        let again = orthogonal_set(3, &MlsParams::default()).unwrap();
        assert_eq!(
            s.iter().map(p).collect::<Vec<_>>(),
            again.iter().map(p).collect::<Vec<_>>()
        );
    }
}
