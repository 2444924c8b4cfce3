//! The delay estimator's API: [`DelayEstimator`], [`LagSearch`], [`DelayEstimate`].
//!
//! Generalized cross-correlation (Knapp and Carter, 1976) with SCOT/PHAT weighting
//! over the searched lags, computed with realfft; see `docs/delay-estimation.md`.
//!
//! Convention: `reference` and `recording` start at the same instant on the same
//! clock; the delay is positive when the recording lags the reference
//! (`recording[n] ≈ g·reference[n − d]`).

use super::confidence::{
    confidence, noise_threshold_z, robust_sigma, MIN_CONFIDENCE, RIVAL_HIGH, RIVAL_LOW,
};
use super::decimate::{Decimator, FACTOR};
use super::gcc::{GccWorkspace, Weighting, Windows};
use super::peak::{
    choose_peak, choose_peak_within, main_lobe, parabolic_offset, refine_peak, rival_ratio, Peak,
    REFLECTION_WINDOW_MS,
};

/// Where to look for the delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagSearch {
    /// Smallest delay considered, ms (may be negative).
    pub min_lag_ms: f64,
    /// Largest delay considered, ms.
    pub max_lag_ms: f64,
    /// Delay the caller expects, ms; used to choose between peaks of similar height.
    pub expected_lag_ms: Option<f64>,
    /// With `expected_lag_ms`: the highest peak within this of the expected lag that
    /// clears the noise threshold wins, however much higher a peak elsewhere is, ms
    /// (a receiver in sync looking for its own sound, quieter than a neighbour's).
    pub gate_ms: Option<f64>,
}

impl LagSearch {
    /// Symmetric search ±`max_abs_ms`.
    pub fn symmetric(max_abs_ms: f64) -> Self {
        Self {
            min_lag_ms: -max_abs_ms,
            max_lag_ms: max_abs_ms,
            expected_lag_ms: None,
            gate_ms: None,
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
    /// When there is no precise estimate only because the signals share too little
    /// bandwidth (bass only: a subwoofer, a bass passage), the coarse delay the
    /// correlation still gives and how far it may be off (see [`CoarseDelay`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coarse: Option<CoarseDelay>,
}

/// A coarse delay: from a correlation peak too broad to place the direct path within
/// 1 ms (narrow-band content in a reverberant room), but standing out of the noise
/// with no rival beyond the reflections around it.
///
/// With bass only, the correlation's highest peak lies up to tens of milliseconds after
/// the direct path (the sound builds up over the room's early reflections and modes):
/// the direct path is taken to lie between the correlation's first rise towards that
/// peak and the peak itself ([`EARLY_SOUND_MS`], [`ONSET_RATIO`]). `delay_ms` is the
/// middle of that span and `uncertainty_ms` its half-width: a bound from the room's
/// physics, not a statistical spread. `tools/eval_delay` reports how often the truth
/// lies outside it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CoarseDelay {
    /// The delay, ms (same convention as [`DelayEstimate::delay_ms`]).
    pub delay_ms: f64,
    /// The true delay lies within ± this of `delay_ms`, ms.
    pub uncertainty_ms: f64,
    /// The band the estimate rests on (where 80 % of the correlation's weight lies),
    /// Hz.
    pub band_hz: [f64; 2],
    /// Confidence that the peak is real and has no rival beyond its reflections, 0..=1.
    pub confidence: f64,
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
    /// Finite samples so far beyond full scale (RMS above [`MAX_LEVEL_DBFS`]) that the
    /// correlation would overflow.
    #[error("{0} is far beyond full scale (RMS level above {MAX_LEVEL_DBFS} dBFS)")]
    TooLoud(&'static str),
    /// A weighting with a parameter out of its range (`ScotBeta`'s β must be in 0..=1).
    #[error("invalid weighting: {0}")]
    BadWeighting(String),
}

/// Highest RMS level of a reference or recording the estimator accepts, dBFS (full
/// scale is ±1: +120 dBFS is an RMS of 10⁶). Louder signals overflowed the f32
/// correlation into a NaN delay (found by fuzzing, `fuzz/corpus/delay/`).
pub const MAX_LEVEL_DBFS: f64 = 120.0;

/// Reusable estimator: keeps FFT plans and scratch buffers between calls, so that
/// estimates of the same size allocate nothing (except the `reason` text of an
/// estimate that is withheld).
///
/// Method: generalized cross-correlation with the SCOT weighting on block-averaged
/// spectra ([`super::gcc`]; PHAT when the recording is one block), over the
/// searched lags only; the earliest strong peak or the one nearest the expected lag
/// ([`super::peak`]); band-limited sub-sample refinement; and a confidence from a
/// Gaussian noise model and the height of rival peaks ([`super::confidence`]).
pub struct DelayEstimator {
    sample_rate: u32,
    gcc: GccWorkspace,
    gcc_fine: GccWorkspace,
    decimator: Decimator,
    dec_ref: Vec<f32>,
    dec_rec: Vec<f32>,
    two_stage: bool,
    scratch: Vec<f32>,
    diagnostics: Option<Diagnostics>,
}

impl std::fmt::Debug for DelayEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayEstimator")
            .field("sample_rate", &self.sample_rate)
            .field("two_stage", &self.two_stage)
            .finish_non_exhaustive()
    }
}

