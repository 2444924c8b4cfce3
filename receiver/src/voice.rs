//! Voice diagnostics: on `{"cmd":"announce"}` (or at start-up, when configured) the
//! receiver says its name, state, last drift and current offset through its own
//! output: "Kitchen online, drift plus 0.3 milliseconds, offset 31.5 milliseconds".
//!
//! 1. The node builds the text from its figures ([`announcement`]) and hands a
//!    [`SpeechJob`] to [`crate::node::ReceiverIo::run_job`]: off the node's task, the
//!    job runs the `espeak-ng` program (Debian's `espeak-ng` package), which writes a
//!    WAV at 22.05 kHz on its standard output; the WAV is decoded and resampled to
//!    48 kHz with rubato ([`syncstream_audio::decode::decode_bytes`]) and brought to a
//!    peak of [`SPEECH_PEAK_DBFS`].
//! 2. The node plays it as a calibration test tone is played: the render callback's
//!    [`crate::test_tone::ToneOverlay`] replaces the music by the speech, from
//!    [`crate::test_tone::LEAD_US`] ahead (music faded out and back in, no allocation
//!    in the callback). The speech is not synchronised with the other receivers, and
//!    nothing is recorded or analysed.
//! 3. The drift detector skips every microphone window the speech (or the music's fades
//!    around it) may have reached ([`SpeechSpan::overlaps`]): no drift report is made
//!    from a window that overlaps an announcement.
//!
//! When `espeak-ng` is missing or fails, the job's error names the program and the
//! node logs it as a warning; nothing is played.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use syncstream_shared::time::{samples_to_us, STREAM_SAMPLE_RATE};

use crate::test_tone::MUSIC_FADE_FRAMES;

/// The text-to-speech program run by default (Debian package `espeak-ng`).
pub const ESPEAK_PROGRAM: &str = "espeak-ng";
/// Peak level the speech is played at, dBFS (whatever the device's volume: the render
/// callback overlays it after the volume; an output with its own hardware volume
/// still applies that).
pub const SPEECH_PEAK_DBFS: f64 = -6.0;
/// Longest announcement played, seconds (a longer synthesis is refused).
pub const MAX_SPEECH_S: f64 = 20.0;
/// Largest WAV accepted from the program, bytes (30 s of 16-bit mono at 22.05 kHz,
/// with room for a 48 kHz voice).
pub const MAX_WAV_BYTES: usize = 4 * 1024 * 1024;
/// A synthesis that has not come back after this long is given up, µs (its result, if
/// it ever comes, is dropped).
pub const SYNTH_TIMEOUT_US: i64 = 15_000_000;
/// Beyond the output latency (offset + microphone delay), how much longer a
/// microphone window may still hold the speech (the latency is known only roughly
/// before the first measurement), µs.
pub const SPEECH_MARGIN_US: i64 = 200_000;
/// A synthesis whose peak is below this is silence, not speech (linear).
const MIN_SPEECH_PEAK: f32 = 1e-3;

/// How a receiver speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceConfig {
    /// The text-to-speech program: it is run as `PROGRAM --stdout TEXT` and must write
    /// a WAV on its standard output (default [`ESPEAK_PROGRAM`], found on `PATH`).
    pub program: PathBuf,
    /// Announce once when the receiver first plays (`--announce-at-start`, the
    /// configuration file's `announce_at_start`); off by default.
    pub announce_at_start: bool,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            program: PathBuf::from(ESPEAK_PROGRAM),
            announce_at_start: false,
        }
    }
}

/// What an announcement says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures<'a> {
    /// Device name (a checked name: letters, digits, `-`, `_`).
    pub device: &'a str,
    /// The status's state (`playing`, `muted`, `starved`, `connecting`, `stopped`,
    /// `error`).
    pub state: &'a str,
    /// The last drift measured, ms (`None`: not measured yet, or the last measurement
    /// found no estimate).
    pub drift_ms: Option<f64>,
    /// The buffer offset now, ms.
    pub offset_ms: f64,
}

