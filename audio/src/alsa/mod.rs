//! The `alsa` backend: ALSA through cpal (real hardware on the Pis; a PulseAudio
//! null sink through ALSA's `pulse` plugin in tests).
//!
//! Devices are ALSA PCM names as `aplay -L` prints them (`default`, `pulse`,
//! `hw:CARD=sndrpihifiberry,DEV=0`, `plughw:1,0`, ...); [`list_devices`] lists them.
//! The device's own sample format (f32, i32, i24, i16, ...) and channel layout are
//! converted to and from interleaved f32 inside the callbacks, which never allocate.
//!
//! Timing: cpal reports, for every callback, when the block's first frame will be
//! played (`playback`) or was captured (`capture`) relative to the callback
//! instant, on the stream's own clock. Only that difference is used, added to the
//! receiver clock's "now" in the callback, so DAC and ADC times are on the
//! receiver clock and include the device's buffering.

mod convert;
pub mod mixer;
mod sink;
pub use sink::AlsaSink;
mod capture;
pub use capture::{
    start_capture, start_capture_counting, AlsaCapture, AlsaMicrophone, InterleavedCaptureFn,
};

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{SampleFormat, SupportedStreamConfigRange};

use super::{AudioError, BackendConfig, Microphone, Sink};

/// Backend name used in errors.
pub(crate) const BACKEND: &str = "alsa";

/// Opens an ALSA output through cpal. The device and a usable configuration are
/// checked here, so a missing device or an unsupported rate fails at open time.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    Ok(Box::new(AlsaSink::open(cfg)?))
}

/// Opens an ALSA capture device through cpal as a mono microphone (a stereo
/// device, such as most I²S microphones, is downmixed to the mean of its channels).
pub fn open_microphone(cfg: &BackendConfig) -> Result<Box<dyn Microphone>, AudioError> {
    Ok(Box::new(AlsaMicrophone::open(cfg)?))
}

/// Direction of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Output,
    Input,
}

/// The label used in errors and logs for an optional device name.
pub(crate) fn label(device: Option<&str>) -> String {
    device.unwrap_or("default").to_string()
}

fn alsa_host(device: &str) -> Result<cpal::Host, AudioError> {
    cpal::host_from_id(cpal::HostId::Alsa)
        .map_err(|e| AudioError::new(BACKEND, device, format!("ALSA is not available: {e}")))
}

/// One ALSA PCM device as listed by [`list_device_infos`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// PCM name to pass as the device (`--device`), e.g. `pulse` or `hw:CARD=0,DEV=0`.
    pub name: String,
    /// Human-readable description (first line of ALSA's hint), if any.
    pub description: String,
    /// Whether the device may play (`true` when ALSA does not say).
    pub output: bool,
    /// Whether the device may capture (`true` when ALSA does not say).
    pub input: bool,
}

