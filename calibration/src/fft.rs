//! Thin wrappers over `realfft` for the real-signal FFTs used by the deconvolutions.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// Spectrum of `x` zero-padded (or cut) to `n` samples: `n / 2 + 1` bins, unnormalised.
pub(crate) fn rfft(x: &[f64], n: usize) -> Vec<Complex<f64>> {
    let mut planner = RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(n);
    let mut input = vec![0.0; n];
    let m = x.len().min(n);
    input[..m].copy_from_slice(&x[..m]);
    let mut out = fft.make_output_vec();
    // Lengths come from the plan itself, so this cannot fail.
    let _ = fft.process(&mut input, &mut out);
    out
}

/// Inverse of [`rfft`] for an `n`-sample signal, normalised (`irfft(rfft(x)) == x`).
/// The imaginary parts that must be zero for a real signal (DC, and Nyquist for even
/// `n`) are zeroed first.
pub(crate) fn irfft(spec: &[Complex<f64>], n: usize) -> Vec<f64> {
    let mut planner = RealFftPlanner::<f64>::new();
    let ifft = planner.plan_fft_inverse(n);
    let mut input = ifft.make_input_vec();
    let m = spec.len().min(input.len());
    input[..m].copy_from_slice(&spec[..m]);
    if let Some(first) = input.first_mut() {
        first.im = 0.0;
    }
    if n.is_multiple_of(2) {
        if let Some(last) = input.last_mut() {
            last.im = 0.0;
        }
    }
    let mut out = ifft.make_output_vec();
    let _ = ifft.process(&mut input, &mut out);
    let scale = 1.0 / n as f64;
    out.iter_mut().for_each(|v| *v *= scale);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_even_and_odd() {
        for n in [8usize, 15, 1023] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64 - 6.0).collect();
            let y = irfft(&rfft(&x, n), n);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-9);
            }
        }
    }
}