/// The text of an announcement, e.g. "Kitchen online, drift plus 0.3 milliseconds,
/// offset 31.5 milliseconds": the device name with `-` and `_` read as spaces, the
/// state in words, numbers with one decimal, "plus" or "minus" before a drift, "minus"
/// before a negative offset.
pub fn announcement(f: &Figures<'_>) -> String {
    let drift = match f.drift_ms.filter(|d| d.is_finite()) {
        Some(d) => format!("drift {} milliseconds", signed(d)),
        None => "drift not measured".to_string(),
    };
    let offset = if f.offset_ms.is_finite() {
        format!("offset {} milliseconds", unsigned(f.offset_ms))
    } else {
        "offset unknown".to_string()
    };
    format!(
        "{} {}, {drift}, {offset}",
        spoken_name(f.device),
        spoken_state(f.state)
    )
}

/// `x` with one decimal and its sign in words: "plus 0.3", "minus 1.2"; "0.0" for
/// what rounds to zero.
pub fn signed(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r == 0.0 {
        "0.0".to_string()
    } else if r > 0.0 {
        format!("plus {r:.1}")
    } else {
        format!("minus {:.1}", -r)
    }
}

/// `x` with one decimal, "minus" before a negative value: "31.5", "minus 2.0".
fn unsigned(x: f64) -> String {
    let r = (x * 10.0).round() / 10.0;
    if r < 0.0 {
        format!("minus {:.1}", -r)
    } else {
        format!("{:.1}", r.abs())
    }
}

/// The device name as words, capitalised: `living_room-2` → "Living room 2".
fn spoken_name(device: &str) -> String {
    let words: Vec<&str> = device.split(['-', '_']).filter(|w| !w.is_empty()).collect();
    let text = words.join(" ");
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => "Receiver".to_string(),
    }
}

/// The status's state in words.
fn spoken_state(state: &str) -> &'static str {
    match state {
        "playing" => "online",
        "muted" => "muted",
        "starved" => "starved of audio",
        "connecting" => "connecting",
        "stopped" => "stopped",
        "error" => "in error",
        _ => "in an unknown state",
    }
}

/// A synthesis to run off the node's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechJob {
    /// Identifies the answer (a later announcement replaces an earlier one).
    pub id: u64,
    /// What to say.
    pub text: String,
    /// The text-to-speech program (see [`VoiceConfig::program`]).
    pub program: PathBuf,
}

impl SpeechJob {
    /// Runs the program and returns the speech, mono at 48 kHz, peaking at
    /// [`SPEECH_PEAK_DBFS`] (blocking: tens to hundreds of ms).
    ///
    /// Errors (each names the program): it is not installed, cannot be run, exits
    /// with an error, writes nothing, more than [`MAX_WAV_BYTES`] or something that is
    /// not a WAV, silence, or more than [`MAX_SPEECH_S`] of audio.
    pub fn run(&self) -> Result<Vec<f32>, String> {
        synthesize(&self.program, &self.text)
    }
}

