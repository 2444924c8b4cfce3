//! Generalized cross-correlation over a restricted lag range, block by block, with
//! the SCOT weighting on block-averaged spectra.
//!
//! # What is computed
//!
//! For lags `τ ∈ [lo, hi]` (samples; positive when the recording lags the reference)
//! the recording is cut into `K` blocks of `B` samples. Block `k` is correlated with
//! the part of the reference it can overlap at those lags (`B + W − 1` samples, with
//! `W = hi − lo + 1`), both zero-padded to an FFT of `N ≥ B + W − 1` points, so the
//! correlation of every block is exactly linear (no circular wrap) over the lag
//! range. Recording blocks are tapered at their ends (see [`TAPER_DIVISOR`]). The
//! per-block spectra are accumulated into
//!
//! * the cross-spectrum `G_xy(f) = Σ_k Y_k(f)·X_k*(f)`,
//! * the auto-spectra `S_xx(f) = Σ_k |X_k(f)|²` and `S_yy(f) = Σ_k |Y_k(f)|²`,
//!
//! and the generalized correlation is the inverse FFT of
//! `Ψ(f) = m(f) · G_xy(f) / √(S_xx(f)·S_yy(f))`.
//!
//! # Why this weighting
//!
//! `G_xy/√(S_xx S_yy)` is the smoothed coherence transform (SCOT; Carter, Nuttall and
//! Cable, "The smoothed coherence transform", Proc. IEEE 61(10), 1973). With one block
//! it is exactly PHAT (Knapp and Carter, "The generalized correlation method for
//! estimation of time delay", IEEE Trans. ASSP 24(4), 1976): every frequency gets
//! unit weight, so the peak is as sharp as the band allows and reverberation's
//! spectral colouring is removed. With several blocks the magnitude of `Ψ` is the
//! estimated coherence `|γ(f)|`, which is near 1 where the recording is the
//! reference seen through the room and near `1/√K` where it is noise, mains hum or
//! a TV the reference does not contain. PHAT gives those bins full weight, which is
//! where it fails at low SNR; SCOT keeps PHAT's whitening where the signal is and
//! fades the rest out, without a tuned SNR model. `m(f)` is a band mask: bins
//! below [`MIN_FREQ_HZ`] (DC offset, drift, rumble) and bins where the reference has
//! practically no energy ([`REF_FLOOR_DB`] below its mean, e.g. above
//! 4 kHz for telephone speech) are set to zero, since they can only carry noise.
//!
//! # Cost
//!
//! `2K + 1` real FFTs of `N` points. [`plan_blocks`] picks `N` (a power of two) and
//! `K` to minimise `(2K + 1)·N·log₂N` while keeping `K ≥ 4` when the recording is long
//! enough, so the coherence estimate means something. A narrow search (the receiver's
//! tracking window, ±50 ms) therefore costs far less than one FFT over the whole
//! signals.
//!
//! # Wide searches: lag sub-ranges
//!
//! A block must be shorter than `N − W + 1`, so a lag range nearly as wide as the
//! recording (the command's default ±1 s on a 2 s window) leaves room for one or two
//! blocks, and with one block SCOT degenerates into PHAT, which the evaluation
//! harness found wrong more often in hard rooms and with a second speaker. Such a
//! range is cut into `S` equal sub-ranges ([`plan_subranges`]), each correlated on its
//! own with at least [`MIN_BLOCKS`] blocks, and their values are put side by side,
//! each divided by its own robust noise scale (1.4826 × median |value|): where the
//! windows overlap less, fewer blocks carry signal and the noise is higher, and
//! without this that sub-range's noise peaks would outgrow the others. This costs about `S·(2K + 1)` FFTs instead of three, and only applies
//! where one pass cannot have enough blocks.

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::confidence::robust_sigma;

/// Frequencies below this are ignored (DC offset, slow drift, rumble), Hz.
pub const MIN_FREQ_HZ: f64 = 20.0;

/// Bins where the reference's accumulated power is more than this far below its
/// mean power per bin are ignored, dB. Such bins hold no programme, only leakage of
/// the block edges and the reference's own processing residue (resampler images,
/// codec noise), whose structure whitening would otherwise amplify into false
/// peaks.
pub const REF_FLOOR_DB: f64 = 40.0;

