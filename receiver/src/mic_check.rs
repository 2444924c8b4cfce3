//! The microphone check (`syncstream receiver --check-mic`): a few seconds recorded
//! while the speaker plays a test tone, judged for what goes wrong with I²S MEMS
//! microphones (INMP441, SPH0645) on a Pi: no data (wiring, overlay), one channel only
//! (the L/R pin), a DC offset (the SPH0645's), clipping, mains hum, a microphone that
//! does not hear the speaker.
//!
//! Levels are dBFS (0 dBFS: a full-scale square wave's RMS, i.e. RMS 1.0). Tone and hum
//! levels come from the Goertzel algorithm (G. Goertzel, "An algorithm for the
//! evaluation of finite trigonometric series", Amer. Math. Monthly 65, 1958) over the
//! whole recording, after the DC offset is removed.

use serde::Serialize;

/// RMS below this is "nothing": digital silence or a dead data line, dBFS.
pub const SILENT_DBFS: f64 = -100.0;
/// RMS below this is only a microphone's self-noise in a quiet room, dBFS.
pub const NOISE_FLOOR_DBFS: f64 = -85.0;
/// A channel this far below the loudest carries no signal of its own, dB.
pub const CHANNEL_GAP_DB: f64 = 20.0;
/// |mean| above this is reported as a DC offset, full scale.
pub const DC_REPORT: f64 = 0.01;
/// Samples at |x| ≥ this count as clipped, full scale.
pub const CLIP_LEVEL: f32 = 0.999;
/// More than this fraction of clipped samples is "clipping".
pub const CLIP_FRACTION: f64 = 0.001;
/// Mains hum within this many dB of the whole signal's power is reported.
pub const HUM_REPORT_DB: f64 = -10.0;
/// The test tone is "heard" this far above the noise next to it, dB.
pub const TONE_HEARD_DB: f64 = 15.0;

/// One channel's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelFigures {
    /// RMS after removing the DC offset, dBFS (−inf for digital silence: reported as
    /// −200).
    pub rms_dbfs: f64,
    /// Largest |sample|, dBFS.
    pub peak_dbfs: f64,
    /// Mean (DC offset), full scale (−1..=1).
    pub dc_offset: f64,
    /// Fraction of samples at full scale (0..=1).
    pub clipped_fraction: f64,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MicCheckReport {
    /// Length analysed, s.
    pub seconds: f64,
    /// Sample rate, Hz.
    pub sample_rate_hz: u32,
    /// Per channel (one for a mono recording, left then right for stereo).
    pub channels: Vec<ChannelFigures>,
    /// Which channels carry signal: `left`, `right`, `both`, `none` (stereo), or
    /// `mono`.
    pub signal_on: String,
    /// The louder mains frequency (50 or 60 Hz) and its power with two harmonics,
    /// relative to the whole signal, dB (0: the signal is all hum).
    pub hum_hz: u32,
    /// See `hum_hz`.
    pub hum_db: f64,
    /// The test tone's frequency, Hz, when one was played.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone_hz: Option<f64>,
    /// The tone's power over the noise beside it, dB, when one was played.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone_db: Option<f64>,
    /// Every finding, in plain words.
    pub verdicts: Vec<String>,
    /// Whether the microphone is fit for the sync loop.
    pub ok: bool,
    /// One line: the first problem, or "OK: ...".
    pub summary: String,
}

fn db(power_ratio: f64) -> f64 {
    if power_ratio > 0.0 {
        (10.0 * power_ratio.log10()).max(-200.0)
    } else {
        -200.0
    }
}

/// Power of `x` (mean removed by the caller) at `freq_hz`, as mean square of that
/// component (a sine of amplitude A gives A²/2). Goertzel.
pub fn goertzel_power(x: &[f32], mean: f64, freq_hz: f64, rate_hz: u32) -> f64 {
    if x.is_empty() || rate_hz == 0 {
        return 0.0;
    }
    let w = std::f64::consts::TAU * freq_hz / rate_hz as f64;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = (v as f64 - mean) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let p = (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0);
    let n = x.len() as f64;
    2.0 * p / (n * n)
}

fn channel(samples: &[f32], ch: usize, channels: usize) -> Vec<f32> {
    samples.iter().skip(ch).step_by(channels).copied().collect()
}

fn figures(x: &[f32]) -> (ChannelFigures, f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let power = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let clipped = x.iter().filter(|v| v.abs() >= CLIP_LEVEL).count() as f64 / n;
    (
        ChannelFigures {
            rms_dbfs: db(power),
            peak_dbfs: db(peak * peak),
            dc_offset: mean,
            clipped_fraction: clipped,
        },
        mean,
        power,
    )
}

