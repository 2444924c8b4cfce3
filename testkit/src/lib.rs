//! Deterministic test material shared by unit tests, integration tests, benchmarks and
//! the evaluation harness, so every one of them builds its signals and files the same way.

pub mod snapserver;

use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// `n` samples of white noise, uniform in ±`amplitude`, repeatable for a given `seed`.
pub fn white_noise(n: usize, seed: u64, amplitude: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.random_range(-amplitude..=amplitude))
        .collect()
}

/// Writes interleaved 32-bit float samples to a WAV file at `rate_hz` with `channels`.
///
/// Errors: the file cannot be created or written (the error names the path).
pub fn write_wav_f32(
    path: &Path,
    rate_hz: u32,
    channels: u16,
    interleaved: &[f32],
) -> anyhow::Result<()> {
    use anyhow::Context;
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate_hz,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for &s in interleaved {
        w.write_sample(s)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.finalize()
        .with_context(|| format!("finishing {}", path.display()))
}
