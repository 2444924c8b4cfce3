//! The receiver's control core, written once for the real receiver and the simulator.
//!
//! A [`ReceiverNode`] is a state machine without I/O ("sans-IO"): the stream
//! protocol's handling (hellos, audio, clock-sync exchanges), the MQTT side (offsets,
//! commands, the config push, the status), the drift measurement loop and calibration
//! test tones. Events come in as method calls with the local time they happen at
//! (`now_us`, the receiver's own clock); what the node wants done goes out through a
//! [`ReceiverIo`]. It owns the control side of the audio engine
//! ([`crate::realtime::AudioControl`]) and never shares a lock with the audio
//! callbacks.
//!
//! The real receiver ([`crate::runtime`]) drives a node from one tokio task with TCP,
//! rumqttc and reqwest behind its `ReceiverIo`; the simulator drives the same node on
//! virtual time with a simulated network. Both call [`ReceiverNode::poll`] at least
//! every [`POLL_INTERVAL_US`].
//!
//! Modules: [`io`] (the trait and its messages), `stream` (the stream connection),
//! `control` (MQTT), `measure` (drift and test tones), `announce` (spoken
//! diagnostics, [`crate::voice`]), `snapcast` (playing from a Snapcast server instead
//! of a transmitter).

mod announce;
mod control;
pub mod io;
mod measure;
mod snapcast;
mod stream;

pub use io::{Job, JobDone, PersistedState, ReceiverIo, Window, WindowRequest};
pub use snapcast::{snapcast_gain, snapcast_playout_delay_ms, SNAPCAST_STREAM};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use syncstream_dsp::DelayEstimator;
use syncstream_protocol::codec::AudioDecoder;
use syncstream_protocol::messages::{DriftReport, Status};
use syncstream_shared::limits::OffsetLimits;
use syncstream_shared::names::check_device_name;
use syncstream_shared::profile::DeviceProfile;
use syncstream_shared::time::STREAM_SAMPLE_RATE;

use crate::clock_sync::ClockSync;
use crate::drift::{DriftConfig, Measurement, MicRecorder};
use crate::mic_resample::MicResampler;
use crate::offset::OffsetRamp;
use crate::own_sound::OwnSound;
use crate::playout::StreamParams;
use crate::playout_log::PlayoutLog;
use crate::realtime::{AudioControl, AudioStatsSnapshot, ToRender};
use crate::reference::ReferenceRing;
use crate::test_tone::ToneSession;
use crate::voice::{SpeechSpan, VoiceConfig};

/// Longest interval between two [`ReceiverNode::poll`] calls, µs: the audio rings are
/// drained, and time requests sent, at this cadence.
pub const POLL_INTERVAL_US: i64 = 20_000;
/// Interval between clock-sync requests, µs (20 a second, ~1.2 kB/s both ways: the more
/// exchanges, the more of them cross a jittery network without queueing, and those are
/// the ones clock sync relies on).
pub const SYNC_INTERVAL_US: i64 = 50_000;
/// Interval between status publications, µs.
pub const STATUS_INTERVAL_US: i64 = 5_000_000;
/// Shortest interval between two status publications made because the state changed
/// (a receiver at the edge of running dry would otherwise publish every poll), µs.
/// Every change but the routine start (`connecting` → `playing`) is published so.
pub const STATUS_CHANGE_GAP_US: i64 = 1_000_000;
/// Seconds of microphone audio kept.
pub const MIC_HISTORY_S: f64 = 4.0;
/// How long a source-window request may take, µs.
pub const WINDOW_TIMEOUT_US: i64 = 5_000_000;
/// Outstanding clock-sync requests remembered (answers to others are refused).
pub const MAX_OUTSTANDING_REQUESTS: usize = 64;
/// An offset change that is persisted, ms.
pub const PERSIST_STEP_MS: f64 = 0.05;
/// Below this output gain (device volume × group volume) a receiver does not measure
/// its drift: its microphone would mostly hear the other speakers.
pub const MIN_MEASURE_GAIN: f64 = 0.1;
/// Largest MQTT payload handled, bytes (bigger ones are dropped with a warning).
pub const MAX_MQTT_PAYLOAD: usize = 64 * 1024;