/// How the last estimate came about (for logs and the evaluation harness).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Diagnostics {
    /// The confidence's parts.
    pub z: f64,
    /// Probability that the peak is not noise.
    pub p_signal: f64,
    /// Rival peak ratio (see [`super::peak::rival_ratio`]).
    pub rival: f64,
    /// Effective share of the band that carried weight.
    pub effective_band: f64,
    /// Blocks that had signal in both inputs.
    pub blocks: usize,
    /// FFT length.
    pub fft_len: usize,
    /// Lags searched.
    pub lags: usize,
    /// Chosen lag before refinement, samples.
    pub peak_lag: i64,
    /// Width of the chosen main lobe at half height, ms.
    pub lobe_ms: f64,
    /// The strongest other peaks of the correlation (local maxima above the noise
    /// threshold outside the chosen main lobe), highest first; the first
    /// `others_len` entries are valid.
    pub others: [OtherPeak; MAX_OTHER_PEAKS],
    /// Number of valid entries in `others`.
    pub others_len: usize,
}

/// With a gate ([`LagSearch::gate_ms`]), a peak within this of the expected lag keeps
/// the choice against a later, higher one while it stands out of the noise
/// ([`crate::peak::choose_peak_within`]), ms.
pub const EXPECTED_HOLD_MS: f64 = 0.5;

/// Other peaks kept per estimate in [`Diagnostics::others`].
pub const MAX_OTHER_PEAKS: usize = 4;

/// A peak of the correlation other than the chosen one: another loudspeaker playing
/// the same programme, a strong reflection (see [`Diagnostics::others`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct OtherPeak {
    /// Its lag, ms (same convention as [`DelayEstimate::delay_ms`], unrefined).
    pub lag_ms: f64,
    /// Its height over the correlation's noise scale (as [`Diagnostics::z`]).
    pub z: f64,
}

impl Diagnostics {
    /// The valid entries of [`Diagnostics::others`].
    pub fn other_peaks(&self) -> &[OtherPeak] {
        &self.others[..self.others_len.min(MAX_OTHER_PEAKS)]
    }
}

/// The up to [`MAX_OTHER_PEAKS`] highest local maxima of `values` at or above `floor`
/// outside `[lobe_start, lobe_end)`, highest first, as (index, value).
fn highest_other_peaks(
    values: &[f32],
    (lobe_start, lobe_end): (usize, usize),
    floor: f32,
) -> ([(usize, f32); MAX_OTHER_PEAKS], usize) {
    let mut best = [(0usize, f32::MIN); MAX_OTHER_PEAKS];
    let mut n = 0usize;
    for i in (0..lobe_start).chain(lobe_end..values.len()) {
        let v = values[i];
        if v < floor
            || !v.is_finite()
            || (i > 0 && values[i - 1] > v)
            || (i + 1 < values.len() && values[i + 1] >= v)
        {
            continue;
        }
        if n < MAX_OTHER_PEAKS {
            best[n] = (i, v);
            n += 1;
        } else if v > best[n - 1].1 {
            best[n - 1] = (i, v);
        } else {
            continue;
        }
        // Keep them sorted, highest first (insertion of the newest).
        let mut k = n - 1;
        while k > 0 && best[k].1 > best[k - 1].1 {
            best.swap(k, k - 1);
            k -= 1;
        }
    }
    (best, n)
}

/// `Σ (x − offset)` (`square` false) or `Σ (x − offset)²` (true): f32 lanes per
/// chunk, so that it vectorises, chunks summed in f64. Not finite when `x` holds a
/// NaN or an infinity.
fn sum(x: &[f32], offset: f32, square: bool) -> f64 {
    fn lanes<F: Fn(f32) -> f32>(chunk: &[f32], f: F) -> f64 {
        let mut acc = [0.0f32; 16];
        let mut it = chunk.chunks_exact(16);
        for c in &mut it {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += f(v);
            }
        }
        let tail: f32 = it.remainder().iter().map(|&v| f(v)).sum();
        acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64
    }
    x.chunks(4096)
        .map(|c| {
            if square {
                lanes(c, |v| (v - offset) * (v - offset))
            } else {
                lanes(c, |v| v - offset)
            }
        })
        .sum()
}

/// Mean and RMS level (dBFS, after removing the mean) of a signal, or `None` when
/// it holds samples that are not finite.
fn mean_and_level(x: &[f32]) -> Option<(f32, f64)> {
    let n = x.len().max(1) as f64;
    let s = sum(x, 0.0, false);
    let (mean, e) = if s.is_finite() && (s / n).abs() < 1e30 {
        let mean = (s / n) as f32;
        (mean, sum(x, mean, true) / n)
    } else {
        // A NaN or an infinity, or finite samples so large that f32 sums overflow.
        if x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let e = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean as f32, e)
    };
    if !e.is_finite() {
        // f32 squares of huge (finite) samples overflow: measure in f64.
        let m = mean as f64;
        let e = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
        return Some((mean, 10.0 * e.max(1e-20).log10()));
    }
    Some((mean, 10.0 * e.max(1e-20).log10()))
}

/// Bass sound in a room builds up over the early reflections and the room's modes:
/// the correlation's highest peak comes up to this long after the direct path (the
/// "early" sound of room acoustics, as in the C80 clarity index), ms.
pub const EARLY_SOUND_MS: f64 = 80.0;
/// The direct path is taken to begin where the correlation, going back from its peak,
/// first reaches this share of the peak's height.
pub const ONSET_RATIO: f32 = 0.3;