/// Lists ALSA PCM devices (the hints `aplay -L` shows plus `hw:`/`plughw:` for
/// every card) without opening them.
pub fn list_device_infos() -> Result<Vec<DeviceInfo>, AudioError> {
    let host = alsa_host("(listing devices)")?;
    let devices = host.devices().map_err(|e| {
        AudioError::new(
            BACKEND,
            "(listing devices)",
            format!("cannot list devices: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for d in devices {
        let Ok(id) = d.id() else { continue };
        let description = d
            .description()
            .map(|desc| desc.name().to_string())
            .unwrap_or_default();
        out.push(DeviceInfo {
            name: id.id().to_string(),
            description,
            output: d.supports_output(),
            input: d.supports_input(),
        });
    }
    Ok(out)
}

/// Lists ALSA devices for `--list-devices`, one line each:
/// `NAME  (output, input)  DESCRIPTION`.
pub fn list_devices() -> Result<Vec<String>, AudioError> {
    Ok(list_device_infos()?
        .into_iter()
        .map(|d| {
            let dirs = match (d.output, d.input) {
                (true, true) => "output, input",
                (true, false) => "output",
                (false, true) => "input",
                (false, false) => "unknown",
            };
            if d.description.is_empty() || d.description == d.name {
                format!("{}  ({dirs})", d.name)
            } else {
                format!("{}  ({dirs})  {}", d.name, d.description)
            }
        })
        .collect())
}

/// Finds a device by PCM name (`None`: ALSA's `default`).
pub(crate) fn find_device(name: Option<&str>, dir: Direction) -> Result<cpal::Device, AudioError> {
    let lbl = label(name);
    let host = alsa_host(&lbl)?;
    let Some(name) = name.filter(|n| !n.is_empty() && *n != "default") else {
        let d = match dir {
            Direction::Output => host.default_output_device(),
            Direction::Input => host.default_input_device(),
        };
        return d.ok_or_else(|| AudioError::new(BACKEND, lbl, "no default device"));
    };
    if let Some(d) = host.device_by_id(&cpal::DeviceId::new(cpal::HostId::Alsa, name)) {
        return Ok(d);
    }
    let devices: Vec<cpal::Device> = host
        .devices()
        .map_err(|e| AudioError::new(BACKEND, name, format!("cannot list devices: {e}")))?
        .collect();
    // Also accept a device's description (e.g. "PulseAudio Sound Server").
    if let Some(d) = devices.iter().find(|d| {
        d.description()
            .map(|desc| desc.name() == name)
            .unwrap_or(false)
    }) {
        return Ok(d.clone());
    }
    let names: Vec<String> = devices
        .iter()
        .filter_map(|d| d.id().ok().map(|id| id.id().to_string()))
        .collect();
    Err(AudioError::new(
        BACKEND,
        name,
        format!(
            "no such ALSA device (available: {}; `--list-devices` describes them)",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
    ))
}

/// Sample formats the callbacks convert, best first.
const FORMATS: &[SampleFormat] = &[
    SampleFormat::F32,
    SampleFormat::I32,
    SampleFormat::I24,
    SampleFormat::I16,
    SampleFormat::F64,
    SampleFormat::U16,
    SampleFormat::U8,
    SampleFormat::I8,
];

/// A configuration to open a device with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chosen {
    /// Device channels.
    pub channels: u16,
    /// Hz.
    pub sample_rate: u32,
    /// Device sample format.
    pub sample_format: SampleFormat,
    /// Frames per period (cpal buffers two periods), or `None` for the device's
    /// default.
    pub period_frames: Option<u32>,
}

/// Environment variable that overrides the period size (frames) of ALSA streams,
/// for tuning on a particular device.
pub const PERIOD_ENV: &str = "SYNCSTREAM_ALSA_PERIOD_FRAMES";

/// Period for a range: about 21 ms (1024 frames at 48 kHz, a power of two) or
/// [`PERIOD_ENV`], within what the device supports. cpal keeps two periods
/// in the device buffer, so this sets the headroom against scheduling hiccups:
/// some devices default to 10 ms periods, which underrun on a loaded Pi.
fn period_for(r: &SupportedStreamConfigRange, rate_hz: u32) -> Option<u32> {
    let cpal::SupportedBufferSize::Range { min, max } = *r.buffer_size() else {
        return None;
    };
    if min > max || max == 0 {
        return None;
    }
    let wanted = std::env::var(PERIOD_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|p| *p > 0)
        .unwrap_or_else(|| (1024 * rate_hz.div_ceil(48_000).max(1)).next_power_of_two());
    Some(wanted.clamp(min.max(1), max))
}

impl Chosen {
    pub(crate) fn stream_config(&self) -> cpal::StreamConfig {
        cpal::StreamConfig {
            channels: self.channels,
            sample_rate: self.sample_rate,
            buffer_size: match self.period_frames {
                Some(p) => cpal::BufferSize::Fixed(p),
                None => cpal::BufferSize::Default,
            },
        }
    }
}

/// Preference of a device channel count when `want` channels are needed: exactly
/// `want`, then more (extra channels silent or folded), then fewer.
fn channel_rank(have: u16, want: u16) -> u32 {
    if have == want {
        0
    } else if have > want {
        (have - want) as u32
    } else {
        1000 + (want - have) as u32
    }
}

/// Picks a configuration from `ranges`: `rate_hz` if any range has it (otherwise,
/// with `allow_other_rate`, 48 kHz, 44.1 kHz or the maximum of the best range),
/// then the closest channel count, then the best sample format.
pub(crate) fn choose_config(
    ranges: &[SupportedStreamConfigRange],
    rate_hz: u32,
    want_channels: u16,
    allow_other_rate: bool,
) -> Option<Chosen> {
    let usable =
        |r: &&SupportedStreamConfigRange| r.channels() > 0 && FORMATS.contains(&r.sample_format());
    let rank = |r: &SupportedStreamConfigRange| {
        let f = FORMATS
            .iter()
            .position(|f| *f == r.sample_format())
            .unwrap_or(FORMATS.len());
        (channel_rank(r.channels(), want_channels), f)
    };
    let exact = ranges
        .iter()
        .filter(usable)
        .filter(|r| r.contains_rate(rate_hz))
        .min_by_key(|r| rank(r));
    if let Some(r) = exact {
        return Some(Chosen {
            channels: r.channels(),
            sample_rate: rate_hz,
            sample_format: r.sample_format(),
            period_frames: period_for(r, rate_hz),
        });
    }
    if !allow_other_rate {
        return None;
    }
    let r = ranges.iter().filter(usable).min_by_key(|r| rank(r))?;
    let c = r.with_standard_sample_rate();
    Some(Chosen {
        channels: c.channels(),
        sample_rate: c.sample_rate(),
        sample_format: c.sample_format(),
        period_frames: period_for(r, c.sample_rate()),
    })
}

/// Describes supported configurations for an error message.
pub(crate) fn describe_ranges(ranges: &[SupportedStreamConfigRange]) -> String {
    if ranges.is_empty() {
        return "none reported".to_string();
    }
    let mut v: Vec<String> = ranges
        .iter()
        .map(|r| {
            let rate = if r.min_sample_rate() == r.max_sample_rate() {
                format!("{} Hz", r.min_sample_rate())
            } else {
                format!("{}-{} Hz", r.min_sample_rate(), r.max_sample_rate())
            };
            format!("{} ch {} {rate}", r.channels(), r.sample_format())
        })
        .collect();
    v.dedup();
    v.join("; ")
}

/// Resolves a device and a configuration for `dir`.
pub(crate) fn resolve(
    name: Option<&str>,
    dir: Direction,
    rate_hz: u32,
    channels: u16,
    allow_other_rate: bool,
) -> Result<(cpal::Device, Chosen), AudioError> {
    let lbl = label(name);
    let device = find_device(name, dir)?;
    let ranges: Vec<SupportedStreamConfigRange> = match dir {
        Direction::Output => device.supported_output_configs().map(|i| i.collect()),
        Direction::Input => device.supported_input_configs().map(|i| i.collect()),
    }
    .map_err(|e| {
        let what = match dir {
            Direction::Output => "output",
            Direction::Input => "input",
        };
        AudioError::new(BACKEND, &lbl, format!("cannot open for {what}: {e}"))
    })?;
    let chosen = choose_config(&ranges, rate_hz, channels, allow_other_rate).ok_or_else(|| {
        AudioError::new(
            BACKEND,
            &lbl,
            format!(
                "does not support {rate_hz} Hz with a usable sample format (supported: {})",
                describe_ranges(&ranges)
            ),
        )
    })?;
    Ok((device, chosen))
}

/// Logs a stream opened on device `lbl` for `dir` with configuration `chosen`.
pub(crate) fn log_opened(lbl: &str, dir: Direction, chosen: &Chosen) {
    tracing::info!(
        device = %lbl,
        channels = chosen.channels,
        rate_hz = chosen.sample_rate,
        format = %chosen.sample_format,
        period_frames = ?chosen.period_frames,
        "ALSA {} opened",
        match dir {
            Direction::Output => "output",
            Direction::Input => "capture",
        }
    );
}

/// Runs `$body` with `$T` bound to the Rust sample type of a cpal sample format.
macro_rules! with_sample_type {
    ($fmt:expr, $T:ident => $body:expr, else $other:expr) => {
        match $fmt {
            cpal::SampleFormat::F32 => {
                type $T = f32;
                $body
            }
            cpal::SampleFormat::I32 => {
                type $T = i32;
                $body
            }
            cpal::SampleFormat::I24 => {
                type $T = cpal::I24;
                $body
            }
            cpal::SampleFormat::I16 => {
                type $T = i16;
                $body
            }
            cpal::SampleFormat::F64 => {
                type $T = f64;
                $body
            }
            cpal::SampleFormat::U16 => {
                type $T = u16;
                $body
            }
            cpal::SampleFormat::U8 => {
                type $T = u8;
                $body
            }
            cpal::SampleFormat::I8 => {
                type $T = i8;
                $body
            }
            _ => $other,
        }
    };
}
pub(crate) use with_sample_type;

/// Logs stream errors from cpal's error callback without flooding the log: the
/// first error is logged, repeats within a second are counted and summarised.
/// Xruns are counted in `xruns`.
pub(crate) struct ErrorLog {
    device: String,
    what: &'static str,
    last: Option<std::time::Instant>,
    suppressed: u64,
    xruns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Set (once) when the device is gone: the stream will not play again.
    gone: Option<std::sync::Arc<std::sync::OnceLock<String>>>,
}

impl ErrorLog {
    pub(crate) fn new(
        device: &str,
        what: &'static str,
        xruns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Self {
            device: device.to_string(),
            what,
            last: None,
            suppressed: 0,
            xruns,
            gone: None,
        }
    }

    /// Also records in `gone` the first error that ends the stream (the device was
    /// unplugged, its server went away, access was revoked).
    pub(crate) fn with_gone(mut self, gone: std::sync::Arc<std::sync::OnceLock<String>>) -> Self {
        self.gone = Some(gone);
        self
    }

    pub(crate) fn log(&mut self, e: &cpal::Error) {
        if e.kind() == cpal::ErrorKind::Xrun {
            self.xruns
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if matches!(
            e.kind(),
            cpal::ErrorKind::DeviceNotAvailable
                | cpal::ErrorKind::HostUnavailable
                | cpal::ErrorKind::PermissionDenied
        ) {
            if let Some(g) = &self.gone {
                let _ = g.set(e.to_string());
            }
        }
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            tracing::warn!(
                backend = BACKEND,
                device = %self.device,
                "{} stream error: {e} ({} similar errors in the last second not shown)",
                self.what,
                self.suppressed
            );
        } else {
            tracing::warn!(backend = BACKEND, device = %self.device, "{} stream error: {e}", self.what);
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Duration between two stream instants in µs (0 if `later` is earlier).
pub(crate) fn instant_diff_us(later: cpal::StreamInstant, earlier: cpal::StreamInstant) -> i64 {
    later
        .checked_duration_since(earlier)
        .map(|d| d.as_micros().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpal::SupportedBufferSize;

    fn range(ch: u16, min: u32, max: u32, f: SampleFormat) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(ch, min, max, SupportedBufferSize::Unknown, f)
    }

    #[test]
    fn prefers_exact_channels_and_f32_at_48k() {
        let r = [
            range(2, 8000, 192_000, SampleFormat::I16),
            range(2, 8000, 192_000, SampleFormat::F32),
            range(1, 8000, 192_000, SampleFormat::F32),
        ];
        let c = choose_config(&r, 48_000, 2, false).unwrap();
        assert_eq!(c.channels, 2);
        assert_eq!(c.sample_format, SampleFormat::F32);
        assert_eq!(c.sample_rate, 48_000);
        let c = choose_config(&r, 48_000, 1, false).unwrap();
        assert_eq!(c.channels, 1);
    }

    #[test]
    fn period_is_about_21_ms_within_the_device_range() {
        let mk = |min, max| {
            SupportedStreamConfigRange::new(
                2,
                8000,
                192_000,
                SupportedBufferSize::Range { min, max },
                SampleFormat::I16,
            )
        };
        assert_eq!(period_for(&mk(64, 8192), 48_000), Some(1024));
        assert_eq!(period_for(&mk(64, 8192), 96_000), Some(2048));
        assert_eq!(period_for(&mk(64, 512), 48_000), Some(512));
        assert_eq!(period_for(&mk(2048, 8192), 44_100), Some(2048));
        assert_eq!(
            period_for(&range(2, 8000, 48_000, SampleFormat::I16), 48_000),
            None
        );
    }

    #[test]
    fn a_stereo_only_mic_is_opened_in_stereo() {
        let r = [range(2, 48_000, 48_000, SampleFormat::I32)];
        let c = choose_config(&r, 48_000, 1, false).unwrap();
        assert_eq!((c.channels, c.sample_format), (2, SampleFormat::I32));
    }

    #[test]
    fn no_48k_is_an_error_unless_other_rates_are_allowed() {
        let r = [range(2, 44_100, 44_100, SampleFormat::I16)];
        assert!(choose_config(&r, 48_000, 2, false).is_none());
        let c = choose_config(&r, 48_000, 2, true).unwrap();
        assert_eq!(c.sample_rate, 44_100);
        let d = describe_ranges(&r);
        assert!(d.contains("44100 Hz") && d.contains("i16"), "{d}");
    }

    #[test]
    fn a_missing_device_is_named() {
        let e = find_device(Some("no-such-device-xyz"), Direction::Output).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("no-such-device-xyz") && s.contains("no such"),
            "{s}"
        );
    }
}
