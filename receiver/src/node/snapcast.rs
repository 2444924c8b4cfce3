//! Playing from a Snapcast server: the node's side of
//! [`crate::snapcast::connection`].
//!
//! The server's steady clock takes the transmitter clock's place: its Time exchanges
//! are four-timestamp exchanges like the transmitter's and go into the same
//! [`crate::clock_sync::ClockSync`]. A WireChunk stamped `t` (server µs, its first
//! sample's capture time) is source sample `round(t · 48 kHz)` of a stream whose epoch
//! is server time 0, and plays at server time `t + bufferMs − latency`, as snapclient
//! plays it (the research notes, 1.7): the playout delay is `bufferMs − latency`
//! from the latest ServerSettings. The device's own output latency is this receiver's
//! offset, as with a transmitter; snapclient has a fixed `--latency` for it instead.
//!
//! Volume and mute follow the server (Snapweb, Music Assistant, JSON-RPC): the percent
//! goes through snapclient's software-mixer curve, `(10^(p/100) − 1) / 9`, so both
//! clients sound as loud at one setting. A muted client gets no chunks from the server
//! and plays silence.
//!
//! No source-window service exists on a snapserver: the drift measurements correlate
//! the microphone with the decoded stream the node keeps (as it does with a
//! transmitter), and the node is its own sync controller: each drift report goes
//! through a [`SyncController`] of its own, whose offsets it applies. The reports and
//! the status still go to MQTT when a broker is configured; offsets from MQTT are
//! ignored.

use syncstream_controller::{ControllerConfig, Decision, SyncController};
use syncstream_protocol::messages::DriftReport;
use syncstream_protocol::snapcast::{ServerSettings, StreamCodec};
use syncstream_shared::limits::{OffsetLimits, MAX_PLAYOUT_DELAY_MS, MIN_PLAYOUT_DELAY_MS};
use syncstream_shared::time::{STREAM_CHANNELS, STREAM_SAMPLE_RATE};
use tracing::{debug, info, warn};

use super::stream::{reference_seconds, SWITCH_QUIET_MS};
use super::{Link, ReceiverIo, ReceiverNode};
use crate::clock_sync::MAX_ABS_TIMESTAMP_US;
use crate::playout::StreamParams;
use crate::realtime::ToRender;
use crate::reference::ReferenceRing;
use crate::snapcast::decode::SnapDecoder;
use crate::snapcast::Event;

/// The stream name a Snapcast server's audio has in statuses and logs.
pub const SNAPCAST_STREAM: &str = "snapcast";
/// The playout delay before the first ServerSettings, ms (snapserver's default buffer).
pub const DEFAULT_BUFFER_MS: u32 = 1000;
/// A chunk whose computed first sample is this close to where the previous chunk
/// ended follows on from it, samples (the server's µs timestamps are rounded).
pub const CONTIGUOUS_SLACK_SAMPLES: i64 = 2;

/// What a node playing from a Snapcast server keeps.
pub(super) struct SnapSource {
    /// The node's own sync controller.
    controller: SyncController,
    /// The playout delay of the latest ServerSettings, ms.
    playout_delay_ms: Option<u32>,
    decoder: Option<SnapDecoder>,
    /// Source sample index where the last chunk ended.
    next_index: Option<i64>,
}

/// snapclient's software volume curve: gain `(10^(p/100) − 1) / 9` for `percent`
/// 0..=100 (0 → 0, 100 → 1).
pub fn snapcast_gain(percent: u8) -> f64 {
    let v = f64::from(percent.min(100)) / 100.0;
    (10f64.powf(v) - 1.0) / 9.0
}

/// The playout delay for `settings`, ms: `bufferMs − latency`, kept within the
/// receiver's limits (a warning says when it had to be).
pub fn snapcast_playout_delay_ms(settings: &ServerSettings) -> u32 {
    let want = i64::from(settings.buffer_ms) - i64::from(settings.latency_ms);
    let got = want.clamp(
        i64::from(MIN_PLAYOUT_DELAY_MS),
        i64::from(MAX_PLAYOUT_DELAY_MS),
    );
    if got != want {
        warn!(
            buffer_ms = settings.buffer_ms,
            latency_ms = settings.latency_ms,
            "the server's buffer less this client's latency is {want} ms; playing with {got} ms"
        );
    }
    got as u32
}

impl ReceiverNode {
    /// Makes this node a Snapcast client: it plays what [`Self::on_snap_event`] hands
    /// it and corrects itself. Call once, before the first event.
    pub fn play_from_snapserver(&mut self) {
        self.snap = Some(Box::new(SnapSource {
            controller: SyncController::new(ControllerConfig::default()),
            playout_delay_ms: None,
            decoder: None,
            next_index: None,
        }));
        self.next_sync_us = i64::MAX;
    }

    /// Whether this node plays from a Snapcast server.
    pub fn plays_from_snapserver(&self) -> bool {
        self.snap.is_some()
    }

    /// The connection to the Snapcast server closed (`why`): playout runs on from the
    /// jitter buffer; the next connection's CodecHeader starts the stream again.
    pub fn on_snap_closed(&mut self, now_us: i64, why: &str, io: &mut impl ReceiverIo) {
        if let Some(snap) = self.snap.as_mut() {
            snap.decoder = None;
            snap.next_index = None;
        }
        self.on_stream_closed(now_us, why, io);
    }

