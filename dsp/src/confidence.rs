//! How much to trust a correlation peak.
//!
//! Three ways an estimate goes wrong, and one factor for each:
//!
//! 1. **The peak is noise** (silence, unrelated audio, too much noise). Away from a
//!    true delay the whitened correlation is close to Gaussian with zero mean; its
//!    scale `σ` is estimated robustly from the median absolute value over the
//!    searched lags (so that real peaks do not inflate it). The chance that the
//!    largest of `M` independent noise lags reaches the peak's `z = peak/σ` is at
//!    most `M·Q(z)` (union bound), `Q` the Gaussian tail. `M` is the number of lags
//!    times the effective share of the band (lags closer than `1/bandwidth` are not
//!    independent). `p_noise = 1 − min(1, M·Q(z))`.
//! 2. **The peak is real but the wrong one** (a reflection or another loudspeaker
//!    nearly as strong). With `ρ` the height of the best rival peak outside the
//!    chosen main lobe relative to the chosen one, `p_unique` falls linearly from 1
//!    at `ρ ≤` [`RIVAL_LOW`] to 0 at `ρ ≥` [`RIVAL_HIGH`].
//!
//! 3. **The peak is too blunt** to place the direct path within 1 ms (narrow-band
//!    content such as bass only, where reflections merge into the main lobe):
//!    `p_sharp` falls linearly from 1 at a half-height width of [`LOBE_OK_MS`] to 0
//!    at [`LOBE_MAX_MS`].
//!
//! The confidence is `p_noise · p_unique · p_sharp`, and an estimate is returned only when it
//! reaches [`MIN_CONFIDENCE`]. The constants come from the Gaussian model, not from
//! fitting test clips; the evaluation harness (`tools/eval_delay`) checks the
//! calibration: see `docs/delay-estimation.md` for the observed share of correct
//! estimates per confidence band.

/// Estimates below this confidence are not returned.
pub const MIN_CONFIDENCE: f64 = 0.5;

/// Rival/chosen peak ratio up to which the choice is taken as unambiguous.
pub const RIVAL_LOW: f64 = 0.75;

/// Rival/chosen peak ratio from which the choice is a coin toss (confidence 0).
pub const RIVAL_HIGH: f64 = 0.95;

/// A main lobe up to this wide at half height is sharp enough, ms.
pub const LOBE_OK_MS: f64 = 0.5;

/// A main lobe this wide at half height or wider gives no estimate, ms: the
/// estimate promises 1 ms, and a lobe that wide merges the direct path with the
/// reflections of the first metre or so (what happens with bass-only content in a
/// reverberant room), so where its top lies says little about the direct path.
pub const LOBE_MAX_MS: f64 = 1.0;

/// Safety margin on the noise model: the union bound is applied to this many
/// times more lags than counted, for correlated, non-Gaussian real-world noise.
pub const LAG_COUNT_MARGIN: f64 = 10.0;