/// The preferred minimum number of blocks (so that coherence can be estimated).
pub const MIN_BLOCKS: usize = 4;

/// Each recording block is tapered (raised cosine) over `1/TAPER_DIVISOR` of its
/// length at both ends. Without it the hard edges of the block (and of the windows
/// themselves, which start at the same instant) leak into every frequency, PHAT
/// whitening makes that leakage as loud as the signal, and the edges correlate into
/// false peaks at lag 0 and at the ends of the search range. Tapering one side of
/// the product is enough to remove that coherence.
const TAPER_DIVISOR: usize = 8;

/// Smallest block length worth splitting the recording into, samples.
const MIN_BLOCK_LEN: usize = 1024;

/// Largest bias-corrected squared coherence the ML weighting uses (caps `γ²/(1 − γ²)`
/// at 99).
pub const ML_MAX_COHERENCE: f32 = 0.99;

/// Frequency weighting of the cross-spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Weighting {
    /// Phase transform: unit magnitude in every kept bin (Knapp and Carter, 1976).
    Phat,
    /// Smoothed coherence transform: magnitude = estimated coherence `|γ|`.
    #[default]
    Scot,
    /// Partial whitening, `G_xy/(S_xx S_yy)^(β/2)` (the PHAT-β of Donohue, Hannemann
    /// and Dietz, 2007, on block-averaged spectra).
    ScotBeta(f32),
    /// Maximum-likelihood (Hannan–Thomson) weighting: magnitude `γ²/(1 − γ²)` with the
    /// coherence's `1/K` bias removed, so bins at the noise level get nothing.
    Ml,
}

/// How a correlation over `width` lags on a recording span of `len` samples is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPlan {
    /// FFT length, a power of two.
    pub fft_len: usize,
    /// Recording samples per block (the last block may be shorter).
    pub block_len: usize,
    /// Number of blocks.
    pub blocks: usize,
}

/// Chooses the FFT length and block count for a correlation over `width ≥ 1` lags of
/// a recording span of `len ≥ 1` samples (see the module docs).
pub fn plan_blocks(len: usize, width: usize) -> BlockPlan {
    let len = len.max(1);
    let width = width.max(1);
    let mut best: Option<(f64, bool, BlockPlan)> = None;
    let mut n = (width + 63).next_power_of_two().max(64);
    loop {
        let max_block = n + 1 - width;
        let blocks = len.div_ceil(max_block);
        let block_len = len.div_ceil(blocks);
        let cost = (2 * blocks + 1) as f64 * n as f64 * (n as f64).log2();
        let plan = BlockPlan {
            fft_len: n,
            block_len,
            blocks,
        };
        let enough = has_enough_blocks(&plan);
        let better = match &best {
            None => true,
            Some((c, e, _)) => (enough && !e) || (enough == *e && cost < *c),
        };
        if better {
            best = Some((cost, enough, plan));
        }
        if blocks == 1 {
            break;
        }
        n *= 2;
    }
    best.expect("at least one candidate").2
}

/// Whether a plan has enough blocks for a coherence estimate.
fn has_enough_blocks(plan: &BlockPlan) -> bool {
    plan.blocks >= MIN_BLOCKS && plan.block_len >= MIN_BLOCK_LEN
}

/// The number `S ≥ 1` of equal lag sub-ranges to cut a search over `width` lags of a
/// recording span of `len` samples into, so that each is correlated with at least
/// [`MIN_BLOCKS`] blocks (see the module docs): 1 when one pass already has them,
/// and 1 when no split could give them (a recording shorter than
/// `MIN_BLOCKS × 1024` samples).
pub fn plan_subranges(len: usize, width: usize) -> usize {
    let width = width.max(1);
    if has_enough_blocks(&plan_blocks(len, width)) {
        return 1;
    }
    (2..=width.min(64))
        .find(|&s| has_enough_blocks(&plan_blocks(len, width.div_ceil(s))))
        .unwrap_or(1)
}