/// Speaks `text` with `program` (see [`SpeechJob::run`]).
///
/// Errors: see [`SpeechJob::run`].
pub fn synthesize(program: &std::path::Path, text: &str) -> Result<Vec<f32>, String> {
    let name = program.display().to_string();
    // The text is one argument (no shell); it starts with a letter (the device name,
    // see `spoken_name`), so it is never taken for an option.
    let out = Command::new(program)
        .arg("--stdout")
        .arg(text)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => format!(
                "the text-to-speech program '{name}' is not installed (Debian: apt-get \
                 install espeak-ng)"
            ),
            _ => format!("cannot run the text-to-speech program '{name}': {e}"),
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().next().unwrap_or("").trim();
        return Err(format!(
            "the text-to-speech program '{name}' failed ({}){}{}",
            out.status,
            if why.is_empty() { "" } else { ": " },
            why.chars().take(200).collect::<String>()
        ));
    }
    if out.stdout.is_empty() {
        return Err(format!(
            "the text-to-speech program '{name}' wrote no audio"
        ));
    }
    if out.stdout.len() > MAX_WAV_BYTES {
        return Err(format!(
            "the text-to-speech program '{name}' wrote {} bytes, over the limit of \
             {MAX_WAV_BYTES}",
            out.stdout.len()
        ));
    }
    // A streamed WAV: `espeak-ng --stdout` cannot seek back to write its sizes (they
    // say 0x7FFFF000 or so); symphonia reads the samples up to the end of the bytes.
    let decoded = syncstream_audio::decode::decode_bytes(
        &format!("the output of '{name}'"),
        out.stdout,
        Some("wav"),
        STREAM_SAMPLE_RATE,
    )
    .map_err(|e| format!("{e:#}"))?;
    let mut speech = decoded.mono();
    let seconds = speech.len() as f64 / STREAM_SAMPLE_RATE as f64;
    if seconds > MAX_SPEECH_S {
        return Err(format!(
            "the text-to-speech program '{name}' made {seconds:.1} s of audio, over the \
             limit of {MAX_SPEECH_S} s"
        ));
    }
    let peak = speech.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    if peak.is_nan() || peak < MIN_SPEECH_PEAK {
        return Err(format!(
            "the text-to-speech program '{name}' made only silence"
        ));
    }
    let gain = (10f64.powf(SPEECH_PEAK_DBFS / 20.0) / peak as f64) as f32;
    for s in &mut speech {
        *s *= gain;
    }
    Ok(speech)
}

/// Where an announcement sits on the output (local DAC times, µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechSpan {
    /// Local DAC time of the first sample, µs.
    pub start_dac_us: i64,
    /// Local DAC time just past the last sample, µs.
    pub end_dac_us: i64,
}

impl SpeechSpan {
    /// The span of `frames` samples at 48 kHz from local DAC time `start_dac_us`.
    pub fn new(start_dac_us: i64, frames: usize) -> Self {
        Self {
            start_dac_us,
            end_dac_us: start_dac_us
                .saturating_add(samples_to_us(frames as i64, STREAM_SAMPLE_RATE)),
        }
    }

    /// The music's fade around the speech, µs.
    fn fade_us() -> i64 {
        (MUSIC_FADE_FRAMES * 1e6 / STREAM_SAMPLE_RATE as f64).ceil() as i64
    }

    /// Local time after which the output no longer plays the speech or its fades, µs
    /// (the overlay can be disarmed).
    pub fn over_at_us(&self) -> i64 {
        self.end_dac_us.saturating_add(Self::fade_us())
    }

    /// Local time until which a microphone may hear the speech or the music's fades
    /// around it, on an output whose sound reaches the microphone `latency_us` after
    /// its DAC time (buffer offset + acoustic delay), with [`SPEECH_MARGIN_US`] and a
    /// fifth of the latency to spare, µs.
    pub fn heard_until_us(&self, latency_us: i64) -> i64 {
        let latency_us = latency_us.max(0);
        self.over_at_us()
            .saturating_add(latency_us)
            .saturating_add(latency_us / 5)
            .saturating_add(SPEECH_MARGIN_US)
    }