/// Gaussian upper tail probability `Q(z) = P(N(0,1) > z)`.
///
/// For `z ≤ 3` the rational approximation of Abramowitz and Stegun 26.2.17 (absolute
/// error < 7.5e-8); above, the asymptotic series `φ(z)/z·(1 − 1/z² + 3/z⁴ − 15/z⁶)`
/// (relative error < 2 % at `z = 3`, falling fast), which keeps its relative
/// accuracy in the far tail where the union bound needs it.
pub fn gaussian_tail(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    if z < 0.0 {
        return 1.0 - gaussian_tail(-z);
    }
    let phi = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    if z <= 3.0 {
        let t = 1.0 / (1.0 + 0.231_641_9 * z);
        let poly = t
            * (0.319_381_530
                + t * (-0.356_563_782
                    + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
        phi * poly
    } else {
        let z2 = z * z;
        phi / z * (1.0 - 1.0 / z2 + 3.0 / (z2 * z2) - 15.0 / (z2 * z2 * z2))
    }
}

/// Robust noise scale of a correlation: `1.4826 × median(|v|)`. Uses `scratch`
/// (resized to `values.len()`, no allocation once large enough).
pub fn robust_sigma(values: &[f32], scratch: &mut Vec<f32>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    scratch.clear();
    scratch.extend(values.iter().map(|v| v.abs()));
    let mid = scratch.len() / 2;
    let (_, m, _) = scratch.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    1.4826 * *m as f64
}

/// The parts of a confidence, for reporting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    /// Peak height over the robust noise scale.
    pub z: f64,
    /// Probability that the peak is not noise, 0..=1.
    pub p_signal: f64,
    /// Rival/chosen peak height ratio.
    pub rival: f64,
    /// Probability that the chosen peak is the right one among real peaks, 0..=1.
    pub p_unique: f64,
    /// Width of the chosen main lobe at half height, ms.
    pub lobe_ms: f64,
    /// 1 for a sharp peak, falling to 0 for a lobe [`LOBE_MAX_MS`] wide.
    pub p_sharp: f64,
    /// `p_signal · p_unique · p_sharp`.
    pub value: f64,
}

/// The peak height over `σ` at which [`confidence`]'s noise factor is 1/2 for
/// `lags` lags with band share `band`: the least height a peak needs to count.
pub fn noise_threshold_z(lags: usize, band: f64) -> f64 {
    let m = (lags as f64 * band.clamp(0.0, 1.0)).max(1.0) * LAG_COUNT_MARGIN;
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if m * gaussian_tail(mid) > 0.5 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Confidence of a peak `peak` over noise scale `sigma` among `lags` searched lags
/// with effective band share `band` (0..=1), with a rival ratio `rival` and a main
/// lobe `lobe_ms` wide at half height.
pub fn confidence(
    peak: f64,
    sigma: f64,
    lags: usize,
    band: f64,
    rival: f64,
    lobe_ms: f64,
) -> Confidence {
    let z = if sigma > 0.0 { peak / sigma } else { 0.0 };
    let m = (lags as f64 * band.clamp(0.0, 1.0)).max(1.0) * LAG_COUNT_MARGIN;
    let p_signal = if z > 0.0 && z.is_finite() {
        (1.0 - m * gaussian_tail(z)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let p_unique = ((RIVAL_HIGH - rival) / (RIVAL_HIGH - RIVAL_LOW)).clamp(0.0, 1.0);
    let p_sharp = ((LOBE_MAX_MS - lobe_ms) / (LOBE_MAX_MS - LOBE_OK_MS)).clamp(0.0, 1.0);
    Confidence {
        z,
        p_signal,
        rival,
        p_unique,
        lobe_ms,
        p_sharp,
        value: p_signal * p_unique * p_sharp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_tail_matches_known_values() {
        for &(z, q) in &[
            (0.0, 0.5),
            (1.0, 0.158_655_25),
            (2.0, 0.022_750_13),
            (3.0, 1.349_898e-3),
            (5.0, 2.866_516e-7),
            (7.0, 1.279_813e-12),
        ] {
            let got = gaussian_tail(z);
            assert!((got - q).abs() / q < 0.02, "Q({z}) = {got}, want {q}");
        }
        assert!((gaussian_tail(-1.0) - 0.841_344_75).abs() < 1e-6);
    }

    #[test]
    fn robust_sigma_ignores_a_few_large_peaks() {
        let mut v: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let base = robust_sigma(&v, &mut Vec::new());
        v[10] = 100.0;
        v[500] = 80.0;
        let with_peaks = robust_sigma(&v, &mut Vec::new());
        assert!((with_peaks - base).abs() / base < 0.01);
    }

    #[test]
    fn confidence_is_low_for_noise_level_peaks_and_high_for_strong_ones() {
        // The largest of 48 000 Gaussian lags is typically ~4.4σ.
        assert!(confidence(4.4, 1.0, 48_000, 1.0, 0.3, 0.1).value < 0.01);
        assert!(confidence(8.0, 1.0, 48_000, 1.0, 0.3, 0.1).value > 0.99);
        // An equally strong rival makes it a coin toss.
        assert_eq!(confidence(20.0, 1.0, 48_000, 1.0, 0.97, 0.1).value, 0.0);
        let mid = confidence(20.0, 1.0, 48_000, 1.0, 0.85, 0.1).value;
        assert!(mid > 0.3 && mid < 0.7, "{mid}");
        // A blunt peak cannot promise a millisecond.
        assert_eq!(confidence(20.0, 1.0, 48_000, 1.0, 0.3, 3.0).value, 0.0);
    }
}