/// Multiplies the first and last `taper` samples of `x` by a raised cosine (Tukey
/// window ends). `tables` caches the ramps of the last two lengths used (a
/// correlation uses two: its full blocks and its last, shorter one), so that steady
/// use computes no cosines.
fn apply_taper(x: &mut [f32], taper: usize, tables: &mut [Vec<f32>; 2]) {
    let taper = taper.min(x.len() / 2);
    if taper == 0 {
        return;
    }
    if tables[0].len() != taper {
        tables.swap(0, 1);
    }
    if tables[0].len() != taper {
        let table = &mut tables[0];
        table.clear();
        table.extend((0..taper).map(|i| {
            let a = std::f64::consts::PI * (i as f64 + 0.5) / taper as f64;
            (0.5 - 0.5 * a.cos()) as f32
        }));
    }
    let n = x.len();
    for (i, &w) in tables[0].iter().enumerate() {
        x[i] *= w;
        x[n - 1 - i] *= w;
    }
}

/// `Σ x²`, in 16 independent lanes so that it vectorises.
pub fn energy(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let tail: f32 = it.remainder().iter().map(|v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// The weighted correlation of one estimate, valid until the next call.
pub struct Correlation<'a> {
    /// `values[i]` is the correlation at lag `lo + i` samples.
    pub values: &'a [f32],
    /// Number of blocks that had signal in both inputs (the fewest of any
    /// sub-range).
    pub blocks_used: usize,
    /// Effective share of the bins that carry weight, 0..=1
    /// (`(Σ|Ψ|)² / (bins·Σ|Ψ|²)`; the mean over the sub-ranges).
    pub effective_band: f64,
    /// FFT length `N` (the same for every sub-range).
    pub fft_len: usize,
}

/// The weighted cross-spectrum of one lag range, for evaluating the correlation at
/// fractional lags ([`GccWorkspace::spectrum_near`]).
pub struct RangeSpectrum<'a> {
    /// `Ψ`, `N/2 + 1` bins: the correlation at a (fractional) lag `τ` in the range is
    /// `Σ_f Re(Ψ(f)·e^{j2πf(τ − hi)/N})` over the full spectrum.
    pub spectrum: &'a [Complex32],
    /// FFT length `N`.
    pub fft_len: usize,
    /// The range's highest lag `hi`, samples.
    pub hi: i64,
}

/// The two windows of one correlation: the reference and the recording (mono
/// samples starting at the same instant), the means to subtract from them (DC
/// removal without copying them), and their sample rate, Hz.
#[derive(Debug, Clone, Copy)]
pub struct Windows<'a> {
    /// Reference samples.
    pub reference: &'a [f32],
    /// Recording samples.
    pub recording: &'a [f32],
    /// Subtracted from every reference sample.
    pub ref_mean: f32,
    /// Subtracted from every recording sample.
    pub rec_mean: f32,
    /// Sample rate of both, Hz.
    pub sample_rate: f64,
}

/// What one pass over a lag range left in the workspace.
#[derive(Debug, Clone, Copy)]
struct RangePass {
    lo: i64,
    hi: i64,
    fft_len: usize,
    sum_w: f64,
    sum_w2: f64,
    bins: usize,
    blocks_used: usize,
}

/// Reusable workspace: FFT plans and every buffer of the correlation. Reallocates
/// only when the FFT length or lag width changes.
pub struct GccWorkspace {
    /// The weighting in use.
    pub weighting: Weighting,
    planner: RealFftPlanner<f32>,
    fft_len: usize,
    fwd: Option<Arc<dyn RealToComplex<f32>>>,
    inv: Option<Arc<dyn ComplexToReal<f32>>>,
    scratch: Vec<Complex32>,
    time: Vec<f32>,
    spec_x: Vec<Complex32>,
    spec_y: Vec<Complex32>,
    gxy: Vec<Complex32>,
    sxx: Vec<f32>,
    syy: Vec<f32>,
    psi: Vec<Complex32>,
    spec_tmp: Vec<Complex32>,
    lags: Vec<f32>,
    taper_y: [Vec<f32>; 2],
    taper_x: [Vec<f32>; 2],
    lags_scratch: Vec<f32>,
    last_pass: Option<RangePass>,
}