/// What a receiver node is configured with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Device name (checked: letters, digits, `-`, `_`, 1 to 64 characters).
    pub device: String,
    /// Random number identifying this receiver process (see the stream hello).
    pub instance: u64,
    /// Device profile (the offset starts at its base latency).
    pub profile: DeviceProfile,
    /// Drift detector settings.
    pub drift: DriftConfig,
    /// Microphone sample rate, Hz (any: the node converts it to 48 kHz, see
    /// [`crate::mic_resample`]).
    pub mic_rate_hz: u32,
    /// What the last run of this receiver kept (its offset); `None` on a first start.
    pub persisted: Option<PersistedState>,
    /// The pairing key: the stream handshake proves it (see
    /// [`syncstream_protocol::auth::StreamAuth`]).
    pub key: syncstream_protocol::auth::PairingKey,
}

/// The stream connection's state.
#[derive(Debug)]
enum Link {
    /// No connection.
    Down,
    /// Connected, hello sent, waiting for the transmitter's challenge (nothing else is
    /// accepted before it: a transmitter that cannot prove the pairing key is not
    /// played from).
    AwaitingChallenge,
    /// The challenge passed and was answered; waiting for the transmitter's hello.
    AwaitingHello,
    /// Connected; the hello's playout delay was too short for this device, a longer
    /// one was asked for, and the hello that brings it is awaited (audio meanwhile is
    /// dropped).
    AwaitingDelay,
    /// Streaming.
    Up,
}

/// Counters of what the node refused or did, for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Stream frames that could not be decoded or were out of range.
    pub frames_rejected: u64,
    /// Clock-sync answers refused (impossible, unsolicited or inconsistent).
    pub exchanges_rejected: u64,
    /// MQTT payloads refused (malformed, oversized, out of range).
    pub mqtt_rejected: u64,
    /// Drift reports made.
    pub reports: u64,
    /// Buffer offsets applied.
    pub offsets_applied: u64,
    /// Measurements whose source window came from the decoded stream the receiver
    /// keeps.
    pub windows_local: u64,
    /// Measurements whose source window had to be fetched from the transmitter.
    pub windows_fetched: u64,
}

/// A copy of what a node shows (for the demo's table and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    /// Device name.
    pub device: String,
    /// The status's state (`playing`, `muted`, `starved`, `connecting`, `stopped`,
    /// `error`).
    pub state: String,
    /// Offset asked for, ms (at its reference time).
    pub offset_ms: f64,
    /// The offset with its rate and reference time (what the playout follows).
    pub offset: OffsetRamp,
    /// Last drift report.
    pub last_report: Option<DriftReport>,
    /// Streaming (hello received, connection up).
    pub connected: bool,
    /// The audio callbacks' counters.
    pub audio: AudioStatsSnapshot,
    /// The node's counters.
    pub counters: NodeCounters,
    /// Clock-sync rate estimate (transmitter µs per local µs, minus 1).
    pub clock_rate: f64,
    /// The clock-sync mapping, once there is one.
    pub clock: Option<crate::clock_sync::ClockMapping>,
    /// Clock-sync exchanges in the fit's window.
    pub exchanges: usize,
    /// Output gain in effect: the device's volume times its group's, 0..=1.
    pub gain: f64,
    /// Muted (the device or its group).
    pub muted: bool,
}

