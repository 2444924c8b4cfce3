//! `syncstream receiver --check-mic`: records a few seconds from the receiver's
//! microphone while its output plays a 1 kHz test tone, and prints what
//! [`syncstream_receiver::mic_check`] finds (levels, DC offset, clipping, mains hum,
//! the channel that carries signal, whether the tone is heard) with a plain verdict.
//!
//! An ALSA microphone is recorded in stereo at the rate it offers (48 or 44.1 kHz), so
//! the check can say which channel the L/R pin selected; other microphone backends
//! deliver mono.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use syncstream_audio::{BackendConfig, RenderInfo, SinkBuilder, StreamFormat};
use syncstream_receiver::mic_check::{analyze, MicCheckReport};
use syncstream_shared::time::{Clock, MonotonicClock, STREAM_SAMPLE_RATE};

/// Frequency of the test tone, Hz.
pub const TONE_HZ: f64 = 1000.0;
/// Amplitude of the test tone (−15 dBFS RMS).
const TONE_AMPLITUDE: f32 = 0.25;
/// Recorded before the analysed part, while the output starts, s.
const LEAD_IN_S: f64 = 0.5;
/// How much longer than asked the recording may take (a device that starts late), s.
const MAX_START_S: f64 = 10.0;

/// What to check.
pub struct CheckMic {
    /// Seconds to analyse (1..=60).
    pub seconds: f64,
    /// Microphone backend and device.
    pub mic: String,
    /// See `mic`.
    pub mic_device: Option<String>,
    /// The output that plays the test tone (`None`: no tone).
    pub output: Option<(SinkBuilder, BackendConfig)>,
}

/// Runs the check. Errors: a bad duration, a microphone that cannot be opened.
pub fn run(c: CheckMic) -> anyhow::Result<MicCheckReport> {
    if !(c.seconds.is_finite() && (1.0..=60.0).contains(&c.seconds)) {
        anyhow::bail!(
            "--check-seconds must be between 1 and 60, got {}",
            c.seconds
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let mut notes = Vec::new();
    // The tone first, so the speaker plays before the recording that counts.
    let mut sink = None;
    if let Some((builder, cfg)) = &c.output {
        match builder(cfg).and_then(|mut s| {
            s.start(tone(cfg.format))?;
            Ok(s)
        }) {
            Ok(s) => sink = Some(s),
            Err(e) => notes.push(format!("no test tone: {e}")),
        }
    }
    let total_s = c.seconds + LEAD_IN_S;
    // Room for 48 kHz stereo (a faster device fills it early: fewer seconds analysed).
    let capacity = ((total_s + 0.5) * STREAM_SAMPLE_RATE as f64 * 2.0) as usize;
    let (mut producer, mut consumer) = rtrb::RingBuffer::<f32>::new(capacity);
    let push = move |block: &[f32], _adc_us: i64| {
        for &v in block {
            if producer.push(v).is_err() {
                break;
            }
        }
    };
    let (rate, channels, keep) = if c.mic == "alsa" {
        let cap = syncstream_audio::alsa::start_capture(
            c.mic_device.as_deref(),
            STREAM_SAMPLE_RATE,
            2,
            true,
            clock.clone(),
            Box::new(push),
        )
        .context("opening the microphone")?;
        let (rate, ch) = (cap.sample_rate(), cap.channels());
        (rate, ch as usize, Keep::Alsa(cap))
    } else {
        let builder = syncstream_audio::find_microphone(&c.mic)
            .with_context(|| format!("unknown microphone backend '{}'", c.mic))?;
        let mut mic = builder(&BackendConfig {
            device: c.mic_device.clone(),
            format: StreamFormat {
                sample_rate: STREAM_SAMPLE_RATE,
                channels: 1,
            },
            clock: clock.clone(),
        })
        .context("opening the microphone")?;
        mic.start(Box::new(push))
            .context("starting the microphone")?;
        (mic.sample_rate(), 1, Keep::Mic(mic))
    };
    // The recording itself, in real time: until the ring holds what was asked for (a
    // device may start late), or a deadline.
    let wanted = ((total_s * rate as f64) as usize * channels).min(capacity);
    let started = std::time::Instant::now();
    let deadline = Duration::from_secs_f64(total_s + MAX_START_S);
    while consumer.slots() < wanted && started.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(keep);
    if consumer.slots() < wanted {
        notes.push(format!(
            "the microphone delivered {:.1} s of audio in {:.1} s",
            consumer.slots() as f64 / channels.max(1) as f64 / rate.max(1) as f64,
            started.elapsed().as_secs_f64()
        ));
    }
    let sink_played = sink.is_some();
    if let Some(mut s) = sink {
        let _ = s.stop();
    }
    let mut samples = Vec::with_capacity(consumer.slots());
    while let Ok(v) = consumer.pop() {
        samples.push(v);
    }
    let skip = ((LEAD_IN_S * rate as f64) as usize * channels).min(samples.len());
    let tone_hz = sink_played.then_some(TONE_HZ);
    let mut report = analyze(&samples[skip..], channels, rate, tone_hz);
    report.verdicts.extend(notes);
    Ok(report)
}

/// Keeps the capture running until dropped.
enum Keep {
    #[allow(dead_code)] // held for its Drop: the stream stops then
    Alsa(syncstream_audio::alsa::AlsaCapture),
    Mic(Box<dyn syncstream_audio::Microphone>),
}

impl Drop for Keep {
    fn drop(&mut self) {
        if let Keep::Mic(m) = self {
            let _ = m.stop();
        }
    }
}

/// A render function playing the test tone on every channel.
fn tone(fmt: StreamFormat) -> syncstream_audio::RenderFn {
    let step = TONE_HZ / fmt.sample_rate.max(1) as f64;
    let ch = fmt.channels.max(1) as usize;
    let mut phase = 0.0f64;
    Box::new(move |buf: &mut [f32], _dac_us: i64| {
        for frame in buf.chunks_exact_mut(ch) {
            frame.fill((phase * std::f64::consts::TAU).sin() as f32 * TONE_AMPLITUDE);
            phase = (phase + step).fract();
        }
        RenderInfo::default()
    })
}

/// Prints the report for a person: the verdict first, then the figures.
pub fn print(r: &MicCheckReport) {
    println!("{}", r.summary);
    for v in r.verdicts.iter().skip(usize::from(!r.ok)) {
        println!("  - {v}");
    }
    let names = if r.channels.len() == 2 {
        vec!["left", "right"]
    } else {
        vec!["mono"]
    };
    println!(
        "recorded {:.1} s at {} Hz; signal on: {}",
        r.seconds, r.sample_rate_hz, r.signal_on
    );
    for (name, c) in names.iter().zip(&r.channels) {
        println!(
            "  {name:<5} RMS {:>7.1} dBFS  peak {:>7.1} dBFS  DC {:+.4}  clipped {:.3} %",
            c.rms_dbfs,
            c.peak_dbfs,
            c.dc_offset,
            100.0 * c.clipped_fraction
        );
    }
    println!(
        "  mains hum ({} Hz + harmonics): {:.1} dB of the signal",
        r.hum_hz, r.hum_db
    );
    if let (Some(f), Some(t)) = (r.tone_hz, r.tone_db) {
        println!("  test tone {f:.0} Hz: {t:.1} dB above the noise beside it");
    }
}