impl Default for GccWorkspace {
    fn default() -> Self {
        Self::new()
    }
}

impl GccWorkspace {
    /// An empty workspace (buffers are made on first use).
    pub fn new() -> Self {
        Self {
            weighting: Weighting::default(),
            planner: RealFftPlanner::new(),
            fft_len: 0,
            fwd: None,
            inv: None,
            scratch: Vec::new(),
            time: Vec::new(),
            spec_x: Vec::new(),
            spec_y: Vec::new(),
            gxy: Vec::new(),
            sxx: Vec::new(),
            syy: Vec::new(),
            psi: Vec::new(),
            spec_tmp: Vec::new(),
            lags: Vec::new(),
            taper_y: [Vec::new(), Vec::new()],
            taper_x: [Vec::new(), Vec::new()],
            lags_scratch: Vec::new(),
            last_pass: None,
        }
    }

    fn ensure_fft(&mut self, n: usize) {
        if self.fft_len != n {
            let fwd = self.planner.plan_fft_forward(n);
            let inv = self.planner.plan_fft_inverse(n);
            let scratch_len = fwd.get_scratch_len().max(inv.get_scratch_len());
            self.scratch = vec![Complex32::default(); scratch_len];
            self.time = vec![0.0; n];
            let bins = n / 2 + 1;
            self.spec_x = vec![Complex32::default(); bins];
            self.spec_y = vec![Complex32::default(); bins];
            self.gxy = vec![Complex32::default(); bins];
            self.sxx = vec![0.0; bins];
            self.syy = vec![0.0; bins];
            self.psi = vec![Complex32::default(); bins];
            self.spec_tmp = vec![Complex32::default(); bins];
            self.fwd = Some(fwd);
            self.inv = Some(inv);
            self.fft_len = n;
        }
    }

