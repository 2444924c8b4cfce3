//! Delay estimation by generalized cross-correlation with phase transform (GCC-PHAT,
//! Knapp and Carter, 1976), computed with realfft.
//!
//! Convention: `reference` and `recording` start at the same instant on the same
//! clock; the delay is positive when the recording lags the reference
//! (`recording[n] ≈ g·reference[n − d]`).

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Where to look for the delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagSearch {
    /// Smallest delay considered, ms (may be negative).
    pub min_lag_ms: f64,
    /// Largest delay considered, ms.
    pub max_lag_ms: f64,
    /// Delay the caller expects, ms; used to choose between peaks of similar height.
    pub expected_lag_ms: Option<f64>,
}

impl LagSearch {
    /// Symmetric search ±`max_abs_ms`.
    pub fn symmetric(max_abs_ms: f64) -> Self {
        Self {
            min_lag_ms: -max_abs_ms,
            max_lag_ms: max_abs_ms,
            expected_lag_ms: None,
        }
    }
}

/// The result of one estimate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DelayEstimate {
    /// Delay of the recording against the reference, ms; `None` when there is no
    /// trustworthy estimate.
    pub delay_ms: Option<f64>,
    /// Confidence 0..=1.
    pub confidence: f64,
    /// RMS level of the recording, dBFS.
    pub signal_strength_db: f64,
    /// Why there is no estimate, when `delay_ms` is `None`.
    pub reason: Option<String>,
}

/// Input the estimator cannot work on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EstimateError {
    /// An empty reference or recording.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// NaN or infinite samples.
    #[error("{0} contains samples that are not finite (NaN or infinity)")]
    NotFinite(&'static str),
    /// A search range that is empty or not finite.
    #[error("invalid lag search range: {0}")]
    BadSearch(String),
}

/// Reusable GCC-PHAT estimator: keeps FFT plans and scratch buffers between calls.
pub struct DelayEstimator {
    sample_rate: u32,
    planner: RealFftPlanner<f32>,
    fft_len: usize,
    fwd: Option<Arc<dyn RealToComplex<f32>>>,
    inv: Option<Arc<dyn ComplexToReal<f32>>>,
    buf_a: Vec<f32>,
    buf_b: Vec<f32>,
    spec_a: Vec<Complex32>,
    spec_b: Vec<Complex32>,
    corr: Vec<f32>,
}

fn rms_dbfs(x: &[f32]) -> f64 {
    let e: f64 = x.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / x.len().max(1) as f64;
    10.0 * (e.max(1e-20)).log10()
}

