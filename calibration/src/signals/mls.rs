//! Maximum-length sequences (MLS) and their deconvolution by circular
//! cross-correlation.
//!
//! An MLS of order `m` is the output of an `m`-bit linear-feedback shift register whose
//! feedback polynomial is primitive over GF(2): it has period `P = 2^m − 1` and, mapped to
//! ±1, a circular autocorrelation of `P` at lag 0 and `−1` at every other lag (Rife &
//! Vanderkooy, JAES 37(6), 1989). If the room's response is shorter than a period, the
//! steady-state response to a periodically repeated MLS, circularly correlated with one
//! period, gives the impulse response exactly:
//! `r[n] = Σᵢ y[i+n]·s[i] = (P+1)·h[n] − Σh`, so `h[n] = (r[n] + Σr)/(P+1)`.
//!
//! The played signal is one *pre-roll* period (which brings the room into its
//! periodic steady state and carries the fade-in), `periods` analysed periods, and a
//! short faded continuation so the fade-out does not touch the last analysed period.
//! The analysed periods are averaged (noise falls by `√periods`) before correlating;
//! their individual responses are kept for the spread of the onset (the uncertainty).
//!
//! Primitive feedback polynomials are not tabulated: they are found by search, by
//! running a Galois LFSR for every candidate tap mask in increasing order and keeping
//! those whose state returns to the start after exactly `2^m − 1` steps. The `sequence`
//! parameter picks the n-th one; different sequences of one order have low circular
//! cross-correlation, which [`crate::orthogonal`] uses.

use serde::{Deserialize, Serialize};

use super::{apply_fades, db_to_gain, ms_to_samples, Deconvolved};
use crate::fft::{irfft, rfft};
use crate::CalibrationError;

/// Room response (latency + reverberation) that must fit in one period besides the
/// latency, ms: latencies up to one period minus this are unambiguous.
pub const ROOM_RESPONSE_MARGIN_MS: f64 = 300.0;

/// Highest sequence index accepted (distinct primitive polynomials per order).
pub const MAX_SEQUENCES: u32 = 64;

/// Parameters of an MLS test signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlsParams {
    /// Order `m` (10..=20): period `2^m − 1` samples (order 16: 65 535 = 1.37 s).
    pub order: u32,
    /// Periods analysed after the pre-roll period (1..=16).
    pub periods: u32,
    /// Peak (= RMS) level, dBFS (−100..=0).
    pub level_dbfs: f64,
    /// Raised-cosine fade-in and fade-out, ms (less than half a period).
    pub fade_ms: f64,
    /// Which primitive polynomial of this order (0..64): distinct values give nearly
    /// orthogonal sequences.
    pub sequence: u32,
}

impl Default for MlsParams {
    /// Order 16 (1.37 s period, latencies up to ≈1 s), 3 analysed periods (5.5 s in
    /// all), −18 dBFS (an MLS has a crest factor of 1, so this is as loud as a sweep
    /// at −15 dBFS peak), 10 ms fades.
    fn default() -> Self {
        Self {
            order: 16,
            periods: 3,
            level_dbfs: -18.0,
            fade_ms: 10.0,
            sequence: 0,
        }
    }
}

impl MlsParams {
    /// Period, samples.
    pub fn period_len(&self) -> usize {
        (1usize << self.order.min(30)) - 1
    }

    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        let bad = |m: String| Err(CalibrationError::InvalidParameter(m));
        if !(10..=20).contains(&self.order) {
            return bad(format!("mls order must be 10..=20, got {}", self.order));
        }
        if !(1..=16).contains(&self.periods) {
            return bad(format!("mls periods must be 1..=16, got {}", self.periods));
        }
        if !(self.level_dbfs.is_finite() && (-100.0..=0.0).contains(&self.level_dbfs)) {
            return bad(format!(
                "mls level_dbfs must be −100..=0, got {}",
                self.level_dbfs
            ));
        }
        if !(self.fade_ms.is_finite()
            && self.fade_ms >= 0.0
            && ms_to_samples(self.fade_ms) < self.period_len() / 2)
        {
            return bad(format!(
                "mls fade_ms must be ≥ 0 and under half a period, got {}",
                self.fade_ms
            ));
        }
        if self.sequence >= MAX_SEQUENCES {
            return bad(format!(
                "mls sequence must be below {MAX_SEQUENCES}, got {}",
                self.sequence
            ));
        }
        Ok(())
    }
}

