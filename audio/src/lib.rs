//! Audio I/O behind traits, with a registry of backends (the pattern of librespot's
//! `Sink` and its `BACKENDS` table).
//!
//! Output is *pulled*: a [`Sink`] calls its [`RenderFn`] for every block it needs,
//! telling it when the block's first frame will leave the output (the "DAC time",
//! on the receiver's local clock). Capture is *pushed*: a [`Microphone`] calls its
//! [`CaptureFn`] with every block it records and the time its first frame was
//! sampled ("ADC time"). With both times on one clock, playout can be scheduled to
//! the sample and recordings lined up with the source.
//!
//! Backends: `alsa` (ALSA through cpal: analog, USB DACs, HDMI), `bluetooth` (an A2DP
//! speaker through PulseAudio/PipeWire or bluez-alsa), `airplay` (the sound server's
//! RAOP sink), `pulse` (any PulseAudio/PipeWire sink), `command` (raw PCM into a player
//! program), `cast` (a Chromecast / Google Cast device, feature `cast`), `wav` (writes
//! a WAV file), `null` (discards, paced by the clock); a profile's `type` chooses one
//! ([`backend_for`]) and its `target` is the device. The virtual room
//! (`syncstream-room`) provides its own sink and microphone per simulated device. [`decode`] reads audio
//! files (any format symphonia reads) into 48 kHz samples.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use syncstream_shared::time::Clock;

pub mod airplay;
pub mod alsa;
pub mod bluetooth;
#[cfg(feature = "cast")]
pub mod cast;
pub mod command;
pub mod decode;
pub mod null;
pub mod pulse;
pub mod wav;

/// Sample rate and channel count of a block of interleaved f32 samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    /// Hz.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
}

/// What a render call produced, for diagnostics and for the virtual room's ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RenderInfo {
    /// Presentation timestamp (transmitter clock, µs) of the block's first frame,
    /// or `None` when the block is silence that stands for no source audio.
    pub source_pts_us: Option<f64>,
}

/// Fills `out` (interleaved, `channels` × frames) with audio whose first frame leaves
/// the output at `dac_time_us` (local clock).
pub type RenderFn = Box<dyn FnMut(&mut [f32], i64) -> RenderInfo + Send>;

/// Receives a block of mono microphone samples whose first sample was taken at
/// `adc_time_us` (local clock).
pub type CaptureFn = Box<dyn FnMut(&[f32], i64) + Send>;

/// An audio I/O failure; names the backend and device.
#[derive(Debug, thiserror::Error)]
#[error("{backend} audio backend ({device}): {reason}")]
pub struct AudioError {
    /// Backend name (`alsa`, `wav`, ...).
    pub backend: &'static str,
    /// Device name or path.
    pub device: String,
    /// Why.
    pub reason: String,
}

impl AudioError {
    /// Shorthand constructor.
    pub fn new(backend: &'static str, device: impl Into<String>, reason: impl ToString) -> Self {
        Self {
            backend,
            device: device.into(),
            reason: reason.to_string(),
        }
    }
}

/// An audio output.
pub trait Sink: Send {
    /// Starts pulling audio through `render`. Errors if the device cannot be opened.
    fn start(&mut self, render: RenderFn) -> Result<(), AudioError>;
    /// Stops output; `start` may be called again.
    fn stop(&mut self) -> Result<(), AudioError>;
    /// Format the sink pulls.
    fn format(&self) -> StreamFormat;
    /// The counter of xruns (buffer underruns the device reported) of this output;
    /// backends that cannot have any return a counter that stays 0.
    fn xrun_counter(&self) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(0))
    }
    /// Whether the output has a volume of its own (an ALSA hardware mixer, a Cast
    /// device's volume) that [`Sink::set_volume`] sets. When it has, the receiver
    /// leaves samples unscaled and sets the volume here; otherwise it scales samples.
    fn has_hardware_volume(&self) -> bool {
        false
    }
    /// Sets the output's own volume to `volume` (linear, 0..=1) and `muted`.
    /// Outputs without a volume of their own do nothing and return `Ok(())`.
    /// Errors: the mixer or the device refused (named, with the reason).
    fn set_volume(&mut self, _volume: f64, _muted: bool) -> Result<(), AudioError> {
        Ok(())
    }
    /// Why the output stopped playing after a successful `start` (a player process
    /// exited, a Cast device ended the session, the device disappeared), or `None`
    /// while it plays. The receiver then stops it and reopens it with backoff.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// An audio input (mono).
pub trait Microphone: Send {
    /// Starts pushing blocks to `capture`. Errors if the device cannot be opened.
    fn start(&mut self, capture: CaptureFn) -> Result<(), AudioError>;
    /// Stops capture; `start` may be called again.
    fn stop(&mut self) -> Result<(), AudioError>;
    /// Sample rate of the blocks, Hz.
    fn sample_rate(&self) -> u32;
    /// The counter of xruns (buffer overruns the device reported) of this input;
    /// backends that cannot have any return a counter that stays 0.
    fn xrun_counter(&self) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(0))
    }
}

/// What every backend builder gets.
#[derive(Clone)]
pub struct BackendConfig {
    /// Device: an ALSA/cpal device name, a WAV path, or `None` for the default.
    pub device: Option<String>,
    /// Format to open with (microphones use `sample_rate` and one channel).
    pub format: StreamFormat,
    /// The receiver's local clock, on which DAC and ADC times are given.
    pub clock: Arc<dyn Clock>,
}

/// Builds a sink from a config.
pub type SinkBuilder = fn(&BackendConfig) -> Result<Box<dyn Sink>, AudioError>;
/// Builds a microphone from a config.
pub type MicrophoneBuilder = fn(&BackendConfig) -> Result<Box<dyn Microphone>, AudioError>;

/// Output backends by name; the first is the default for real hardware.
pub const SINK_BACKENDS: &[(&str, SinkBuilder)] = &[
    ("alsa", alsa::open_sink),
    ("bluetooth", bluetooth::open_sink),
    ("airplay", airplay::open_sink),
    ("pulse", pulse::open_sink),
    ("command", command::open_sink),
    ("wav", wav::open_sink),
    ("null", null::open_sink),
    #[cfg(feature = "cast")]
    ("cast", cast::open_sink),
];

/// Microphone backends by name.
pub const MICROPHONE_BACKENDS: &[(&str, MicrophoneBuilder)] = &[
    ("alsa", alsa::open_microphone),
    ("wav", wav::open_microphone),
    ("null", null::open_microphone),
];

/// The sink builder called `name`.
pub fn find_sink(name: &str) -> Option<SinkBuilder> {
    SINK_BACKENDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// The microphone builder called `name`.
pub fn find_microphone(name: &str) -> Option<MicrophoneBuilder> {
    MICROPHONE_BACKENDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// The output backend a profile's `type` plays through: `alsa` for analog and HDMI
/// outputs (the `target` is the ALSA device), `bluetooth`, `airplay`, and `cast` for
/// Chromecast (present in builds with the `cast` feature).
pub fn backend_for(output_type: syncstream_shared::profile::OutputType) -> &'static str {
    use syncstream_shared::profile::OutputType;
    match output_type {
        OutputType::Analog | OutputType::Hdmi => "alsa",
        OutputType::Bluetooth => "bluetooth",
        OutputType::Airplay => "airplay",
        OutputType::Chromecast => "cast",
    }
}

/// Names of all backends, for `--help` and errors.
pub fn backend_names() -> Vec<&'static str> {
    SINK_BACKENDS.iter().map(|(n, _)| *n).collect()
}