/// The receiver's control core (see the module docs).
pub struct ReceiverNode {
    device: String,
    instance: u64,
    /// The stream handshake, and this connection's nonce in it.
    auth: syncstream_protocol::auth::StreamAuth,
    client_nonce: syncstream_protocol::auth::Nonce,
    profile: DeviceProfile,
    drift_cfg: DriftConfig,
    audio: AudioControl,
    xruns: Vec<Arc<AtomicU64>>,
    // The stream.
    link: Link,
    clock: ClockSync,
    decoder: Option<AudioDecoder>,
    params: Option<StreamParams>,
    limits: OffsetLimits,
    outstanding: VecDeque<i64>,
    next_sync_us: i64,
    requests_sent: u64,
    pcm: Vec<f32>,
    /// Name of the stream played (from the hello or a switch; source windows name it).
    stream: String,
    /// Why the receiver cannot play (a refusal, a profile that does not fit).
    error: Option<String>,
    /// Why the output is silent (it cannot be opened, it stopped), from the output
    /// supervisor.
    output_error: Option<String>,
    /// The output applies volume itself (the render callback plays at unity gain).
    hardware_volume: bool,
    // Playout as asked for (the render callback has the same).
    offset: OffsetRamp,
    /// The offset is the controller's: one it sent, or the one kept from an earlier
    /// run (`<device>.state.json`, itself the controller's). A profile from
    /// `syncstream/config` then no longer replaces it.
    offset_from_controller: bool,
    /// The offset last handed to [`ReceiverIo::persist`], ms.
    persisted_offset_ms: Option<f64>,
    /// Epoch of the stream last played (a reconnect to the same transmitter keeps clock
    /// sync; another epoch is another transmitter time base).
    last_epoch_us: Option<i64>,
    volume: f64,
    muted: bool,
    /// The group's volume and mute and the group's name, from `syncstream/settings`.
    group_volume: f64,
    group_muted: bool,
    group: String,
    stopped: bool,
    log: PlayoutLog,
    /// Audio has played since the last hello.
    played: bool,
    // Drift measurements.
    /// The microphone's last seconds, at 48 kHz.
    mic: MicRecorder,
    /// Converts the microphone's blocks to 48 kHz (passes 48 kHz through).
    mic_in: MicResampler,
    tracking: bool,
    last_report: Option<DriftReport>,
    next_measure_us: i64,
    estimator: Option<Box<DelayEstimator>>,
    window_seq: u64,
    pending: Option<(u64, Measurement, i64)>,
    /// The decoded stream's last seconds: the measurements' source windows.
    reference: ReferenceRing,
    /// What this device's own sound looks like in its correlations.
    own_sound: OwnSound,
    /// Measurements made sooner in a row (see `measure::MAX_FOLLOW_UPS`).
    follow_ups: u32,
    /// The kind of the last report, for the follow-ups.
    last_class: u8,
    /// Whether the output was silent (muted, stopped, …) at the last poll, or was just
    /// unmuted or started: when it sounds, the next measurement comes as soon as a
    /// window holds its sound, and no sooner or later.
    was_silent: bool,
    // Test tones.
    tone: Option<ToneSession>,
    tone_running: Option<Option<String>>,
    quiet_until_us: i64,
    // Announcements (`announce`).
    voice: VoiceConfig,
    /// Announcements asked for so far (the last one's id).
    speech_seq: u64,
    /// A synthesis in flight: its id and the local time it is given up at, µs.
    speech_pending: Option<(u64, i64)>,
    /// The last announcement played (kept: the drift detector skips windows that
    /// overlap it).
    speech: Option<SpeechSpan>,
    /// The render callback's overlay holds the last announcement.
    speech_armed: bool,
    /// The start-up announcement was asked for.
    announced_at_start: bool,
    // Status.
    next_status_us: i64,
    /// The state last published, and when (local µs).
    published_state: (&'static str, i64),
    counters: NodeCounters,
    /// Playing from a Snapcast server (see `snapcast`): what that needs.
    snap: Option<Box<snapcast::SnapSource>>,
}

impl ReceiverNode {
    /// A node for `cfg` at local time `now_us`, owning the control side of its audio
    /// engine; the offset starts at the one kept from an earlier run (`cfg.persisted`),
    /// else at the profile's base latency.
    ///
    /// Errors: an invalid device name or profile (the message says why).
    pub fn new(cfg: NodeConfig, audio: AudioControl, now_us: i64) -> Result<Self, String> {
        check_device_name(&cfg.device).map_err(|e| e.to_string())?;
        cfg.profile
            .validate()
            .map_err(|e| format!("profile of {}: {e}", cfg.device))?;
        let kept_offset_ms = cfg
            .persisted
            .map(|p| p.offset_ms)
            .filter(|o| OffsetLimits::widest().contains(*o));
        let start_offset_ms = kept_offset_ms.unwrap_or(cfg.profile.base_latency_ms);
        let mic_in = MicResampler::new(cfg.mic_rate_hz)
            .map_err(|e| format!("microphone of {}: {e}", cfg.device))?;
        let mut me = Self {
            device: cfg.device,
            instance: cfg.instance,
            auth: syncstream_protocol::auth::StreamAuth::new(cfg.key),
            client_nonce: [0; syncstream_protocol::auth::NONCE_BYTES],
            offset: OffsetRamp::constant(start_offset_ms),
            persisted_offset_ms: cfg.persisted.map(|p| p.offset_ms),
            profile: cfg.profile,
            next_measure_us: now_us + cfg.drift.first_after_ms as i64 * 1000,
            drift_cfg: cfg.drift,
            audio,
            xruns: Vec::new(),
            link: Link::Down,
            clock: ClockSync::default(),
            decoder: None,
            params: None,
            limits: OffsetLimits::widest(),
            outstanding: VecDeque::with_capacity(MAX_OUTSTANDING_REQUESTS),
            next_sync_us: now_us,
            requests_sent: 0,
            pcm: Vec::new(),
            stream: String::new(),
            error: None,
            output_error: None,
            hardware_volume: false,
            offset_from_controller: kept_offset_ms.is_some(),
            last_epoch_us: None,
            volume: 1.0,
            muted: false,
            group_volume: 1.0,
            group_muted: false,
            group: String::new(),
            stopped: false,
            log: PlayoutLog::default(),
            played: false,
            mic: MicRecorder::new(STREAM_SAMPLE_RATE, MIC_HISTORY_S),
            mic_in,
            tracking: false,
            last_report: None,
            estimator: Some(Box::new(DelayEstimator::new(STREAM_SAMPLE_RATE))),
            window_seq: 0,
            pending: None,
            reference: ReferenceRing::default(),
            own_sound: OwnSound::default(),
            follow_ups: 0,
            last_class: 0,
            was_silent: false,
            tone: None,
            tone_running: None,
            quiet_until_us: i64::MIN,
            voice: VoiceConfig::default(),
            speech_seq: 0,
            speech_pending: None,
            speech: None,
            speech_armed: false,
            announced_at_start: false,
            next_status_us: now_us,
            published_state: ("", i64::MIN),
            counters: NodeCounters::default(),
            snap: None,
        };
        me.audio.send(ToRender::Offset(me.offset));
        Ok(me)
    }

