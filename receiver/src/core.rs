//! The receiver's shared state: everything the audio callbacks, the stream client,
//! the drift detector and the MQTT agent read and change, behind one mutex.

use std::sync::{Arc, Mutex};

use syncstream_audio::{CaptureFn, RenderFn};
use syncstream_protocol::messages::DriftReport;
use syncstream_shared::profile::DeviceProfile;

use crate::clock_sync::ClockSync;
use crate::drift::MicRecorder;
use crate::jitter_buffer::JitterBuffer;
use crate::playout::Playout;
use crate::test_tone::TestTone;

/// Shared receiver state.
pub struct Core {
    /// Device name.
    pub device: String,
    /// Transmitter clock estimate.
    pub clock: ClockSync,
    /// Decoded audio.
    pub jitter_buffer: JitterBuffer,
    /// Playout scheduler.
    pub playout: Playout,
    /// Recent microphone audio.
    pub mic: MicRecorder,
    /// The device profile in use.
    pub profile: DeviceProfile,
    /// Whether a buffer offset has come from the controller (then a new profile's
    /// base latency no longer overrides it).
    pub offset_from_controller: bool,
    /// Last drift report.
    pub last_report: Option<DriftReport>,
    /// Whether the last measurements were small (search a narrow range).
    pub tracking: bool,
    /// Connected to the transmitter?
    pub connected: bool,
    /// Calibration test tone (overlays the output, records the microphone).
    pub test_tone: TestTone,
}

/// A handle to the shared state.
pub type SharedCore = Arc<Mutex<Core>>;

impl Core {
    /// A core for `device` with `profile`; the initial offset is the profile's base latency.
    pub fn new(device: &str, profile: DeviceProfile, mic_rate: u32) -> Self {
        Self {
            device: device.to_string(),
            clock: ClockSync::default(),
            jitter_buffer: JitterBuffer::new(2, 48_000 * 4),
            playout: Playout::new(profile.base_latency_ms),
            mic: MicRecorder::new(mic_rate, 4.0),
            profile,
            offset_from_controller: false,
            last_report: None,
            tracking: false,
            connected: false,
            test_tone: TestTone::default(),
        }
    }
}

impl Core {
    /// Applies a buffer offset from the controller (`offset_ms` at transmitter time
    /// `ref_us`, changing by `rate_ms_per_s`), clamped to what the playout buffer can do
    /// (−50 ms to playout delay − 50 ms, at most ±1 ms/s). Returns the offset applied, ms.
    pub fn apply_offset(&mut self, offset_ms: f64, rate_ms_per_s: f64, ref_us: i64) -> f64 {
        let limit = self.playout.stream().map_or(f64::MAX, |s| {
            (s.playout_delay_us as f64 / 1000.0 - 50.0).max(0.0)
        });
        let ms = offset_ms.clamp(-50.0, limit);
        let rate = if rate_ms_per_s.is_finite() {
            rate_ms_per_s.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        self.playout.set_offset_ramp(ms, rate, ref_us as f64);
        self.offset_from_controller = true;
        ms
    }

    /// Records a drift report this receiver made: a confident small drift keeps the
    /// detector in tracking mode (narrow search), anything else acquiring.
    pub fn note_report(&mut self, report: &DriftReport, track_below_ms: f64) {
        if let Some(d) = report.drift_ms.filter(|_| report.confidence >= 0.6) {
            self.tracking = d.abs() < track_below_ms;
        }
        self.last_report = Some(report.clone());
    }
}

/// The render callback for the receiver's sink.
pub fn render_fn(core: SharedCore) -> RenderFn {
    Box::new(move |out: &mut [f32], dac_time_us: i64| {
        let mut c = core.lock().unwrap();
        let c = &mut *c;
        let info = c
            .playout
            .render(out, dac_time_us, &c.clock, &c.jitter_buffer);
        // Keep a little history behind the read position for slewing and crossfades.
        if let Some(p) = c.playout.position() {
            c.jitter_buffer.trim_before(p as i64 - 48_000);
        }
        c.test_tone.overlay(
            out,
            dac_time_us,
            syncstream_shared::time::STREAM_CHANNELS as usize,
        );
        info
    })
}

/// The capture callback for the receiver's microphone.
pub fn capture_fn(core: SharedCore) -> CaptureFn {
    Box::new(move |block: &[f32], adc_time_us: i64| {
        let mut c = core.lock().unwrap();
        let rate = c.mic.rate();
        c.test_tone.capture(block, adc_time_us, rate);
        c.mic.push(block, adc_time_us);
    })
}