/// One Galois LFSR step; returns the output bit.
fn lfsr_step(state: &mut u32, mask: u32) -> u32 {
    let out = *state & 1;
    *state >>= 1;
    if out == 1 {
        *state ^= mask;
    }
    out
}

/// True when the Galois LFSR with tap `mask` has the full period `2^order − 1`.
fn is_maximal(order: u32, mask: u32) -> bool {
    let period = (1u64 << order) - 1;
    let mut s = 1u32;
    for step in 1..=period {
        lfsr_step(&mut s, mask);
        if s == 1 {
            return step == period;
        }
    }
    false
}

/// The first `count` tap masks of order `order` giving a maximal-length LFSR, in
/// increasing order. Searched once per order and cached.
pub(crate) fn primitive_masks(order: u32, count: usize) -> Vec<u32> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<u32, Vec<u32>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut known = cache
        .lock()
        .map(|c| c.get(&order).cloned().unwrap_or_default())
        .unwrap_or_default();
    if known.len() < count {
        let top = 1u32 << (order - 1);
        let from = known.last().map(|m| m - top + 1).unwrap_or(0);
        known.extend(
            (from..top)
                .map(|c| top | c)
                .filter(|&m| is_maximal(order, m))
                .take(count - known.len()),
        );
        if let Ok(mut c) = cache.lock() {
            c.insert(order, known.clone());
        }
    }
    known.truncate(count);
    known
}

/// The `index`-th (from 0) tap mask of order `order` giving a maximal-length LFSR.
pub(crate) fn primitive_mask(order: u32, index: u32) -> Option<u32> {
    primitive_masks(order, index as usize + 1)
        .get(index as usize)
        .copied()
}

/// One period of the sequence as ±1 (bit 0 → +1, bit 1 → −1).
pub(crate) fn sequence(order: u32, index: u32) -> Result<Vec<f32>, CalibrationError> {
    if !(2..=24).contains(&order) {
        return Err(CalibrationError::InvalidParameter(format!(
            "mls order {order} not supported"
        )));
    }
    let mask = primitive_mask(order, index).ok_or_else(|| {
        CalibrationError::InvalidParameter(format!("no mls sequence {index} of order {order}"))
    })?;
    let p = (1usize << order) - 1;
    let mut s = 1u32;
    Ok((0..p)
        .map(|_| {
            if lfsr_step(&mut s, mask) == 1 {
                -1.0
            } else {
                1.0
            }
        })
        .collect())
}

/// (samples to play, one ±1 period, amplitude).
pub(crate) fn generate(p: &MlsParams) -> Result<(Vec<f32>, Vec<f32>, f64), CalibrationError> {
    p.validate()?;
    let period = sequence(p.order, p.sequence)?;
    let len = period.len();
    let a = db_to_gain(p.level_dbfs);
    let fade = ms_to_samples(p.fade_ms);
    let total = (p.periods as usize + 1) * len + fade;
    let mut x: Vec<f32> = (0..total).map(|i| (a as f32) * period[i % len]).collect();
    apply_fades(&mut x, fade, fade);
    Ok((x, period, a))
}

/// Circular impulse response of one period-long segment `y` (aligned with the
/// sequence's phase 0) against the ±1 `period` played at amplitude `a`.
fn circular_ir(period: &[f32], a: f64, y: &[f64]) -> Vec<f32> {
    let n = period.len();
    let s: Vec<f64> = period.iter().map(|&v| v as f64).collect();
    let ss = rfft(&s, n);
    let ys = rfft(y, n);
    let prod: Vec<_> = ys.iter().zip(&ss).map(|(yk, sk)| yk * sk.conj()).collect();
    let r = irfft(&prod, n);
    let sum: f64 = r.iter().sum();
    let scale = 1.0 / ((n as f64 + 1.0) * a.max(f64::MIN_POSITIVE));
    r.iter().map(|&v| ((v + sum) * scale) as f32).collect()
}