    /// Adds an xrun counter of an audio device to the status (the sink's and the
    /// microphone's).
    pub fn add_xrun_counter(&mut self, counter: Arc<AtomicU64>) {
        self.xruns.push(counter);
    }

    /// Sets how the node speaks announcements (the text-to-speech program, and whether
    /// it announces itself when it first plays); the default is
    /// [`VoiceConfig::default`].
    pub fn set_voice(&mut self, voice: VoiceConfig) {
        self.voice = voice;
    }

    /// This receiver process's instance (see the stream hello).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Device name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The profile in use.
    pub fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// The offset asked for (what the render callback plays with).
    pub fn offset(&self) -> OffsetRamp {
        self.offset
    }

    /// Clock sync.
    pub fn clock(&self) -> &ClockSync {
        &self.clock
    }

    /// Whether the stream is up (the transmitter's hello was accepted).
    pub fn connected(&self) -> bool {
        matches!(self.link, Link::Up)
    }

    /// Name of the stream played (empty before the first hello).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The last drift report this node made.
    pub fn last_report(&self) -> Option<&DriftReport> {
        self.last_report.as_ref()
    }

    /// The node's counters.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// Local time of the next drift measurement, µs.
    pub fn next_measurement_us(&self) -> i64 {
        self.next_measure_us
    }

    /// Whether a test tone is being recorded (the microphone must run).
    pub fn recording_tone(&self) -> bool {
        self.tone.is_some()
    }

    /// Whether an announcement is being synthesised or played.
    pub fn speaking(&self) -> bool {
        self.speech_pending.is_some() || self.speech_armed
    }