/// A coarse delay from a broad peak (see [`CoarseDelay`]): the correlation's first
/// rise to [`ONSET_RATIO`] of the chosen `peak` within [`EARLY_SOUND_MS`] before it
/// (`early`, samples) is the earliest the direct path can be, the peak (plus half its
/// main lobe) the latest. Returns the middle of that span (index), its half-width
/// (samples), and the confidence that no peak beyond the span rivals the chosen one
/// (`window` samples after it are its reflections). `None` when one does, or the
/// correlation is degenerate.
fn coarse_delay(
    values: &[f32],
    peak: Peak,
    (early, window): (usize, usize),
    floor: f32,
) -> Option<(f64, f64, f64)> {
    let v = peak.value;
    if v.is_nan() || v <= 0.0 || values.len() < 3 {
        return None;
    }
    let i = peak.index;
    let (lobe_lo, lobe_hi) = main_lobe(values, i);
    let half_lobe = 0.5 * (lobe_hi - lobe_lo) as f64;
    let from = i.saturating_sub(early);
    let onset = (from..=i)
        .find(|&k| values[k] >= ONSET_RATIO * v)
        .unwrap_or(i);
    let (first, last) = (onset as f64 - half_lobe, i as f64 + half_lobe);
    let to = (i + window + 1).min(values.len());
    let rival = (0..values.len())
        .filter(|&k| !(from..to).contains(&k) && values[k] >= floor && is_local_max_at(values, k))
        .map(|k| values[k] / v)
        .fold(0.0f32, f32::max);
    let p_unique = ((RIVAL_HIGH - rival as f64) / (RIVAL_HIGH - RIVAL_LOW)).clamp(0.0, 1.0);
    if p_unique < MIN_CONFIDENCE {
        return None;
    }
    Some((0.5 * (first + last), 0.5 * (last - first), p_unique))
}

fn is_local_max_at(values: &[f32], i: usize) -> bool {
    let v = values[i];
    (i == 0 || values[i - 1] <= v) && (i + 1 == values.len() || values[i + 1] < v)
}

/// The band holding the middle 80 % of a weighted cross-spectrum's weight (`|Ψ|` of
/// an `fft_len`-point FFT at `fs` Hz), Hz.
fn weighted_band(
    spectrum: &[realfft::num_complex::Complex32],
    fft_len: usize,
    fs: f64,
) -> [f64; 2] {
    let total: f64 = spectrum.iter().map(|c| c.norm() as f64).sum();
    let hz = |k: usize| k as f64 * fs / fft_len.max(1) as f64;
    if total.is_nan() || total <= 0.0 {
        return [0.0, 0.0];
    }
    let (mut acc, mut lo, mut hi) = (0.0, None, 0);
    for (k, c) in spectrum.iter().enumerate() {
        acc += c.norm() as f64;
        if lo.is_none() && acc >= 0.1 * total {
            lo = Some(k);
        }
        if acc <= 0.9 * total {
            hi = k + 1;
        }
    }
    [hz(lo.unwrap_or(0)), hz(hi.max(lo.unwrap_or(0)))]
}

/// Narrows the lags `lo..=hi` (samples) to those where at least half of the shorter
/// window overlaps the other, when some of them are: at lags where the windows
/// barely overlap, a correlation rests on a fraction of the data, with fewer blocks
/// to estimate coherence from, and its noise peaks outgrow the real ones (the
/// harness saw unrelated audio give a confident delay there on 0.5 s windows
/// searched over ±1 s). A range that lies wholly outside is searched as given.
fn within_half_overlap(lo: i64, hi: i64, ref_len: usize, rec_len: usize) -> (i64, i64) {
    // Overlap at lag τ: min(rec_len, τ + ref_len) − max(0, τ) samples.
    let half = (ref_len.min(rec_len) / 2) as i64;
    let (h_lo, h_hi) = (half - ref_len as i64, rec_len as i64 - half);
    let (n_lo, n_hi) = (lo.max(h_lo), hi.min(h_hi));
    if n_lo <= n_hi {
        (n_lo, n_hi)
    } else {
        (lo, hi)
    }
}

/// With [`DelayEstimator::with_two_stage`], recordings at least this long (samples,
/// at ≥ 16 kHz) are searched coarse to fine:
/// decimated by 4 over the whole search range first ([`Decimator`]), then at the full
/// rate over ±[`FINE_HALF_WIDTH`] samples around the coarse peak on the loudest
/// [`FINE_LEN`] samples. The coarse stage decides (detection, peak choice,
/// confidence); the fine stage only places the peak.
pub const TWO_STAGE_MIN_LEN: usize = 16_384;

/// Half width of the fine search, samples at the full rate (two coarse samples).
pub const FINE_HALF_WIDTH: i64 = 8;

/// Recording samples the fine stage uses (0.5 s at 48 kHz).
pub const FINE_LEN: usize = 24_000;

/// Below this RMS level (dBFS, DC removed) a signal is taken as silence.
pub const SILENCE_DBFS: f64 = -90.0;