impl DelayEstimator {
    /// An estimator for signals at `sample_rate` Hz.
    pub fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            planner: RealFftPlanner::new(),
            fft_len: 0,
            fwd: None,
            inv: None,
            buf_a: Vec::new(),
            buf_b: Vec::new(),
            spec_a: Vec::new(),
            spec_b: Vec::new(),
            corr: Vec::new(),
        }
    }

    /// Sample rate, Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn ensure_plan(&mut self, n: usize) {
        if self.fft_len != n {
            let fwd = self.planner.plan_fft_forward(n);
            let inv = self.planner.plan_fft_inverse(n);
            self.buf_a = vec![0.0; n];
            self.buf_b = vec![0.0; n];
            self.spec_a = fwd.make_output_vec();
            self.spec_b = fwd.make_output_vec();
            self.corr = vec![0.0; n];
            self.fwd = Some(fwd);
            self.inv = Some(inv);
            self.fft_len = n;
        }
    }

    /// Estimates the delay of `recording` against `reference` (both mono, at the
    /// estimator's rate) within `search`.
    ///
    /// Errors: empty or non-finite input, or an empty search range. A recording with
    /// nothing to find is not an error: it gives `delay_ms: None` with the reason.
    pub fn estimate(
        &mut self,
        reference: &[f32],
        recording: &[f32],
        search: &LagSearch,
    ) -> Result<DelayEstimate, EstimateError> {
        if reference.is_empty() {
            return Err(EstimateError::Empty("reference"));
        }
        if recording.is_empty() {
            return Err(EstimateError::Empty("recording"));
        }
        if reference.iter().any(|s| !s.is_finite()) {
            return Err(EstimateError::NotFinite("reference"));
        }
        if recording.iter().any(|s| !s.is_finite()) {
            return Err(EstimateError::NotFinite("recording"));
        }
        if !(search.min_lag_ms.is_finite() && search.max_lag_ms.is_finite())
            || search.min_lag_ms > search.max_lag_ms
        {
            return Err(EstimateError::BadSearch(format!(
                "{} to {} ms",
                search.min_lag_ms, search.max_lag_ms
            )));
        }
        let signal_strength_db = rms_dbfs(recording);
        let no = |reason: &str| DelayEstimate {
            delay_ms: None,
            confidence: 0.0,
            signal_strength_db,
            reason: Some(reason.to_string()),
        };
        if signal_strength_db < -90.0 {
            return Ok(no("the recording is silent"));
        }
        if rms_dbfs(reference) < -90.0 {
            return Ok(no("the reference is silent"));
        }
        let fs = self.sample_rate as f64;
        let min_lag = (search.min_lag_ms * fs / 1000.0).floor() as i64;
        let max_lag = (search.max_lag_ms * fs / 1000.0).ceil() as i64;
        let n = (reference.len() + recording.len() + (max_lag.abs().max(min_lag.abs()) as usize))
            .next_power_of_two();
        self.ensure_plan(n);
        let (fwd, inv) = (self.fwd.clone().unwrap(), self.inv.clone().unwrap());
        self.buf_a.fill(0.0);
        self.buf_a[..reference.len()].copy_from_slice(reference);
        self.buf_b.fill(0.0);
        self.buf_b[..recording.len()].copy_from_slice(recording);
        fwd.process(&mut self.buf_a, &mut self.spec_a)
            .expect("plan length matches");
        fwd.process(&mut self.buf_b, &mut self.spec_b)
            .expect("plan length matches");
        for (b, a) in self.spec_b.iter_mut().zip(&self.spec_a) {
            let c = *b * a.conj();
            let m = c.norm();
            *b = if m > 1e-12 {
                c / m
            } else {
                Complex32::new(0.0, 0.0)
            };
        }
        inv.process(&mut self.spec_b, &mut self.corr)
            .expect("plan length matches");
        let at = |lag: i64| -> f32 { self.corr[lag.rem_euclid(n as i64) as usize] };
        let mut best = min_lag;
        let mut best_v = f32::MIN;
        for lag in min_lag..=max_lag {
            let v = at(lag);
            if v > best_v {
                best_v = v;
                best = lag;
            }
        }
        // Peak-to-sidelobe ratio outside ±1 ms of the peak.
        let guard = (fs / 1000.0) as i64;
        let mut sum = 0.0f64;
        let mut cnt = 0usize;
        for lag in min_lag..=max_lag {
            if (lag - best).abs() > guard {
                sum += (at(lag) as f64).powi(2);
                cnt += 1;
            }
        }
        let noise = (sum / cnt.max(1) as f64).sqrt().max(1e-12);
        let psr = best_v as f64 / noise;
        let confidence = (1.0 - (-(psr - 5.0).max(0.0) / 5.0).exp()).clamp(0.0, 1.0);
        if confidence < 0.5 {
            return Ok(DelayEstimate {
                confidence,
                ..no("no clear correlation peak")
            });
        }
        let (ym, y0, yp) = (at(best - 1) as f64, best_v as f64, at(best + 1) as f64);
        let denom = ym - 2.0 * y0 + yp;
        let frac = if denom.abs() > 1e-12 {
            0.5 * (ym - yp) / denom
        } else {
            0.0
        };
        let delay_ms = (best as f64 + frac.clamp(-0.5, 0.5)) * 1000.0 / fs;
        Ok(DelayEstimate {
            delay_ms: Some(delay_ms),
            confidence,
            signal_strength_db,
            reason: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as f64 / u64::MAX as f64 * 2.0 - 1.0) as f32 * 0.3
            })
            .collect()
    }

    #[test]
    fn finds_an_integer_delay() {
        let r = noise(48_000, 1);
        let d = 480usize;
        let mut rec = vec![0.0; 48_000];
        rec[d..].copy_from_slice(&r[..48_000 - d]);
        let mut e = DelayEstimator::new(48_000);
        let est = e.estimate(&r, &rec, &LagSearch::symmetric(100.0)).unwrap();
        assert!((est.delay_ms.unwrap() - 10.0).abs() < 0.01, "{est:?}");
        assert!(est.confidence > 0.9);
    }

    #[test]
    fn unrelated_audio_gives_none() {
        let mut e = DelayEstimator::new(48_000);
        let est = e
            .estimate(
                &noise(48_000, 1),
                &noise(48_000, 2),
                &LagSearch::symmetric(100.0),
            )
            .unwrap();
        assert_eq!(est.delay_ms, None, "{est:?}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut e = DelayEstimator::new(48_000);
        assert_eq!(
            e.estimate(&[], &[1.0], &LagSearch::symmetric(1.0)),
            Err(EstimateError::Empty("reference"))
        );
        assert_eq!(
            e.estimate(&[1.0], &[f32::NAN], &LagSearch::symmetric(1.0)),
            Err(EstimateError::NotFinite("recording"))
        );
    }
}