    /// When the node next needs a [`ReceiverNode::poll`] (local time, µs).
    pub fn next_wakeup_us(&self, now_us: i64) -> i64 {
        (now_us + POLL_INTERVAL_US)
            .min(self.next_measure_us)
            .min(self.next_status_us)
            .min(if matches!(self.link, Link::Up) {
                self.next_sync_us
            } else {
                i64::MAX
            })
    }

    /// A copy of what the node shows.
    pub fn snapshot(&self) -> NodeSnapshot {
        NodeSnapshot {
            device: self.device.clone(),
            state: self.status(0).state,
            offset_ms: self.offset.offset_ms,
            offset: self.offset,
            last_report: self.last_report.clone(),
            connected: self.connected(),
            audio: self.audio.stats().snapshot(),
            counters: self.counters,
            clock_rate: self.clock.rate(),
            clock: self.clock.mapping(),
            exchanges: self.clock.exchanges(),
            gain: self.volume * self.group_volume,
            muted: self.muted || self.group_muted,
        }
    }

    /// The status's state: `error` (a refusal, a profile that does not fit, an output
    /// that cannot play), `stopped` (a stop command), `starved` (the output asks for
    /// audio the receiver does not have: the stream ran dry or the transmitter is
    /// gone), `connecting` (nothing played yet), `muted` (the device or its group),
    /// else `playing`.
    fn state_name(&self, a: &AudioStatsSnapshot) -> &'static str {
        if self.error.is_some() || self.output_error.is_some() {
            "error"
        } else if self.stopped {
            "stopped"
        } else if a.starved && a.frames > 0 && a.underruns > 0 {
            "starved"
        } else if !self.played {
            "connecting"
        } else if self.muted || self.group_muted {
            "muted"
        } else {
            "playing"
        }
    }

    /// The status's state ([`Self::state_name`]) and the reason for it, in words.
    fn state(&self, a: &AudioStatsSnapshot) -> (&'static str, Option<String>) {
        let state = self.state_name(a);
        let reason = match state {
            "error" => self.error.clone().or_else(|| self.output_error.clone()),
            "stopped" => Some("stopped by a command".to_string()),
            "starved" if self.connected() => Some("the audio stream ran dry".to_string()),
            "starved" => {
                Some("the transmitter is unreachable; the buffered audio ran out".to_string())
            }
            "muted" if self.muted => Some("the device is muted".to_string()),
            "muted" => Some(format!("its group '{}' is muted", self.group)),
            _ => None,
        };
        (state, reason)
    }

    /// The status published on `syncstream/status/<device>` at local time `now_us`.
    pub fn status(&self, now_us: i64) -> Status {
        self.status_from(&self.audio.stats().snapshot(), now_us)
    }

    fn status_from(&self, a: &AudioStatsSnapshot, now_us: i64) -> Status {
        let (state, reason) = self.state(a);
        Status {
            device: self.device.clone(),
            state: state.into(),
            reason,
            offset_ms: self.offset.offset_ms,
            drift_ms: self.last_report.as_ref().and_then(|r| r.drift_ms),
            confidence: self.last_report.as_ref().map_or(0.0, |r| r.confidence),
            playout_delay_ms: self
                .params
                .map_or(0.0, |p| p.playout_delay_us as f64 / 1000.0),
            volume: self.volume,
            muted: self.muted,
            underruns: a.underruns,
            xruns: self.xruns.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
            late_callbacks: a.late_renders + a.late_captures,
            jumps: a.jumps,
            output: self.profile.output_type.as_str().into(),
            ts_us: now_us,
            version: Some(syncstream_shared::version::running()),
            stream: (!self.stream.is_empty()).then(|| self.stream.clone()),
            group: (!self.group.is_empty()).then(|| self.group.clone()),
        }
    }