/// Judges `samples` (interleaved, `channels` 1 or 2, at `rate_hz`), recorded while a
/// tone of `tone_hz` played (or none). Empty input gives a report that hears nothing.
pub fn analyze(
    samples: &[f32],
    channels: usize,
    rate_hz: u32,
    tone_hz: Option<f64>,
) -> MicCheckReport {
    let channels = channels.clamp(1, 2);
    let frames = samples.len() / channels;
    let per: Vec<Vec<f32>> = (0..channels)
        .map(|c| channel(&samples[..frames * channels], c, channels))
        .collect();
    let figs: Vec<(ChannelFigures, f64, f64)> = per.iter().map(|x| figures(x)).collect();
    let loudest = (0..channels)
        .max_by(|&a, &b| figs[a].2.total_cmp(&figs[b].2))
        .unwrap_or(0);
    let alive = |i: usize| figs[i].0.rms_dbfs > SILENT_DBFS;
    let signal_on = if channels == 1 {
        "mono".to_string()
    } else {
        let (l, r) = (figs[0].0.rms_dbfs, figs[1].0.rms_dbfs);
        match (alive(0), alive(1)) {
            (false, false) => "none",
            (true, false) => "left",
            (false, true) => "right",
            _ if l - r > CHANNEL_GAP_DB => "left",
            _ if r - l > CHANNEL_GAP_DB => "right",
            _ => "both",
        }
        .to_string()
    };
    let x = &per[loudest];
    let (main, mean, power) = (&figs[loudest].0, figs[loudest].1, figs[loudest].2);
    let hum = |f0: f64| -> f64 {
        (1..=3)
            .map(|k| goertzel_power(x, mean, f0 * k as f64, rate_hz))
            .sum::<f64>()
    };
    let (h50, h60) = (hum(50.0), hum(60.0));
    let (hum_hz, hum_power) = if h60 > h50 { (60, h60) } else { (50, h50) };
    let hum_db = if power > 0.0 {
        db(hum_power / power)
    } else {
        -200.0
    };
    let tone_db = tone_hz.map(|f| {
        let on = goertzel_power(x, mean, f, rate_hz);
        // Noise beside the tone: the mean of eight bins 31 to 117 Hz away.
        let beside: f64 = [31.0, 47.0, 73.0, 117.0]
            .iter()
            .flat_map(|d| [f - d, f + d])
            .map(|g| goertzel_power(x, mean, g, rate_hz))
            .sum::<f64>()
            / 8.0;
        db(on / beside.max(1e-30))
    });

    let mut verdicts = Vec::new();
    let mut problems = Vec::new();
    let seconds = frames as f64 / rate_hz.max(1) as f64;
    if frames == 0 || !alive(loudest) {
        problems.push(
            "the microphone hears nothing (digital silence): check the WS, CLK and SD wiring, the L/R pin, and the dtoverlay in /boot/firmware/config.txt"
                .to_string(),
        );
    } else {
        if channels == 2 {
            verdicts.push(match signal_on.as_str() {
                "left" => "only the left channel carries signal: fine (L/R pin low); the receiver uses it".to_string(),
                "right" => "only the right channel carries signal: fine (L/R pin high); the receiver uses it".to_string(),
                _ => "both channels carry signal (two microphones, or one wired to both)".to_string(),
            });
        }
        if main.dc_offset.abs() > DC_REPORT {
            verdicts.push(format!(
                "DC offset {:+.3} of full scale (the SPH0645 has one): harmless, the receiver removes it",
                main.dc_offset
            ));
        }
        if main.clipped_fraction > CLIP_FRACTION {
            problems.push(format!(
                "clipping: {:.2} % of samples at full scale: move the microphone away from the speaker or lower the volume",
                100.0 * main.clipped_fraction
            ));
        }
        if main.rms_dbfs < NOISE_FLOOR_DBFS {
            problems.push(format!(
                "only the microphone's self-noise ({:.0} dBFS): it hears no sound; check that it faces the speaker and that the speaker plays",
                main.rms_dbfs
            ));
        }
        if hum_db > HUM_REPORT_DB {
            problems.push(format!(
                "mains hum at {hum_hz} Hz is {:.0} dB of the signal: keep the microphone's wires short and away from power supplies, and power it from the Pi's 3.3 V",
                hum_db
            ));
        }
        if let (Some(f), Some(t)) = (tone_hz, tone_db) {
            if t >= TONE_HEARD_DB {
                verdicts.push(format!(
                    "the {f:.0} Hz test tone is heard {t:.0} dB above the noise"
                ));
            } else {
                problems.push(format!(
                    "the {f:.0} Hz test tone is not heard ({t:.0} dB above the noise): the microphone does not hear this speaker; check the output, its volume and the distance"
                ));
            }
        }
    }
    let ok = problems.is_empty();
    let summary = match problems.first() {
        Some(p) => p.clone(),
        None => format!(
            "OK: level {:.0} dBFS{}",
            main.rms_dbfs,
            tone_db.map_or(String::new(), |t| format!(
                ", tone heard {t:.0} dB above the noise"
            ))
        ),
    };
    problems.extend(verdicts);
    MicCheckReport {
        seconds,
        sample_rate_hz: rate_hz,
        channels: figs.into_iter().map(|f| f.0).collect(),
        signal_on,
        hum_hz,
        hum_db,
        tone_hz,
        tone_db,
        verdicts: problems,
        ok,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    fn sine(f: f64, amp: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (amp * (std::f64::consts::TAU * f * i as f64 / RATE as f64).sin()) as f32)
            .collect()
    }

    fn noise(amp: f32, n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0 * amp
            })
            .collect()
    }

    fn mix(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x + y).collect()
    }

    fn stereo(l: &[f32], r: &[f32]) -> Vec<f32> {
        l.iter().zip(r).flat_map(|(a, b)| [*a, *b]).collect()
    }

    #[test]
    fn silence_hears_nothing() {
        let r = analyze(&vec![0.0; 2 * RATE as usize], 2, RATE, Some(1000.0));
        assert!(!r.ok);
        assert_eq!(r.signal_on, "none");
        assert!(
            r.summary.contains("hears nothing") && r.summary.contains("WS"),
            "{}",
            r.summary
        );
        let r = analyze(&[], 1, RATE, None);
        assert!(!r.ok && r.summary.contains("hears nothing"));
    }

    #[test]
    fn a_right_only_microphone_hearing_the_tone_is_ok() {
        let n = 2 * RATE as usize;
        let right = mix(&sine(1000.0, 0.05, n), &noise(0.003, n, 1));
        let r = analyze(&stereo(&vec![0.0; n], &right), 2, RATE, Some(1000.0));
        assert_eq!(r.signal_on, "right");
        assert!(r.ok, "{r:#?}");
        assert!(
            r.summary.starts_with("OK") && r.summary.contains("tone heard"),
            "{}",
            r.summary
        );
        assert!(r.tone_db.unwrap() > 30.0);
    }

    #[test]
    fn a_tone_that_is_not_there_is_not_heard() {
        let n = 2 * RATE as usize;
        let r = analyze(&noise(0.01, n, 2), 1, RATE, Some(1000.0));
        assert!(!r.ok);
        assert!(r.summary.contains("not heard"), "{}", r.summary);
    }

    #[test]
    fn clipping_hum_and_dc_are_named() {
        let n = 2 * RATE as usize;
        let clipped: Vec<f32> = sine(1000.0, 2.0, n)
            .iter()
            .map(|v| v.clamp(-1.0, 1.0))
            .collect();
        let r = analyze(&clipped, 1, RATE, Some(1000.0));
        assert!(r.summary.contains("clipping"), "{}", r.summary);

        let hum = mix(&sine(50.0, 0.05, n), &noise(0.002, n, 3));
        let r = analyze(&hum, 1, RATE, None);
        assert_eq!(r.hum_hz, 50);
        assert!(r.summary.contains("mains hum at 50 Hz"), "{}", r.summary);
        let hum60 = mix(&sine(60.0, 0.05, n), &noise(0.002, n, 4));
        assert_eq!(analyze(&hum60, 1, RATE, None).hum_hz, 60);

        let dc: Vec<f32> = mix(&sine(1000.0, 0.05, n), &noise(0.003, n, 5))
            .iter()
            .map(|v| v + 0.05)
            .collect();
        let r = analyze(&dc, 1, RATE, Some(1000.0));
        assert!(r.ok, "{r:#?}");
        assert!(
            r.verdicts.iter().any(|v| v.contains("DC offset +0.050")),
            "{:?}",
            r.verdicts
        );
    }

    #[test]
    fn works_at_44_1_khz() {
        let rate = 44_100;
        let n = 2 * rate as usize;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                (0.05 * (std::f64::consts::TAU * 1000.0 * i as f64 / rate as f64).sin()) as f32
            })
            .collect();
        let x = mix(&x, &noise(0.003, n, 6));
        let r = analyze(&x, 1, rate, Some(1000.0));
        assert!(r.ok, "{r:#?}");
        assert_eq!(r.sample_rate_hz, 44_100);
        assert!((r.seconds - 2.0).abs() < 1e-9);
    }
}