    /// Computes the weighted correlation of the recording against the reference for
    /// lags `lo..=hi` (samples), in [`plan_subranges`] sub-ranges when the range is
    /// too wide for enough blocks in one pass. Requires `lo ≤ hi`, non-empty windows
    /// and a lag range where they overlap; the caller checks this. For fractional
    /// lags, [`Self::spectrum_near`] gives the spectrum to use.
    pub fn correlate(&mut self, inputs: Windows, lo: i64, hi: i64) -> Correlation<'_> {
        let width = (hi - lo + 1) as usize;
        self.lags.resize(width, 0.0);
        let Windows {
            reference,
            recording,
            ..
        } = inputs;
        let subranges = plan_subranges(span(reference, recording, lo, hi), width);
        let sub_width = width.div_ceil(subranges) as i64;
        // One FFT length for every sub-range (the largest any of them plans), so
        // that nothing is re-planned or reallocated between them.
        let sub = |i: usize| {
            let s_lo = lo + i as i64 * sub_width;
            (s_lo, (s_lo + sub_width - 1).min(hi))
        };
        let n = (0..subranges)
            .map(|i| range_plan(reference, recording, sub(i)).fft_len)
            .max()
            .unwrap_or(64);
        let (mut blocks_used, mut band) = (usize::MAX, 0.0);
        for i in 0..subranges {
            let (s_lo, s_hi) = sub(i);
            let w = (s_hi - s_lo + 1) as usize;
            let plan = BlockPlan {
                fft_len: n,
                ..range_plan(reference, recording, (s_lo, s_hi))
            };
            let pass = self.pass(inputs, (s_lo, s_hi), plan, (s_lo - lo) as usize);
            blocks_used = blocks_used.min(pass.blocks_used);
            band += pass.effective_band() / subranges as f64;
            if subranges > 1 {
                // In units of the sub-range's own noise scale: sub-ranges where the
                // windows overlap less have fewer blocks and a higher noise level,
                // which would otherwise raise false peaks above the others.
                let off = (s_lo - lo) as usize;
                let values = &mut self.lags[off..off + w];
                let sigma = robust_sigma(values, &mut self.lags_scratch) as f32;
                if sigma > 0.0 {
                    values.iter_mut().for_each(|v| *v /= sigma);
                }
            }
        }
        Correlation {
            values: &self.lags,
            blocks_used,
            effective_band: band,
            fft_len: n,
        }
    }

    /// The weighted cross-spectrum of a lag range within `lo..=hi` that holds `lag`
    /// at least one sample inside its ends, for the band-limited refinement of a
    /// peak at `lag`: the last pass of [`Self::correlate`] when it holds it (always,
    /// for a search done in one pass), otherwise a range of the same width centred
    /// on `lag`, correlated again. [`Self::correlate`] must have run on the same
    /// windows and range.
    pub fn spectrum_near(
        &mut self,
        inputs: Windows,
        lag: i64,
        (lo, hi): (i64, i64),
    ) -> RangeSpectrum<'_> {
        let last = self.last_pass.expect("correlate ran first");
        let inside = |p: &RangePass| (p.lo < lag || p.lo == lo) && (lag < p.hi || p.hi == hi);
        if !inside(&last) {
            let w = last.hi - last.lo;
            let s_lo = (lag - w / 2).clamp(lo, (hi - w).max(lo));
            let s_hi = (s_lo + w).min(hi);
            let plan = BlockPlan {
                fft_len: last.fft_len,
                ..range_plan(inputs.reference, inputs.recording, (s_lo, s_hi))
            };
            // Values go to a scratch buffer so that the correlation stays as it was.
            self.lags_scratch.resize((s_hi - s_lo + 1) as usize, 0.0);
            std::mem::swap(&mut self.lags, &mut self.lags_scratch);
            self.pass(inputs, (s_lo, s_hi), plan, 0);
            std::mem::swap(&mut self.lags, &mut self.lags_scratch);
        }
        let p = self.last_pass.expect("a pass ran");
        RangeSpectrum {
            spectrum: &self.psi,
            fft_len: p.fft_len,
            hi: p.hi,
        }
    }

    /// One pass of the block correlation over lags `lo..=hi` with `plan`: leaves `Ψ`
    /// in `self.psi` and writes the values to `self.lags[out..out + hi − lo + 1]`.
    fn pass(
        &mut self,
        inputs: Windows,
        (lo, hi): (i64, i64),
        plan: BlockPlan,
        out: usize,
    ) -> RangePass {
        let Windows {
            reference,
            recording,
            ref_mean,
            rec_mean,
            sample_rate,
        } = inputs;
        let width = (hi - lo + 1) as usize;
        let rec_start = lo.max(0) as usize;
        let rec_end = ((hi + reference.len() as i64).min(recording.len() as i64)).max(0) as usize;
        let n = plan.fft_len;
        self.ensure_fft(n);
        let fwd = self.fwd.clone().expect("planned");
        let inv = self.inv.clone().expect("planned");
        self.gxy.fill(Complex32::default());
        self.sxx.fill(0.0);
        self.syy.fill(0.0);
        let mut blocks_used = 0;
        let mut start = rec_start;
        while start < rec_end {
            let end = (start + plan.block_len).min(rec_end);
            // Recording block, tapered at both ends, zero-padded.
            let len = end - start;
            let e_y = {
                let t = &mut self.time[..len];
                for (t, &s) in t.iter_mut().zip(&recording[start..end]) {
                    *t = s - rec_mean;
                }
                apply_taper(t, (len / TAPER_DIVISOR).max(1), &mut self.taper_y);
                energy(t)
            };
            self.time[len..].fill(0.0);
            let _ = fwd.process_with_scratch(&mut self.time, &mut self.spec_y, &mut self.scratch);
            // Reference segment: ref[start − hi + i] for i in 0..(end − start + width − 1),
            // zero outside the reference. The ends of the part inside it are tapered
            // too, over a shorter length (that only weighs the extreme lags down a
            // little).
            let seg_len = end - start + width - 1;
            let seg_start = start as i64 - hi;
            let a = (-seg_start).clamp(0, seg_len as i64) as usize;
            let b = (reference.len() as i64 - seg_start).clamp(a as i64, seg_len as i64) as usize;
            self.time[..a].fill(0.0);
            self.time[b..].fill(0.0);
            let e_x = {
                let j0 = (seg_start + a as i64) as usize;
                let t = &mut self.time[a..b];
                for (t, &s) in t.iter_mut().zip(&reference[j0..j0 + (b - a)]) {
                    *t = s - ref_mean;
                }
                apply_taper(t, (seg_len / (2 * TAPER_DIVISOR)).max(1), &mut self.taper_x);
                energy(t)
            };
            start = end;
            if e_x <= 0.0 || e_y <= 0.0 {
                continue;
            }
            let _ = fwd.process_with_scratch(&mut self.time, &mut self.spec_x, &mut self.scratch);
            for ((((g, sx), sy), x), y) in self
                .gxy
                .iter_mut()
                .zip(self.sxx.iter_mut())
                .zip(self.syy.iter_mut())
                .zip(&self.spec_x)
                .zip(&self.spec_y)
            {
                g.re += y.re * x.re + y.im * x.im;
                g.im += y.im * x.re - y.re * x.im;
                *sx += x.re * x.re + x.im * x.im;
                *sy += y.re * y.re + y.im * y.im;
            }
            blocks_used += 1;
        }
        // Weighting: band mask, then SCOT.
        let bins = self.gxy.len();
        let k_min = ((MIN_FREQ_HZ * n as f64 / sample_rate).ceil() as usize).max(1);
        let mean_sxx = self.sxx.iter().skip(k_min).map(|&v| v as f64).sum::<f64>()
            / (bins - k_min.min(bins - 1)) as f64;
        let max_sxx = mean_sxx as f32;
        let floor = (mean_sxx * 10f64.powf(-REF_FLOOR_DB / 10.0)) as f32;
        let (mut sum_w, mut sum_w2) = (0.0f64, 0.0f64);
        let kb = blocks_used as f32;
        let weighting = self.weighting;
        // Per bin: the band mask, then the weighting; sums of |Ψ| and |Ψ|² in f32
        // per chunk (so that the common SCOT path vectorises), chunks summed in f64.
        let weigh = |k: usize, g: Complex32, sx: f32, sy: f32| -> Complex32 {
            let d = (sx * sy).sqrt();
            let keep = k >= k_min && sx > floor && d > 0.0 && max_sxx > 0.0;
            if !keep {
                return Complex32::default();
            }
            let scot = g / d;
            match weighting {
                Weighting::Phat => scot / scot.norm_sqr().sqrt().max(1e-30),
                Weighting::Scot => scot,
                Weighting::ScotBeta(beta) => {
                    // |G_xy| / (S_xx S_yy)^(β/2): SCOT for β = 1, plain
                    // cross-correlation for β = 0.
                    g / d.powf(beta).max(1e-30)
                }
                Weighting::Ml if blocks_used >= 2 => {
                    // Coherence with its 1/K bias removed, then γ²/(1 − γ²).
                    let g2 = scot.norm_sqr();
                    let g2c = ((kb * g2 - 1.0) / (kb - 1.0)).clamp(0.0, ML_MAX_COHERENCE);
                    scot / scot.norm_sqr().sqrt().max(1e-30) * (g2c / (1.0 - g2c))
                }
                Weighting::Ml => scot,
            }
        };
        const CHUNK: usize = 1024;
        for c0 in (0..bins).step_by(CHUNK) {
            let c1 = (c0 + CHUNK).min(bins);
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for ((((k, psi), &g), &sx), &sy) in (c0..c1)
                .zip(&mut self.psi[c0..c1])
                .zip(&self.gxy[c0..c1])
                .zip(&self.sxx[c0..c1])
                .zip(&self.syy[c0..c1])
            {
                let w = weigh(k, g, sx, sy);
                let m2 = w.norm_sqr();
                s1 += m2.sqrt();
                s2 += m2;
                *psi = w;
            }
            sum_w += s1 as f64;
            sum_w2 += s2 as f64;
        }
        // Real signal: the Nyquist bin's imaginary part must be zero.
        self.psi[bins - 1].im = 0.0;
        self.psi[0].im = 0.0;
        self.spec_tmp.copy_from_slice(&self.psi);
        let _ = inv.process_with_scratch(&mut self.spec_tmp, &mut self.time, &mut self.scratch);
        // Lag τ = lo + i sits at index (τ − hi) mod N.
        let scale = 1.0 / n as f32;
        // Consecutive lags are consecutive indices, wrapping at N at most once
        // (the lag range is narrower than N).
        let m0 = (lo - hi).rem_euclid(n as i64) as usize;
        let first = (n - m0).min(width);
        let lags = &mut self.lags[out..out + width];
        for (v, &t) in lags[..first].iter_mut().zip(&self.time[m0..]) {
            *v = t * scale;
        }
        for (v, &t) in lags[first..].iter_mut().zip(&self.time) {
            *v = t * scale;
        }
        let pass = RangePass {
            lo,
            hi,
            fft_len: n,
            sum_w,
            sum_w2,
            bins,
            blocks_used,
        };
        self.last_pass = Some(pass);
        pass
    }
}

