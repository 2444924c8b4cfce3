//! A test tone.

use syncstream_shared::time::STREAM_SAMPLE_RATE;

use super::AudioSource;

/// Frequency of `tone` without a frequency, Hz.
pub const TONE_DEFAULT_HZ: f64 = 1000.0;
/// Peak level of the tone, dBFS.
pub const TONE_LEVEL_DBFS: f64 = -12.0;

/// An endless sine on both channels at [`TONE_LEVEL_DBFS`] peak.
pub struct ToneSource {
    freq_hz: f64,
    amplitude: f64,
    /// Frames produced so far (the phase is computed from it, so it never drifts).
    frame: u64,
}

impl ToneSource {
    /// A tone at `freq_hz` (Hz; above 0 and below half the stream rate).
    pub fn new(freq_hz: f64) -> anyhow::Result<Self> {
        let nyquist = STREAM_SAMPLE_RATE as f64 / 2.0;
        if !freq_hz.is_finite() || freq_hz <= 0.0 || freq_hz >= nyquist {
            anyhow::bail!(
                "tone frequency {freq_hz} Hz is out of range (above 0 and below {nyquist} Hz)"
            );
        }
        Ok(Self {
            freq_hz,
            amplitude: 10f64.powf(TONE_LEVEL_DBFS / 20.0),
            frame: 0,
        })
    }
}

impl AudioSource for ToneSource {
    fn read(&mut self, out: &mut [f32]) -> anyhow::Result<usize> {
        let frames = out.len() / 2;
        for (i, fr) in out[..frames * 2].chunks_exact_mut(2).enumerate() {
            // Reduce the phase argument modulo the period to keep precision.
            let n = self.frame + i as u64;
            let cycles = (n as f64 * self.freq_hz / STREAM_SAMPLE_RATE as f64).fract();
            let v = (self.amplitude * (2.0 * std::f64::consts::PI * cycles).sin()) as f32;
            fr[0] = v;
            fr[1] = v;
        }
        self.frame += frames as u64;
        Ok(frames)
    }

    fn describe(&self) -> String {
        format!("tone {} Hz at {TONE_LEVEL_DBFS} dBFS", self.freq_hz)
    }

    fn is_live(&self) -> bool {
        false
    }
}

/// Opens the tone stream `tone` or `tone:///?name=..&freq=HZ` (1 kHz by default).
///
/// Errors: a `freq` that is not a frequency in range.
pub fn open_uri(
    uri: &mut super::uri::StreamUri,
    _opts: &super::SourceOptions,
) -> anyhow::Result<Box<dyn AudioSource>> {
    let hz = match uri.take("freq") {
        None => TONE_DEFAULT_HZ,
        Some(f) => f.parse().map_err(|_| {
            anyhow::anyhow!(
                "stream URI '{}': freq={f} is not a frequency in Hz",
                uri.raw
            )
        })?,
    };
    uri.finish()?;
    Ok(Box::new(ToneSource::new(hz)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_has_its_frequency_and_level() {
        let mut t = ToneSource::new(440.0).unwrap();
        let mut buf = vec![0.0f32; 48_000 * 2 + 1];
        let n = t.read(&mut buf).unwrap();
        assert_eq!(n, 48_000);
        let n = 2 * n;
        let left: Vec<f32> = buf[..n].iter().step_by(2).copied().collect();
        let right: Vec<f32> = buf[1..n].iter().step_by(2).copied().collect();
        assert_eq!(left, right);
        let rising = left
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!(
            (439..=441).contains(&rising),
            "{rising} rising zero crossings in 1 s"
        );
        let peak = left.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let dbfs = 20.0 * (peak as f64).log10();
        assert!((dbfs - TONE_LEVEL_DBFS).abs() < 0.05, "{dbfs} dBFS");
        // Continuous across reads.
        let mut a = ToneSource::new(1000.0).unwrap();
        let mut b = ToneSource::new(1000.0).unwrap();
        let mut x = vec![0.0f32; 2000];
        let mut y = vec![0.0f32; 2000];
        a.read(&mut x).unwrap();
        b.read(&mut y[..998]).unwrap();
        b.read(&mut y[998..]).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn bad_frequencies_are_rejected() {
        for f in [0.0, -5.0, 24_000.0, f64::NAN] {
            assert!(ToneSource::new(f).is_err(), "{f}");
        }
    }
}