/// Deconvolves a recording that started `offset` samples after the signal (negative:
/// before). Uses every whole analysed period the recording holds.
pub(crate) fn deconvolve(
    period: &[f32],
    a: f64,
    p: &MlsParams,
    recording: &[f32],
    offset: i64,
) -> Result<Deconvolved, CalibrationError> {
    let len = period.len() as i64;
    if len == 0 {
        return Err(CalibrationError::InvalidParameter("empty mls".into()));
    }
    let last = (p.periods as i64 + 1) * len; // end of the steady state, signal time
                                             // First whole period (signal time, multiple of len, after the pre-roll) inside
                                             // the recording.
    let t0 = if offset <= len {
        len
    } else {
        (offset + len - 1) / len * len
    };
    let start = t0 - offset; // recording index
    let available = (recording.len() as i64 - start).max(0) / len;
    let k = available.min((last - t0) / len).max(0) as usize;
    if k == 0 {
        return Err(CalibrationError::RecordingTooShort {
            needed: (start + len).max(0) as usize,
            got: recording.len(),
        });
    }
    let n = len as usize;
    let start = start as usize;
    let seg = |j: usize| -> Vec<f64> {
        recording[start + j * n..start + (j + 1) * n]
            .iter()
            .map(|&v| if v.is_finite() { v as f64 } else { 0.0 })
            .collect()
    };
    let mut avg = vec![0.0f64; n];
    let mut periods = Vec::new();
    for j in 0..k {
        let y = seg(j);
        for (acc, v) in avg.iter_mut().zip(&y) {
            *acc += v / k as f64;
        }
        if k > 1 {
            periods.push(circular_ir(period, a, &y));
        }
    }
    Ok(Deconvolved {
        ir: circular_ir(period, a, &avg),
        delay_origin: 0,
        periods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_have_the_mls_autocorrelation() {
        let s = sequence(10, 0).unwrap();
        assert_eq!(s.len(), 1023);
        for lag in [0usize, 1, 2, 100, 1022] {
            let r: f32 = (0..s.len()).map(|i| s[i] * s[(i + lag) % s.len()]).sum();
            let want = if lag == 0 { 1023.0 } else { -1.0 };
            assert_eq!(r, want, "lag {lag}");
        }
        // Balance: one more −1 (the ones) than +1.
        assert_eq!(s.iter().sum::<f32>(), -1.0);
    }

    #[test]
    fn different_sequences_are_different_and_nearly_orthogonal() {
        let a = sequence(12, 0).unwrap();
        let b = sequence(12, 1).unwrap();
        assert_ne!(a, b);
        let n = a.len();
        let worst = (0..n)
            .map(|lag| (0..n).map(|i| a[i] * b[(i + lag) % n]).sum::<f32>().abs())
            .fold(0.0f32, f32::max);
        // Far below the autocorrelation peak of 4095 (≈ −20 dB or better).
        assert!(worst < 0.1 * n as f32, "{worst}");
    }

    #[test]
    fn periodic_steady_state_gives_the_exact_impulse_response() {
        let p = MlsParams {
            order: 12,
            periods: 2,
            fade_ms: 5.0,
            ..MlsParams::default()
        };
        let (x, period, a) = generate(&p).unwrap();
        // A path with two taps: 0.8 at 300 samples, −0.3 at 350.
        let mut y = vec![0.0f32; x.len() + 400];
        for (i, v) in x.iter().enumerate() {
            y[i + 300] += 0.8 * v;
            y[i + 350] -= 0.3 * v;
        }
        let d = deconvolve(&period, a, &p, &y, 0).unwrap();
        assert_eq!(d.ir.len(), 4095);
        assert!((d.ir[300] - 0.8).abs() < 1e-3, "{}", d.ir[300]);
        assert!((d.ir[350] + 0.3).abs() < 1e-3);
        assert!(d.ir[0].abs() < 1e-3 && d.ir[1000].abs() < 1e-3);
        assert_eq!(d.periods.len(), 2);
        // A recording that starts 1000 samples early sees the same response.
        let mut early = vec![0.0f32; 1000];
        early.extend_from_slice(&y);
        let d2 = deconvolve(&period, a, &p, &early, -1000).unwrap();
        assert!((d2.ir[300] - 0.8).abs() < 1e-3);
        // Too short: an error, not a panic.
        assert!(deconvolve(&period, a, &p, &y[..5000], 0).is_err());
    }

    #[test]
    fn bad_parameters_are_named() {
        for (p, needle) in [
            (
                MlsParams {
                    order: 4,
                    ..Default::default()
                },
                "order",
            ),
            (
                MlsParams {
                    periods: 0,
                    ..Default::default()
                },
                "periods",
            ),
            (
                MlsParams {
                    sequence: 99,
                    ..Default::default()
                },
                "sequence",
            ),
        ] {
            assert!(generate(&p).unwrap_err().to_string().contains(needle));
        }
    }
}