impl DelayEstimator {
    /// An estimator for signals at `sample_rate` Hz.
    pub fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            gcc: GccWorkspace::new(),
            gcc_fine: GccWorkspace::new(),
            decimator: Decimator::new(),
            dec_ref: Vec::new(),
            dec_rec: Vec::new(),
            two_stage: false,
            scratch: Vec::new(),
            diagnostics: None,
        }
    }

    /// Diagnostics of the last estimate that got as far as a correlation peak.
    pub fn diagnostics(&self) -> Option<Diagnostics> {
        self.diagnostics
    }

    /// Uses `weighting` instead of the default (for comparisons).
    pub fn with_weighting(mut self, weighting: Weighting) -> Self {
        self.gcc.weighting = weighting;
        self.gcc_fine.weighting = weighting;
        self
    }

    /// Turns the coarse-to-fine search on or off (off by default). On: about half
    /// the work (for slow devices), but the harness measured worse accuracy and
    /// fewer estimates (see `docs/delay-estimation.md`), so the default is one stage
    /// at the full rate.
    pub fn with_two_stage(mut self, on: bool) -> Self {
        self.two_stage = on;
        self
    }

    /// Sample rate, Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The recording span `[r0, r1)` for the fine stage: `FINE_LEN` samples (or all)
    /// where the reference exists at lag `centre`, chosen as the loudest of a few
    /// candidate positions (measured on the decimated recording).
    fn fine_span(&self, rec_len: usize, ref_len: usize, centre: i64) -> (usize, usize) {
        let len = FINE_LEN.min(rec_len);
        // Recording n pairs with reference n − centre.
        let lo = centre.max(0) as usize;
        let hi = ((ref_len as i64 + centre).max(0) as usize).min(rec_len);
        let (lo, hi) = if hi >= lo + len {
            (lo, hi)
        } else {
            (0, rec_len)
        };
        let last = hi - len;
        let step = (len / 4).max(1);
        let mut best = (f32::MIN, lo);
        let mut p = lo;
        loop {
            let (a, b) = (p / FACTOR, ((p + len) / FACTOR).min(self.dec_rec.len()));
            let e: f32 = self.dec_rec[a.min(b)..b].iter().map(|v| v * v).sum();
            if e > best.0 {
                best = (e, p);
            }
            if p >= last {
                break;
            }
            p = (p + step).min(last);
        }
        (best.1, best.1 + len)
    }

    /// Estimates the delay of `recording` against `reference` (both mono, at the
    /// estimator's rate) within `search`.
    ///
    /// Errors: empty or non-finite input, input louder than [`MAX_LEVEL_DBFS`], a zero
    /// sample rate, or a search range that
    /// is empty, not finite, or outside the lags where the two signals overlap
    /// (`−reference.len() < lag < recording.len()`). A recording with nothing to find
    /// is not an error: it gives `delay_ms: None` with the reason.
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
        // One vectorised pass each: a NaN or an infinity makes the sums non-finite.
        let (ref_mean, ref_db) =
            mean_and_level(reference).ok_or(EstimateError::NotFinite("reference"))?;
        let (rec_mean, signal_strength_db) =
            mean_and_level(recording).ok_or(EstimateError::NotFinite("recording"))?;
        if ref_db > MAX_LEVEL_DBFS {
            return Err(EstimateError::TooLoud("reference"));
        }
        if signal_strength_db > MAX_LEVEL_DBFS {
            return Err(EstimateError::TooLoud("recording"));
        }
        if self.sample_rate == 0 {
            return Err(EstimateError::BadSearch("sample rate of 0 Hz".into()));
        }
        // Found by fuzzing (fuzz/corpus/delay/nan-beta-e1c8b7f0): β = NaN weighted
        // every bin NaN and gave `delay_ms: Some(NaN)` at full confidence.
        if let Weighting::ScotBeta(beta) = self.gcc.weighting {
            if !(0.0..=1.0).contains(&beta) {
                return Err(EstimateError::BadWeighting(format!(
                    "SCOT-β with β = {beta} (expected 0 to 1)"
                )));
            }
        }
        if !(search.min_lag_ms.is_finite() && search.max_lag_ms.is_finite())
            || search.min_lag_ms > search.max_lag_ms
        {
            return Err(EstimateError::BadSearch(format!(
                "{} to {} ms",
                search.min_lag_ms, search.max_lag_ms
            )));
        }
        let fs = self.sample_rate as f64;
        let to_samples = |ms: f64| ms * fs / 1000.0;
        let overlap_lo = -(reference.len() as i64 - 1);
        let overlap_hi = recording.len() as i64 - 1;
        let lo = (to_samples(search.min_lag_ms).floor().max(-1e15) as i64).max(overlap_lo);
        let hi = (to_samples(search.max_lag_ms).ceil().min(1e15) as i64).min(overlap_hi);
        let (lo, hi) = within_half_overlap(lo, hi, reference.len(), recording.len());
        if lo > hi {
            return Err(EstimateError::BadSearch(format!(
                "{} to {} ms is outside the lags where a {}-sample reference and a \
                 {}-sample recording overlap",
                search.min_lag_ms,
                search.max_lag_ms,
                reference.len(),
                recording.len()
            )));
        }
        self.diagnostics = None;
        let no = |reason: String, confidence: f64| DelayEstimate {
            delay_ms: None,
            confidence,
            signal_strength_db,
            reason: Some(reason),
            coarse: None,
        };
        if signal_strength_db < SILENCE_DBFS {
            return Ok(no("the recording is silent".into(), 0.0));
        }
        if ref_db < SILENCE_DBFS {
            return Ok(no("the reference is silent".into(), 0.0));
        }
        // Coarse stage: the whole windows, decimated by 4, over the whole search;
        // it decides whether there is a delay and which peak is the direct path.
        let f = FACTOR as i64;
        let two_stage = self.two_stage
            && self.sample_rate >= 16_000
            && recording.len() >= TWO_STAGE_MIN_LEN
            && reference.len() >= TWO_STAGE_MIN_LEN / 4;
        let (s_ref, s_rec, s_lo, s_hi, s_fs): (&[f32], &[f32], i64, i64, f64) = if two_stage {
            self.decimator.run(reference, ref_mean, &mut self.dec_ref);
            self.decimator.run(recording, rec_mean, &mut self.dec_rec);
            let c_lo = (lo.div_euclid(f) - 1).max(-(self.dec_ref.len() as i64 - 1));
            let c_hi = (hi.div_euclid(f) + 2).min(self.dec_rec.len() as i64 - 1);
            (
                &self.dec_ref,
                &self.dec_rec,
                c_lo,
                c_hi.max(c_lo),
                fs / f as f64,
            )
        } else {
            (reference, recording, lo, hi, fs)
        };
        let (s_ref_mean, s_rec_mean) = if two_stage {
            (0.0, 0.0)
        } else {
            (ref_mean, rec_mean)
        };
        let searched = Windows {
            reference: s_ref,
            recording: s_rec,
            ref_mean: s_ref_mean,
            rec_mean: s_rec_mean,
            sample_rate: s_fs,
        };
        let corr = self.gcc.correlate(searched, s_lo, s_hi);
        if corr.blocks_used == 0 || corr.effective_band <= 0.0 {
            return Ok(no(
                "the reference and the recording have no sound in common in time or frequency"
                    .into(),
                0.0,
            ));
        }
        let values = corr.values;
        let expected = search.expected_lag_ms.map(|ms| to_samples(ms) - lo as f64);
        let sigma = robust_sigma(values, &mut self.scratch);
        let floor = (noise_threshold_z(values.len(), corr.effective_band) * sigma) as f32;
        let window = (REFLECTION_WINDOW_MS * s_fs / 1000.0).round() as usize;
        let gate = search
            .gate_ms
            .filter(|g| g.is_finite() && *g >= 0.0)
            .map(|g| to_samples(g) / if two_stage { f as f64 } else { 1.0 });
        let hold = to_samples(EXPECTED_HOLD_MS) / if two_stage { f as f64 } else { 1.0 };
        let gated = match (expected, gate) {
            (Some(e), Some(g)) => choose_peak_within(values, e, g, hold, floor),
            _ => None,
        };
        let Some(peak) = gated.or_else(|| choose_peak(values, expected, window, floor)) else {
            return Ok(no("no correlation peak".into(), 0.0));
        };
        // With an expected lag the caller has resolved the choice between real
        // peaks; only the noise test applies.
        let rival = if expected.is_some() {
            0.0
        } else {
            rival_ratio(values, peak, window) as f64
        };
        let (lobe_start, lobe_end) = main_lobe(values, peak.index);
        let lobe_ms = (lobe_end - lobe_start) as f64 * 1000.0 / s_fs;
        let (found, others_len) = highest_other_peaks(values, (lobe_start, lobe_end), floor);
        let mut others = [OtherPeak::default(); MAX_OTHER_PEAKS];
        for (o, &(i, v)) in others.iter_mut().zip(&found[..others_len]) {
            *o = OtherPeak {
                lag_ms: (s_lo + i as i64) as f64 * 1000.0 / s_fs,
                z: v as f64 / sigma.max(f64::MIN_POSITIVE),
            };
        }
        let conf = confidence(
            peak.value as f64,
            sigma,
            values.len(),
            corr.effective_band,
            rival,
            lobe_ms,
        );
        self.diagnostics = Some(Diagnostics {
            z: conf.z,
            p_signal: conf.p_signal,
            rival: conf.rival,
            effective_band: corr.effective_band,
            blocks: corr.blocks_used,
            fft_len: corr.fft_len,
            lags: values.len(),
            peak_lag: (s_lo + peak.index as i64) * if two_stage { f } else { 1 },
            lobe_ms,
            others,
            others_len,
        });
        if conf.value < MIN_CONFIDENCE {
            let why = if conf.p_signal < MIN_CONFIDENCE {
                format!(
                    "no correlation peak stands out of the noise (peak {:.1} σ)",
                    conf.z
                )
            } else if conf.p_sharp < MIN_CONFIDENCE {
                let why = format!(
                    "the correlation peak is too broad ({:.1} ms) to place the direct path \
                     within 1 ms (too little bandwidth in common)",
                    conf.lobe_ms
                );
                let samples = |ms: f64| (ms * s_fs / 1000.0) as usize;
                let spans = (samples(EARLY_SOUND_MS), samples(REFLECTION_WINDOW_MS));
                let coarse = coarse_delay(values, peak, spans, floor).map(
                    |(index, half_width, p_unique)| {
                        let lag = s_lo as f64 + index;
                        let near = self.gcc.spectrum_near(
                            searched,
                            s_lo + peak.index as i64,
                            (s_lo, s_hi),
                        );
                        CoarseDelay {
                            delay_ms: lag * 1000.0 / s_fs,
                            uncertainty_ms: half_width * 1000.0 / s_fs,
                            band_hz: weighted_band(near.spectrum, near.fft_len, s_fs),
                            confidence: conf.p_signal * p_unique,
                        }
                    },
                );
                return Ok(DelayEstimate {
                    coarse,
                    ..no(why, conf.value)
                });
            } else {
                format!(
                    "several correlation peaks of similar height (rival at {:.0} % of the best)",
                    100.0 * conf.rival
                )
            };
            return Ok(no(why, conf.value));
        }
        let last = values.len() - 1;
        if values.len() > 1 && (peak.index == 0 || peak.index == last) {
            return Ok(no(
                "the correlation peak is at the edge of the search range: the delay may lie \
                 outside it"
                    .into(),
                0.0,
            ));
        }
        if !two_stage {
            let start = if values.len() >= 3 {
                parabolic_offset(
                    values[peak.index - 1],
                    values[peak.index],
                    values[peak.index + 1],
                )
            } else {
                0.0
            };
            let lag = lo + peak.index as i64;
            let near = self.gcc.spectrum_near(searched, lag, (lo, hi));
            let off = refine_peak(near.spectrum, near.fft_len, (lag - near.hi) as f64, start);
            return Ok(DelayEstimate {
                delay_ms: Some((lag as f64 + off) * 1000.0 / fs),
                confidence: conf.value,
                signal_strength_db,
                reason: None,
                coarse: None,
            });
        }
        // Fine stage: full rate, ±FINE_HALF_WIDTH samples around the coarse peak, on
        // the loudest FINE_LEN samples of the recording that the reference covers.
        let centre = (s_lo + peak.index as i64) * f;
        let f_lo = (centre - FINE_HALF_WIDTH).clamp(lo, hi);
        let f_hi = (centre + FINE_HALF_WIDTH).clamp(lo, hi);
        let (r0, r1) = self.fine_span(recording.len(), reference.len(), centre);
        let fine_windows = Windows {
            reference,
            recording: &recording[r0..r1],
            ref_mean,
            rec_mean,
            sample_rate: fs,
        };
        let (fine_lo, fine_hi) = (f_lo - r0 as i64, f_hi - r0 as i64);
        let fine = self.gcc_fine.correlate(fine_windows, fine_lo, fine_hi);
        let fv = fine.values;
        let (i_best, _) =
            fv.iter().enumerate().fold(
                (0usize, f32::MIN),
                |a, (i, &v)| if v > a.1 { (i, v) } else { a },
            );
        let start = if i_best > 0 && i_best + 1 < fv.len() {
            parabolic_offset(fv[i_best - 1], fv[i_best], fv[i_best + 1])
        } else {
            0.0
        };
        let lag = f_lo + i_best as i64;
        let near = self
            .gcc_fine
            .spectrum_near(fine_windows, lag - r0 as i64, (fine_lo, fine_hi));
        let off = refine_peak(
            near.spectrum,
            near.fft_len,
            (lag - r0 as i64 - near.hi) as f64,
            start,
        );
        let delay_ms = (lag as f64 + off) * 1000.0 / fs;
        Ok(DelayEstimate {
            delay_ms: Some(delay_ms),
            confidence: conf.value,
            signal_strength_db,
            reason: None,
            coarse: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_testkit::white_noise;

    #[test]
    fn finds_an_integer_delay() {
        let r = white_noise(48_000, 1, 0.3);
        let d = 480usize;
        let mut rec = vec![0.0; 48_000];
        rec[d..].copy_from_slice(&r[..48_000 - d]);
        let mut e = DelayEstimator::new(48_000);
        let est = e.estimate(&r, &rec, &LagSearch::symmetric(100.0)).unwrap();
        assert!((est.delay_ms.unwrap() - 10.0).abs() < 0.01, "{est:?}");
        assert!(est.confidence > 0.9);
    }

    /// Bass-only sound whose strongest arrival comes 25 ms after the direct path (a
    /// room mode building up): no precise estimate, a coarse one whose uncertainty
    /// holds the direct path.
    #[test]
    fn bass_only_gives_an_honest_coarse_delay() {
        let fs = 48_000usize;
        // Noise through four one-pole low-passes at ~100 Hz.
        let mut x = white_noise(3 * fs, 5, 0.5);
        let a = (-2.0 * std::f32::consts::PI * 100.0 / fs as f32).exp();
        for _ in 0..4 {
            let mut y = 0.0f32;
            for v in x.iter_mut() {
                y = a * y + (1.0 - a) * *v;
                *v = y;
            }
        }
        let n = 2 * fs;
        let (d, late) = (1_200usize, 1_200 + 1_200); // 25 ms direct, +25 ms the mode
        let reference = &x[late..late + n];
        let noise = white_noise(n, 9, 0.001);
        let rec: Vec<f32> = (0..n)
            .map(|k| 0.6 * x[late + k - d] + 1.0 * x[late + k - late] + noise[k])
            .collect();
        let mut e = DelayEstimator::new(fs as u32);
        let est = e
            .estimate(reference, &rec, &LagSearch::symmetric(200.0))
            .unwrap();
        assert_eq!(est.delay_ms, None, "{est:?}");
        let c = est.coarse.expect("a coarse estimate");
        assert!((c.delay_ms - 25.0).abs() <= c.uncertainty_ms, "{c:?}");
        assert!(c.uncertainty_ms < 60.0, "{c:?}");
        assert!(
            c.band_hz[1] < 1000.0 && c.band_hz[0] < c.band_hz[1],
            "{c:?}"
        );
    }

    #[test]
    fn unrelated_audio_gives_none() {
        let mut e = DelayEstimator::new(48_000);
        let est = e
            .estimate(
                &white_noise(48_000, 1, 0.3),
                &white_noise(48_000, 2, 0.3),
                &LagSearch::symmetric(100.0),
            )
            .unwrap();
        assert_eq!(est.delay_ms, None, "{est:?}");
    }

    /// White noise delayed by `delay` samples (fractional, circularly, through the
    /// FFT): an exact band-limited fractional delay.
    fn delayed_noise(n: usize, delay: f64, seed: u64) -> Vec<f32> {
        let mut planner = realfft::RealFftPlanner::<f64>::new();
        let fwd = planner.plan_fft_forward(n);
        let inv = planner.plan_fft_inverse(n);
        let mut x: Vec<f64> = white_noise(n, seed, 0.3)
            .iter()
            .map(|&s| s as f64)
            .collect();
        let mut spec = fwd.make_output_vec();
        fwd.process(&mut x, &mut spec).unwrap();
        for (k, c) in spec.iter_mut().enumerate() {
            let th = -std::f64::consts::TAU * k as f64 * delay / n as f64;
            *c *= realfft::num_complex::Complex64::new(th.cos(), th.sin());
        }
        spec[0].im = 0.0;
        spec[n / 2] = realfft::num_complex::Complex64::new(0.0, 0.0);
        inv.process(&mut spec, &mut x).unwrap();
        x.iter().map(|&s| (s / n as f64) as f32).collect()
    }

    #[test]
    fn fractional_delays_are_found_to_a_microsecond() {
        let mut e = DelayEstimator::new(48_000);
        let r = delayed_noise(24_000, 0.0, 3);
        for &d in &[0.0, 10.25, 37.5, 100.73, -55.4] {
            let rec = delayed_noise(24_000, d, 3);
            let est = e.estimate(&r, &rec, &LagSearch::symmetric(10.0)).unwrap();
            let got = est.delay_ms.unwrap() * 48.0;
            assert!((got - d).abs() < 0.05, "{d}: {est:?}");
        }
    }

    #[test]
    fn wide_searches_find_far_delays_to_a_microsecond() {
        // ±1 s on 2 s windows is cut into lag sub-ranges; the peak's sub-sample
        // position comes from the spectrum of a range around it.
        let mut e = DelayEstimator::new(48_000);
        let r = delayed_noise(96_000, 0.0, 5);
        for &d in &[28_800.37, -20_000.6, 3.25] {
            let rec = delayed_noise(96_000, d, 5);
            let est = e.estimate(&r, &rec, &LagSearch::symmetric(1000.0)).unwrap();
            let got = est.delay_ms.unwrap() * 48.0;
            assert!((got - d).abs() < 0.05, "{d}: {est:?}");
            assert!(
                e.diagnostics().unwrap().blocks >= 2,
                "{:?}",
                e.diagnostics()
            );
        }
    }

    #[test]
    fn lags_where_the_windows_barely_overlap_are_not_searched() {
        // 0.5 s windows, ±1 s asked: only lags where ≥ 0.25 s overlap are searched.
        assert_eq!(
            within_half_overlap(-48_000, 48_000, 24_000, 24_000),
            (-12_000, 12_000)
        );
        // The drift detector's longer reference: the range is kept as it is.
        assert_eq!(
            within_half_overlap(-2_880, 2_880, 101_760, 96_000),
            (-2_880, 2_880)
        );
        // A range wholly outside is searched as given.
        assert_eq!(
            within_half_overlap(20_000, 23_000, 24_000, 24_000),
            (20_000, 23_000)
        );
        let mut e = DelayEstimator::new(48_000);
        let r = delayed_noise(24_000, 0.0, 9);
        let rec = delayed_noise(24_000, 100.0, 9);
        e.estimate(&r, &rec, &LagSearch::symmetric(1000.0)).unwrap();
        assert_eq!(e.diagnostics().unwrap().lags, 24_001);
    }

    #[test]
    fn works_with_a_longer_reference_as_the_drift_detector_uses_it() {
        // A 3 s reference, a 2 s recording, lags searched in [0, 1000] ms; the
        // recording holds the reference 523.4 ms late (other sound before it).
        let r = white_noise(48_000 * 3, 5, 0.3);
        let other = white_noise(96_000, 6, 0.3);
        let lag = 25_123;
        let rec: Vec<f32> = (0..96_000)
            .map(|n| if n >= lag { 0.5 * r[n - lag] } else { other[n] })
            .collect();
        let mut e = DelayEstimator::new(48_000);
        let s = LagSearch {
            min_lag_ms: 0.0,
            max_lag_ms: 1000.0,
            expected_lag_ms: None,
            gate_ms: None,
        };
        let est = e.estimate(&r, &rec, &s).unwrap();
        assert!(
            (est.delay_ms.unwrap() * 48.0 - lag as f64).abs() < 0.01,
            "{est:?}"
        );
    }

    #[test]
    fn survives_dc_offset_hum_and_clipping() {
        let r = delayed_noise(48_000, 0.0, 9);
        let rec: Vec<f32> = delayed_noise(48_000, 200.6, 9)
            .iter()
            .enumerate()
            .map(|(n, &s)| {
                let hum = 0.3 * (std::f32::consts::TAU * 50.0 * n as f32 / 48_000.0).sin();
                (2.0 * s + 0.2 + hum).clamp(-0.5, 0.5)
            })
            .collect();
        let mut e = DelayEstimator::new(48_000);
        let est = e.estimate(&r, &rec, &LagSearch::symmetric(50.0)).unwrap();
        assert!(
            (est.delay_ms.unwrap() * 48.0 - 200.6).abs() < 0.2,
            "{est:?}"
        );
    }

    #[test]
    fn expected_lag_picks_the_nearby_peak_and_early_peaks_win_otherwise() {
        // Two equal copies, at 4 ms and 10 ms: earliest strong = 4 ms.
        let r = white_noise(48_000, 11, 0.3);
        let mut rec = vec![0.0f32; 48_000];
        for n in 480..48_000 {
            rec[n] += r[n - 480];
        }
        for n in 192..48_000 {
            rec[n] += r[n - 192];
        }
        let mut e = DelayEstimator::new(48_000);
        let s = LagSearch::symmetric(20.0);
        let est = e.estimate(&r, &rec, &s).unwrap();
        // Two peaks of similar height: either withheld, or the earliest.
        if let Some(d) = est.delay_ms {
            assert!((d - 4.0).abs() < 0.01, "{est:?}");
        }
        let near = LagSearch {
            expected_lag_ms: Some(9.0),
            ..s
        };
        let est = e.estimate(&r, &rec, &near).unwrap();
        assert!((est.delay_ms.unwrap() - 10.0).abs() < 0.01, "{est:?}");
    }

    #[test]
    fn silence_and_a_peak_outside_the_range_give_none() {
        let mut e = DelayEstimator::new(48_000);
        let r = white_noise(48_000, 1, 0.3);
        let est = e
            .estimate(&r, &vec![0.0; 48_000], &LagSearch::symmetric(100.0))
            .unwrap();
        assert_eq!(est.delay_ms, None);
        assert!(est.reason.unwrap().contains("silent"));
        let mut rec = vec![0.0; 48_000];
        rec[4800..].copy_from_slice(&r[..48_000 - 4800]); // 100 ms
        let est = e.estimate(&r, &rec, &LagSearch::symmetric(50.0)).unwrap();
        assert_eq!(est.delay_ms, None, "{est:?}");
    }

    #[test]
    fn samples_far_beyond_full_scale_are_an_error_not_a_nan_delay() {
        // Found by fuzzing (fuzz/corpus/delay/nan-delay-*): finite samples near 1e35
        // overflowed the f32 correlation into `delay_ms: Some(NaN)`.
        let mut e = DelayEstimator::new(48_000);
        let r = white_noise(2048, 3, 1.0e35);
        let rec: Vec<f32> = [vec![0.0; 40], r[..2008].to_vec()].concat();
        assert_eq!(
            e.estimate(&r, &rec, &LagSearch::symmetric(5.0)),
            Err(EstimateError::TooLoud("reference"))
        );
        let quiet = white_noise(2048, 4, 0.1);
        assert_eq!(
            e.estimate(&quiet, &rec, &LagSearch::symmetric(5.0)),
            Err(EstimateError::TooLoud("recording"))
        );
        // Loud but sane (+100 dBFS) still gives a finite delay.
        let loud: Vec<f32> = rec.iter().map(|v| v * 1e-30).collect();
        let r_loud: Vec<f32> = r.iter().map(|v| v * 1e-30).collect();
        let est = e
            .estimate(&r_loud, &loud, &LagSearch::symmetric(5.0))
            .unwrap();
        assert!(est.delay_ms.is_none_or(f64::is_finite), "{est:?}");
    }

    #[test]
    fn a_scot_beta_outside_0_to_1_is_an_error_not_a_nan_delay() {
        // Found by fuzzing (fuzz/corpus/delay/nan-beta-e1c8b7f0): β = NaN gave
        // `delay_ms: Some(NaN)` at confidence 1.
        let r = white_noise(4096, 5, 0.1);
        let rec: Vec<f32> = [vec![0.0; 48], r[..4048].to_vec()].concat();
        for beta in [f32::NAN, -0.1, 1.5, f32::INFINITY] {
            let mut e = DelayEstimator::new(48_000).with_weighting(Weighting::ScotBeta(beta));
            let err = e
                .estimate(&r, &rec, &LagSearch::symmetric(5.0))
                .unwrap_err();
            assert!(
                matches!(err, EstimateError::BadWeighting(_)),
                "β {beta}: {err}"
            );
        }
        let mut e = DelayEstimator::new(48_000).with_weighting(Weighting::ScotBeta(0.7));
        let est = e.estimate(&r, &rec, &LagSearch::symmetric(5.0)).unwrap();
        let d = est.delay_ms.expect("a delay with β = 0.7");
        assert!((d - 1.0).abs() < 0.05, "{est:?}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut e = DelayEstimator::new(48_000);
        assert_eq!(
            e.estimate(&[], &[1.0], &LagSearch::symmetric(1.0)),
            Err(EstimateError::Empty("reference"))
        );
        assert_eq!(
            e.estimate(&[1.0], &[0.5, f32::NAN], &LagSearch::symmetric(1.0)),
            Err(EstimateError::NotFinite("recording"))
        );
        assert_eq!(
            e.estimate(&[1.0], &[], &LagSearch::symmetric(1.0)),
            Err(EstimateError::Empty("recording"))
        );
        assert!(matches!(
            e.estimate(&[1.0, 2.0], &[1.0, 0.0], &LagSearch::symmetric(f64::NAN)),
            Err(EstimateError::BadSearch(_))
        ));
        let far = LagSearch {
            min_lag_ms: 1000.0,
            max_lag_ms: 2000.0,
            expected_lag_ms: None,
            gate_ms: None,
        };
        assert!(matches!(
            e.estimate(&[1.0; 480], &[1.0; 480], &far),
            Err(EstimateError::BadSearch(_))
        ));
        assert_eq!(
            e.estimate(&[1.0, f32::INFINITY], &[1.0], &LagSearch::symmetric(1.0)),
            Err(EstimateError::NotFinite("reference"))
        );
        // Huge but finite samples overflow f32 sums; they are not "not finite".
        let huge = vec![3e37f32; 4800];
        assert!(e.estimate(&huge, &huge, &LagSearch::symmetric(1.0)).is_ok());
        // Tiny inputs do not panic.
        for n in 1..5 {
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let _ = e.estimate(&x, &x, &LagSearch::symmetric(1.0)).unwrap();
        }
        let _ = DelayEstimator::new(0).estimate(&[1.0], &[1.0], &LagSearch::symmetric(1.0));
    }
}
