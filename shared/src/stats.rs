//! Small statistics helpers shared by reports, the controller and the harness.

/// Percentile `p` (0..=100) of `values` by linear interpolation between order
/// statistics. Returns `None` for an empty slice. NaNs are ignored.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(v[lo] + (v[hi] - v[lo]) * frac)
}

/// Median of `values` (`None` when empty).
pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}

/// p50, p95 and max of absolute values, in the unit of the input.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorSummary {
    /// Median of |x|.
    pub p50: f64,
    /// 95th percentile of |x|.
    pub p95: f64,
    /// Largest |x|.
    pub max: f64,
    /// Number of values.
    pub count: usize,
}

impl ErrorSummary {
    /// Summarises the absolute values of `values`; `None` when empty.
    pub fn of_abs(values: &[f64]) -> Option<Self> {
        let abs: Vec<f64> = values.iter().map(|x| x.abs()).collect();
        Some(Self {
            p50: percentile(&abs, 50.0)?,
            p95: percentile(&abs, 95.0)?,
            max: abs.iter().copied().fold(0.0, f64::max),
            count: abs.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v = [3.0, 1.0, 2.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(5.0));
        assert_eq!(percentile(&[], 50.0), None);
        let s = ErrorSummary::of_abs(&[-2.0, 1.0]).unwrap();
        assert_eq!(s.max, 2.0);
        assert_eq!(s.p50, 1.5);
    }
}