    /// Whether a microphone window from local ADC time `from_us` to `to_us` may hold
    /// the speech or the music's fades around it (see [`SpeechSpan::heard_until_us`];
    /// sound is never heard before it leaves the DAC).
    pub fn overlaps(&self, from_us: i64, to_us: i64, latency_us: i64) -> bool {
        let heard_from = self.start_dac_us.saturating_sub(Self::fade_us());
        from_us < self.heard_until_us(latency_us) && to_us > heard_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_says_name_state_and_figures_with_one_decimal_and_signs() {
        let f = Figures {
            device: "kitchen",
            state: "playing",
            drift_ms: Some(0.31),
            offset_ms: 31.46,
        };
        assert_eq!(
            announcement(&f),
            "Kitchen online, drift plus 0.3 milliseconds, offset 31.5 milliseconds"
        );
        let f = Figures {
            device: "living_room-2",
            state: "muted",
            drift_ms: Some(-1.25),
            offset_ms: -12.0,
        };
        assert_eq!(
            announcement(&f),
            "Living room 2 muted, drift minus 1.3 milliseconds, offset minus 12.0 milliseconds"
        );
        let f = Figures {
            device: "tv",
            state: "connecting",
            drift_ms: None,
            offset_ms: 70.0,
        };
        assert_eq!(
            announcement(&f),
            "Tv connecting, drift not measured, offset 70.0 milliseconds"
        );
        assert_eq!(signed(-0.04), "0.0");
        assert_eq!(signed(0.05), "plus 0.1");
        assert_eq!(signed(2.0), "plus 2.0");
        // A name of separators only still gives text that is not an option.
        assert!(announcement(&Figures { device: "-_-", ..f }).starts_with("Receiver "));
    }

    #[test]
    fn a_missing_program_is_a_clear_error_naming_it() {
        let e = synthesize(std::path::Path::new("espeak-ng-not-installed"), "hello").unwrap_err();
        assert!(e.contains("'espeak-ng-not-installed'"), "{e}");
        assert!(e.contains("not installed"), "{e}");
        // A program that fails: its exit status and first line of error.
        let e = synthesize(std::path::Path::new("false"), "hello").unwrap_err();
        assert!(e.contains("'false' failed"), "{e}");
        // A program that writes something that is not audio.
        let e = synthesize(std::path::Path::new("echo"), "hello").unwrap_err();
        assert!(e.contains("'echo'"), "{e}");
    }

    /// espeak-ng is installed by scripts/setup.sh (CI runs it): this test fails, rather
    /// than skips, without it.
    #[test]
    fn espeak_ng_speaks_seconds_of_48_khz_audio_at_the_set_peak() {
        let text = announcement(&Figures {
            device: "kitchen",
            state: "playing",
            drift_ms: Some(0.3),
            offset_ms: 31.5,
        });
        let speech = SpeechJob {
            id: 1,
            text,
            program: ESPEAK_PROGRAM.into(),
        }
        .run()
        .unwrap_or_else(|e| panic!("{e} (scripts/setup.sh installs espeak-ng)"));
        let seconds = speech.len() as f64 / 48_000.0;
        assert!((2.0..10.0).contains(&seconds), "{seconds} s of speech");
        let peak = speech.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let peak_db = 20.0 * (peak as f64).log10();
        assert!(
            (peak_db - SPEECH_PEAK_DBFS).abs() < 0.01,
            "peak {peak_db} dBFS"
        );
        // Speech, not a click: most 20 ms frames carry sound above −50 dBFS.
        let loud = speech
            .chunks(960)
            .filter(|c| {
                let rms =
                    (c.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / c.len() as f64).sqrt();
                20.0 * rms.log10() > -50.0
            })
            .count();
        let frames = speech.len().div_ceil(960);
        assert!(loud * 2 > frames, "{loud} of {frames} frames are sound");
    }

    #[test]
    fn a_window_overlaps_the_speech_while_the_microphone_may_hear_it() {
        // 2 s of speech from 10 s; 100 ms of latency.
        let s = SpeechSpan::new(10_000_000, 96_000);
        assert_eq!(s.end_dac_us, 12_000_000);
        let lat = 100_000;
        let until = s.heard_until_us(lat);
        assert_eq!(
            until,
            12_000_000 + 20_000 + 100_000 + 20_000 + SPEECH_MARGIN_US
        );
        // Before: a window ending before the fade-out begins.
        assert!(!s.overlaps(7_000_000, 9_970_000, lat));
        // Reaching into the fade-out, holding the speech, or its tail.
        assert!(s.overlaps(7_990_000, 9_990_000, lat));
        assert!(s.overlaps(10_500_000, 11_500_000, lat));
        assert!(s.overlaps(until - 1, until + 2_000_000, lat));
        // After.
        assert!(!s.overlaps(until, until + 2_000_000, lat));
    }
}