    /// Handles one event of the Snapcast connection that happened at local time
    /// `now_us` (a Time exchange carries its own timestamps). Bad chunks are counted
    /// and dropped; a stream this receiver cannot play puts it in the `error` state
    /// with the reason until a CodecHeader it can play comes.
    pub fn on_snap_event(&mut self, event: Event, now_us: i64, io: &mut impl ReceiverIo) {
        if self.snap.is_none() {
            return;
        }
        match event {
            Event::ServerSettings(s) => self.on_snap_settings(s, now_us, io),
            Event::CodecHeader { codec, header } => {
                self.on_snap_codec(codec, &header.payload, now_us, io)
            }
            Event::WireChunk(chunk) => {
                self.on_snap_chunk(chunk.timestamp.to_micros(), &chunk.payload)
            }
            Event::TimeSync { t_us, .. } => {
                let [t1, t2, t3, t4] = t_us;
                self.add_clock_exchange(t1, t2, t3, t4);
            }
        }
    }

    fn on_snap_settings(&mut self, s: ServerSettings, now_us: i64, io: &mut impl ReceiverIo) {
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
        let delay_ms = snapcast_playout_delay_ms(&s);
        let delay_changed = snap.playout_delay_ms.replace(delay_ms) != Some(delay_ms);
        let restart = delay_changed && snap.decoder.is_some();
        self.volume = snapcast_gain(s.volume);
        self.muted = s.muted;
        self.send_gain();
        info!(
            device = self.device,
            buffer_ms = s.buffer_ms,
            latency_ms = s.latency_ms,
            volume = s.volume,
            muted = s.muted,
            "snapcast server settings"
        );
        if restart {
            self.start_snap_stream(now_us, io);
        } else {
            self.publish_status(now_us, io);
        }
    }

    fn on_snap_codec(
        &mut self,
        codec: StreamCodec,
        header: &[u8],
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
        match SnapDecoder::new(&codec, header) {
            Ok(d) => {
                snap.decoder = Some(d);
                self.error = None;
                info!(device = self.device, ?codec, "snapcast stream");
                self.start_snap_stream(now_us, io);
            }
            Err(e) => {
                warn!(device = self.device, "cannot play the snapcast stream: {e}");
                snap.decoder = None;
                self.error = Some(e);
                self.link = Link::Down;
                self.publish_status(now_us, io);
            }
        }
    }

    /// (Re)starts playout with the current settings: a new jitter buffer for the
    /// playout delay, the measurements paused until the microphone hears the new
    /// audio only.
    fn start_snap_stream(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
        let delay_ms = snap.playout_delay_ms.unwrap_or(DEFAULT_BUFFER_MS);
        snap.next_index = None;
        let limits = OffsetLimits::for_playout_delay_ms(f64::from(delay_ms));
        snap.controller.set_limits(limits);
        let params = StreamParams {
            sample_rate: STREAM_SAMPLE_RATE,
            channels: STREAM_CHANNELS as usize,
            epoch_us: 0,
            codec_delay_samples: 0,
            playout_delay_us: i64::from(delay_ms) * 1000,
        };
        let was_up = matches!(self.link, Link::Up);
        self.limits = limits;
        self.params = Some(params);
        self.stream = SNAPCAST_STREAM.into();
        self.log.clear();
        self.played = false;
        self.audio.new_stream(params);
        self.reference = ReferenceRing::new(
            params.sample_rate,
            params.epoch_us,
            reference_seconds(&self.drift_cfg, params.playout_delay_us),
        );
        if let Some(m) = self.clock.mapping() {
            self.audio.send(ToRender::Clock(m));
        }
        let offset = self.offset;
        self.set_offset(offset);
        self.link = Link::Up;
        if was_up {
            let latency_ms = self.offset_now_ms(now_us).map_or(0.0, |l| l.max(0.0));
            self.skip_measurements_for_new_audio(
                now_us,
                SWITCH_QUIET_MS.max(latency_ms.min(1e5) as i64 + 500),
            );
        }
        info!(
            device = self.device,
            playout_delay_ms = delay_ms,
            "streaming from the snapcast server"
        );
        self.publish_status(now_us, io);
    }

    fn on_snap_chunk(&mut self, timestamp_us: i64, payload: &[u8]) {
        if !matches!(self.link, Link::Up) {
            return;
        }
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
        let Some(decoder) = snap.decoder.as_mut() else {
            return;
        };
        if !(0..=MAX_ABS_TIMESTAMP_US).contains(&timestamp_us) {
            self.counters.frames_rejected += 1;
            debug!(
                device = self.device,
                timestamp_us, "snapcast chunk timestamp out of range; dropped"
            );
            return;
        }
        let rate = i128::from(STREAM_SAMPLE_RATE);
        let mut index = ((i128::from(timestamp_us) * rate + 500_000) / 1_000_000) as i64;
        if let Some(next) = snap.next_index {
            if (index - next).abs() <= CONTIGUOUS_SLACK_SAMPLES {
                index = next;
            }
        }
        match decoder.decode(payload, &mut self.pcm) {
            Ok(frames) => {
                snap.next_index = Some(index + frames as i64);
                self.audio.push_audio(index, &self.pcm);
                self.reference
                    .push(index, &self.pcm, STREAM_CHANNELS as usize);
            }
            Err(e) => {
                self.counters.frames_rejected += 1;
                debug!(device = self.device, "snapcast chunk: {e}");
            }
        }
    }

    /// A drift report of this node, when it plays from a Snapcast server: its own
    /// controller turns it into an offset, applied at once.
    pub(super) fn correct_locally(
        &mut self,
        report: &DriftReport,
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        let Some(snap) = self.snap.as_mut() else {
            return;
        };
        let Some(now_tx) = self.clock.tx_from_local(now_us as f64) else {
            return;
        };
        match snap.controller.on_report(report, now_tx as i64) {
            Decision::Publish(o) => self.apply_offset(&o, "its own controller", now_us, io),
            Decision::Hold => {}
            Decision::Ignored(why) => debug!(device = self.device, "drift report not used: {why}"),
        }
    }
}