impl RangePass {
    /// Effective share of the bins that carried weight, 0..=1.
    fn effective_band(&self) -> f64 {
        if self.sum_w2 > 0.0 {
            (self.sum_w * self.sum_w / (self.bins as f64 * self.sum_w2)).min(1.0)
        } else {
            0.0
        }
    }
}

/// The block plan for correlating over lags `lo..=hi` alone.
fn range_plan(reference: &[f32], recording: &[f32], (lo, hi): (i64, i64)) -> BlockPlan {
    plan_blocks(span(reference, recording, lo, hi), (hi - lo + 1) as usize)
}

/// Recording samples that can overlap a reference of `reference.len()` samples at
/// some lag in `lo..=hi` (`n − τ ∈ [0, len_ref)`), at least 1.
fn span(reference: &[f32], recording: &[f32], lo: i64, hi: i64) -> usize {
    let rec_start = lo.max(0);
    let rec_end = (hi + reference.len() as i64).min(recording.len() as i64);
    (rec_end - rec_start).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_keep_blocks_exact_and_cheap() {
        for &(len, width) in &[
            (96_000usize, 4_801usize),
            (24_000, 4_801),
            (96_000, 48_001),
            (96_000, 96_001),
            (10, 3),
            (1, 1),
        ] {
            let p = plan_blocks(len, width);
            assert!(p.fft_len.is_power_of_two());
            assert!(p.block_len + width - 1 <= p.fft_len, "{p:?}");
            assert!(p.blocks * p.block_len >= len, "{p:?}");
        }
        // The tracking window (±50 ms at 48 kHz, 2 s) uses several small FFTs.
        let p = plan_blocks(96_000, 4_801);
        assert!(p.blocks >= MIN_BLOCKS && p.fft_len <= 32_768, "{p:?}");
    }

    #[test]
    fn wide_searches_are_cut_into_sub_ranges_with_enough_blocks() {
        assert_eq!(plan_subranges(96_000, 4_801), 1);
        assert_eq!(plan_subranges(96_000, 48_001), 1);
        for &(len, width) in &[(96_000usize, 96_001usize), (24_000, 24_001)] {
            let s = plan_subranges(len, width);
            assert!(s > 1, "{len} {width}");
            assert!(has_enough_blocks(&plan_blocks(len, width.div_ceil(s))));
            assert!(!has_enough_blocks(&plan_blocks(len, width.div_ceil(s - 1))));
        }
        // Too short for MIN_BLOCKS blocks of 1024 samples whatever the split.
        assert_eq!(plan_subranges(3_000, 2_001), 1);
    }

    #[test]
    fn correlation_is_linear_over_the_lag_range() {
        // A single impulse in the reference at 100 and in the recording at 130:
        // delay 30 samples, at the right lag whatever the blocking.
        let mut r = vec![0.0f32; 4000];
        let mut y = vec![0.0f32; 4000];
        for k in 0..40 {
            r[100 + 90 * k] = 1.0;
            y[130 + 90 * k] = 0.5;
        }
        let mut ws = GccWorkspace::new();
        let windows = Windows {
            reference: &r,
            recording: &y,
            ref_mean: 0.0,
            rec_mean: 0.0,
            sample_rate: 48_000.0,
        };
        let c = ws.correlate(windows, -40, 40);
        let (imax, _) = c
            .values
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        assert_eq!(imax as i64 - 40, 30);
    }
}