    /// Advances the node to local time `now_us`: drains the audio rings, sends due
    /// clock-sync requests, starts due measurements, finishes test tones, publishes the
    /// status when due.
    pub fn poll(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        // Clock-sync requests first: their t1 is `now_us`, so nothing may come between.
        self.poll_stream(now_us, io);
        self.pump_audio();
        self.poll_speech(now_us, io);
        self.poll_measurements(now_us, io);
        let state = self.state_name(&self.audio.stats().snapshot());
        let (published, at) = self.published_state;
        // A change is published at once, except the routine start (connecting →
        // playing), which the next regular status reports.
        let changed = state != published && !(published == "connecting" && state == "playing");
        if now_us >= self.next_status_us
            || (changed && now_us.saturating_sub(at) >= STATUS_CHANGE_GAP_US)
        {
            self.publish_status(now_us, io);
        }
    }

    fn pump_audio(&mut self) {
        let (log, mic, mic_in, tone, played) = (
            &mut self.log,
            &mut self.mic,
            &mut self.mic_in,
            &mut self.tone,
            &mut self.played,
        );
        self.audio.pump(
            |b| {
                log.record(b);
                *played |= b.scheduled && !b.missing;
            },
            |m| {
                mic_in.push(m.samples(), m.adc_time_us, &mut |s: &[f32], t: i64| {
                    mic.push(s, t);
                    if let Some(tone) = tone.as_mut() {
                        tone.recorder.capture(s, t, STREAM_SAMPLE_RATE);
                    }
                });
            },
        );
        if let Some(j) = self.audio.stats().last_jump_us() {
            self.log.note_jump(j);
        }
    }

    fn publish_status(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        self.next_status_us = now_us + STATUS_INTERVAL_US;
        let a = self.audio.stats().snapshot();
        let s = self.status_from(&a, now_us);
        self.published_state = (self.state_name(&a), now_us);
        match serde_json::to_vec(&s) {
            Ok(payload) => io.publish(
                syncstream_protocol::messages::topics::status(&self.device),
                payload,
                true,
            ),
            Err(e) => tracing::warn!("cannot encode the status: {e}"),
        }
    }

    /// Whether the output is silent or nearly (muted, stopped, or a gain below
    /// [`MIN_MEASURE_GAIN`]): then the drift is not measured.
    fn silent(&self) -> bool {
        self.muted
            || self.group_muted
            || self.stopped
            || self.output_error.is_some()
            || self.volume * self.group_volume < MIN_MEASURE_GAIN
    }

    /// Tells the render callback the gain and mute in effect: the device's own times
    /// its group's.
    /// With an output that applies volume itself, the callback plays at unity gain
    /// and the output supervisor sets the device from [`NodeSnapshot::gain`].
    fn send_gain(&mut self) {
        if self.hardware_volume {
            self.audio.send(ToRender::Volume(1.0));
            self.audio.send(ToRender::Muted(false));
        } else {
            self.audio
                .send(ToRender::Volume(self.volume * self.group_volume));
            self.audio
                .send(ToRender::Muted(self.muted || self.group_muted));
        }
    }

    /// The output supervisor's news: the output plays (and whether it has its own
    /// volume) or why it is silent. A change is published in the status at once.
    pub fn on_output(
        &mut self,
        state: crate::output::OutputState,
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        let changed =
            state.error != self.output_error || state.hardware_volume != self.hardware_volume;
        self.output_error = state.error;
        if state.hardware_volume != self.hardware_volume {
            self.hardware_volume = state.hardware_volume;
            self.send_gain();
        }
        if changed {
            self.publish_status(now_us, io);
        }
    }

    /// Sets the offset (kept inside the stream's limits with its rate, see
    /// [`OffsetRamp::bounded`]) and tells the render callback.
    fn set_offset(&mut self, ramp: OffsetRamp) {
        let ramp = ramp.bounded(&self.limits);
        self.offset = ramp;
        self.audio.send(ToRender::Offset(ramp));
    }

    /// Hands the offset to [`ReceiverIo::persist`] when it moved by 0.05 ms or more.
    fn persist_if_moved(&mut self, io: &mut impl ReceiverIo) {
        let o = self.offset.offset_ms;
        if self
            .persisted_offset_ms
            .is_none_or(|p| (p - o).abs() >= PERSIST_STEP_MS)
        {
            self.persisted_offset_ms = Some(o);
            io.persist(&PersistedState { offset_ms: o });
        }
    }
}

#[cfg(test)]
mod tests;
