//! The `syncstream delay` command: the delay between two audio files, as JSON.

use std::path::Path;

use anyhow::{bail, Context};

use syncstream_audio::decode::decode_file;
use syncstream_dsp::{DelayEstimator, LagSearch};

/// The rate the command works at, Hz (the stream rate).
pub const COMMAND_RATE_HZ: u32 = 48_000;
/// Largest `--max-lag-ms`, ms.
pub const MAX_LAG_MS: f64 = 60_000.0;

/// Decodes `reference` and `recording` (any format symphonia reads; channels mixed
/// down to mono, resampled to 48 kHz), estimates the delay of the recording against
/// the reference within ±`max_lag_ms`, and returns the JSON object the command
/// prints: `{"delay_ms": 37.291, "confidence": 0.93, "signal_strength_db": …,
/// "reason": null, …}` or `{"delay_ms": null, "reason": "…", …}`.
///
/// Convention: both files start at the same instant on the same clock; `delay_ms`
/// is positive when the recording lags the reference.
///
/// Errors name the file and the reason: unreadable or non-audio file, no samples,
/// non-finite samples; and a `max_lag_ms` outside 0 to [`MAX_LAG_MS`].
pub fn run_delay(
    reference: &Path,
    recording: &Path,
    max_lag_ms: f64,
) -> anyhow::Result<serde_json::Value> {
    if !(max_lag_ms.is_finite() && (0.0..=MAX_LAG_MS).contains(&max_lag_ms)) {
        bail!("--max-lag-ms {max_lag_ms} is outside 0 to {MAX_LAG_MS} ms");
    }
    let ref_audio = decode_file(reference, COMMAND_RATE_HZ)
        .with_context(|| format!("reference {}", reference.display()))?;
    let rec_audio = decode_file(recording, COMMAND_RATE_HZ)
        .with_context(|| format!("recording {}", recording.display()))?;
    let x = ref_audio.mono();
    let y = rec_audio.mono();
    if x.is_empty() {
        bail!(
            "reference {} has no samples after resampling",
            reference.display()
        );
    }
    if y.is_empty() {
        bail!(
            "recording {} has no samples after resampling",
            recording.display()
        );
    }
    let mut est = DelayEstimator::new(COMMAND_RATE_HZ);
    let e = est
        .estimate(&x, &y, &LagSearch::symmetric(max_lag_ms))
        .with_context(|| {
            format!(
                "estimating the delay of {} against {}",
                recording.display(),
                reference.display()
            )
        })?;
    let mut v = serde_json::to_value(&e)?;
    if let Some(obj) = v.as_object_mut() {
        if let Some(d) = e.delay_ms {
            obj.insert("delay_ms".into(), round(d, 3).into());
        }
        obj.insert("confidence".into(), round(e.confidence, 3).into());
        obj.insert(
            "signal_strength_db".into(),
            round(e.signal_strength_db, 1).into(),
        );
        obj.insert("sample_rate_hz".into(), COMMAND_RATE_HZ.into());
        obj.insert(
            "reference_s".into(),
            round(x.len() as f64 / COMMAND_RATE_HZ as f64, 3).into(),
        );
        obj.insert(
            "recording_s".into(),
            round(y.len() as f64 / COMMAND_RATE_HZ as f64, 3).into(),
        );
        obj.insert("max_lag_ms".into(), max_lag_ms.into());
    }
    Ok(v)
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_testkit::{white_noise, write_wav_f32};

    #[test]
    fn finds_the_delay_between_files_of_different_rates_and_channels() {
        let dir = tempfile::tempdir().unwrap();
        // Reference: 1.5 s of noise at 48 kHz, stereo. Recording: the same delayed by
        // 12.5 ms (600 samples), mono, 48 kHz then a second copy at 24 kHz.
        let x = white_noise(72_000, 7, 0.3);
        let stereo: Vec<f32> = x.iter().flat_map(|&s| [s, s]).collect();
        write_wav_f32(&dir.path().join("ref.wav"), 48_000, 2, &stereo).unwrap();
        let mut y = vec![0.0f32; 72_000];
        y[600..].copy_from_slice(&x[..72_000 - 600]);
        write_wav_f32(&dir.path().join("rec.wav"), 48_000, 1, &y).unwrap();
        let v = run_delay(
            &dir.path().join("ref.wav"),
            &dir.path().join("rec.wav"),
            100.0,
        )
        .unwrap();
        let d = v["delay_ms"].as_f64().unwrap();
        assert!((d - 12.5).abs() < 0.005, "{v}");
        let half: Vec<f32> = y.iter().step_by(2).copied().collect();
        write_wav_f32(&dir.path().join("rec24.wav"), 24_000, 1, &half).unwrap();
        let v = run_delay(
            &dir.path().join("ref.wav"),
            &dir.path().join("rec24.wav"),
            100.0,
        )
        .unwrap();
        // Decimating white noise without a filter aliases it, but the band below
        // 12 kHz still lines up.
        let d = v["delay_ms"].as_f64().unwrap();
        assert!((d - 12.5).abs() < 0.1, "{v}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.wav");
        write_wav_f32(&good, 48_000, 1, &white_noise(4800, 1, 0.3)).unwrap();
        let text = dir.path().join("text.wav");
        std::fs::write(&text, b"not audio at all").unwrap();
        let e = format!("{:#}", run_delay(&good, &text, 100.0).unwrap_err());
        assert!(e.contains("text.wav"), "{e}");
        let empty = dir.path().join("empty.wav");
        write_wav_f32(&empty, 48_000, 1, &[]).unwrap();
        let e = format!("{:#}", run_delay(&empty, &good, 100.0).unwrap_err());
        assert!(e.contains("empty.wav"), "{e}");
        let nan = dir.path().join("nan.wav");
        write_wav_f32(&nan, 48_000, 1, &[0.1, f32::NAN, 0.2]).unwrap();
        let e = format!("{:#}", run_delay(&good, &nan, 100.0).unwrap_err());
        assert!(e.contains("nan.wav") && e.contains("not finite"), "{e}");
        assert!(run_delay(&good, &good, f64::NAN).is_err());
    }

    #[test]
    fn silence_gives_null_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.wav");
        write_wav_f32(&good, 48_000, 1, &white_noise(48_000, 1, 0.3)).unwrap();
        let quiet = dir.path().join("quiet.wav");
        write_wav_f32(&quiet, 48_000, 1, &vec![0.0; 48_000]).unwrap();
        let v = run_delay(&good, &quiet, 100.0).unwrap();
        assert!(v["delay_ms"].is_null(), "{v}");
        assert!(v["reason"].as_str().unwrap().contains("silent"), "{v}");
    }
}
