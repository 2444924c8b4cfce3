//! The stream connection: the hellos, audio chunks and clock-sync exchanges, every
//! number checked before it is used.

use syncstream_protocol::codec::{AudioDecoder, CHUNK_FRAMES};
use syncstream_protocol::wire::{Frame, PROTOCOL_VERSION};
use syncstream_shared::limits::{check_playout_delay_ms, OffsetLimits};
use syncstream_shared::names::check_device_name;
use syncstream_shared::time::{STREAM_CHANNELS, STREAM_SAMPLE_RATE};
use tracing::{debug, info, warn};

use super::{Link, ReceiverIo, ReceiverNode, MAX_OUTSTANDING_REQUESTS, SYNC_INTERVAL_US};
use crate::clock_sync::MAX_ABS_TIMESTAMP_US;
use crate::offset::OffsetRamp;
use crate::playout::StreamParams;
use crate::realtime::ToRender;
use crate::reference::ReferenceRing;

/// Largest source sample index accepted (2⁵² samples: 3000 years at 48 kHz, and exact
/// in f64).
pub const MAX_SAMPLE_INDEX: u64 = 1 << 52;
/// Largest codec delay a hello may announce, samples (Opus's is 312).
pub const MAX_CODEC_DELAY_SAMPLES: u32 = 48_000;
/// One clock-sync request in this many goes on the stream connection (once a second).
pub const KEEPALIVE_EVERY: u64 = 20;
/// How long a refused receiver waits before trying again, µs.
pub const REFUSED_RETRY_US: i64 = 5_000_000;
/// How long a receiver whose profile does not fit the stream waits, µs.
pub const MISFIT_RETRY_US: i64 = 30_000_000;
/// After a stream switch, drift measurements wait until the microphone window holds
/// only the new stream: the window plus this much (the longest output latency
/// expected), ms.
pub const SWITCH_QUIET_MS: i64 = 1_000;

impl ReceiverNode {
    /// The stream connection opened: sends the hello.
    pub fn on_stream_connected(&mut self, _now_us: i64, io: &mut impl ReceiverIo) {
        self.link = Link::AwaitingChallenge;
        self.outstanding.clear();
        self.client_nonce = syncstream_protocol::auth::nonce();
        io.stream_send(Frame::ClientHello {
            protocol_version: PROTOCOL_VERSION,
            device: self.device.clone(),
            instance: self.instance,
            client_nonce: self.client_nonce,
        });
    }

    /// The stream connection closed (or was lost): playout runs on from the jitter
    /// buffer, fades out when it runs dry, and picks up in sync on the next connection.
    pub fn on_stream_closed(&mut self, now_us: i64, why: &str, io: &mut impl ReceiverIo) {
        let was_up = matches!(self.link, super::Link::Up);
        self.link = Link::Down;
        self.outstanding.clear();
        if was_up {
            info!(device = self.device, "stream closed: {why}");
            self.publish_status(now_us, io);
        } else {
            debug!(device = self.device, "stream closed: {why}");
        }
    }

    /// Handles one frame from the transmitter (a frame body, without its length prefix)
    /// received at local time `now_us`. Malformed frames and out-of-range numbers are
    /// logged and dropped; a protocol violation before the hello, a refusal or a
    /// stream this receiver cannot play resets the connection.
    pub fn on_stream_frame(&mut self, bytes: &[u8], now_us: i64, io: &mut impl ReceiverIo) {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.counters.frames_rejected += 1;
                warn!(device = self.device, "{e}");
                if matches!(self.link, Link::AwaitingHello | Link::AwaitingChallenge) {
                    io.stream_reset("malformed hello", REFUSED_RETRY_US);
                    self.link = Link::Down;
                }
                return;
            }
        };
        let up = matches!(self.link, Link::Up);
        let challenged = matches!(self.link, Link::AwaitingChallenge);
        let awaiting = matches!(self.link, Link::AwaitingHello);
        let awaiting_delay = matches!(self.link, Link::AwaitingDelay);
        match frame {
            Frame::ServerHello {
                protocol_version,
                sample_rate,
                channels,
                codec,
                codec_delay_samples,
                epoch_us,
                playout_delay_ms,
                stream,
            } if up || awaiting || awaiting_delay => {
                // (A second hello restarts the stream as a first one does.)
                let hello = Hello {
                    protocol_version,
                    sample_rate,
                    channels,
                    codec,
                    codec_delay_samples,
                    epoch_us,
                    playout_delay_ms,
                    stream,
                };
                self.on_hello(hello, now_us, io);
            }
            Frame::AuthChallenge {
                server_nonce,
                server_proof,
            } if challenged => match self.auth.respond(
                &self.client_nonce,
                &server_nonce,
                &server_proof,
                &self.device,
                self.instance,
            ) {
                Ok(answer) => {
                    self.link = Link::AwaitingHello;
                    io.stream_send(answer);
                }
                Err(reason) => {
                    warn!(device = self.device, "{reason}");
                    self.error = Some(reason);
                    self.link = Link::Down;
                    io.stream_reset("transmitter not paired", REFUSED_RETRY_US);
                    self.publish_status(now_us, io);
                }
            },
            Frame::StreamSwitch {
                stream,
                codec,
                codec_delay_samples,
                epoch_us,
            } if up => self.on_switch(stream, codec, codec_delay_samples, epoch_us, now_us, io),
            Frame::Refused { reason } if up || awaiting || awaiting_delay || challenged => {
                let reason: String = reason.chars().take(500).collect();
                warn!(
                    device = self.device,
                    "the transmitter refused this receiver: {reason}"
                );
                self.error = Some(format!("refused by the transmitter: {reason}"));
                self.link = Link::Down;
                io.stream_reset("refused", REFUSED_RETRY_US);
                self.publish_status(now_us, io);
            }
            other if awaiting || challenged => {
                self.counters.frames_rejected += 1;
                warn!(
                    device = self.device,
                    "expected the transmitter's {}, got {}",
                    if challenged { "challenge" } else { "hello" },
                    kind(&other)
                );
                self.link = Link::Down;
                io.stream_reset("no hello", REFUSED_RETRY_US);
            }
            Frame::Audio {
                sample_index,
                frames,
                payload,
            } if up => {
                if sample_index > MAX_SAMPLE_INDEX
                    || frames == 0
                    || frames as usize > 6 * CHUNK_FRAMES
                {
                    self.counters.frames_rejected += 1;
                    debug!(
                        device = self.device,
                        sample_index, frames, "audio chunk out of range; dropped"
                    );
                    return;
                }
                let Some(decoder) = self.decoder.as_mut() else {
                    return;
                };
                match decoder.decode(&payload, frames as usize, &mut self.pcm) {
                    // Decoder output i of this chunk holds source sample
                    // sample_index + i − codec delay; the playout accounts for that.
                    Ok(()) => {
                        let index = sample_index as i64;
                        self.audio.push_audio(index, &self.pcm);
                        if let Some(p) = self.params {
                            let first = index - i64::from(p.codec_delay_samples);
                            self.reference.push(first, &self.pcm, p.channels);
                        }
                    }
                    Err(e) => {
                        self.counters.frames_rejected += 1;
                        debug!(device = self.device, "chunk {sample_index}: {e}");
                    }
                }
            }
            Frame::TimeResponse {
                t1_us,
                t2_us,
                t3_us,
            } if up => self.on_time_response(t1_us, t2_us, t3_us, now_us),
            other if up => {
                self.counters.frames_rejected += 1;
                debug!(
                    device = self.device,
                    "unexpected {} from the transmitter",
                    kind(&other)
                );
            }
            _ => {}
        }
    }

    /// Handles one frame from the clock-sync connection, received at local time
    /// `now_us`: clock-sync answers (checked as on the stream connection); anything else
    /// is logged and dropped.
    pub fn on_clock_frame(&mut self, bytes: &[u8], now_us: i64) {
        match Frame::decode(bytes) {
            Ok(Frame::TimeResponse {
                t1_us,
                t2_us,
                t3_us,
            }) if matches!(self.link, Link::Up) => {
                self.on_time_response(t1_us, t2_us, t3_us, now_us)
            }
            Ok(Frame::Refused { reason }) => {
                let reason: String = reason.chars().take(200).collect();
                warn!(
                    device = self.device,
                    "the clock connection was refused: {reason}"
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.counters.frames_rejected += 1;
                debug!(device = self.device, "clock connection: {e}");
            }
        }
    }

    fn on_time_response(&mut self, t1_us: i64, t2_us: i64, t3_us: i64, now_us: i64) {
        // Only answers to requests this receiver sent are believed.
        let Some(k) = self.outstanding.iter().position(|&t| t == t1_us) else {
            self.counters.exchanges_rejected += 1;
            debug!(
                device = self.device,
                t1_us, "clock-sync answer to no request of ours"
            );
            return;
        };
        self.outstanding.remove(k);
        self.add_clock_exchange(t1_us, t2_us, t3_us, now_us);
    }

    /// One four-timestamp clock-sync exchange (µs; t1 and t4 local, t2 and t3 the
    /// transmitter's or the Snapcast server's): into clock sync, and the new mapping to
    /// the render callback; an exchange clock sync refuses is counted and logged.
    pub(super) fn add_clock_exchange(&mut self, t1_us: i64, t2_us: i64, t3_us: i64, t4_us: i64) {
        match self.clock.add_exchange(t1_us, t2_us, t3_us, t4_us) {
            Ok(()) => {
                if let Some(m) = self.clock.mapping() {
                    self.audio.send(ToRender::Clock(m));
                }
            }
            Err(e) => {
                self.counters.exchanges_rejected += 1;
                debug!(device = self.device, "clock-sync exchange: {e}");
            }
        }
    }

    fn on_hello(&mut self, h: Hello, now_us: i64, io: &mut impl ReceiverIo) {
        let params = match h.check() {
            Ok(p) => p,
            Err(e) => {
                self.counters.frames_rejected += 1;
                warn!(device = self.device, "cannot play this stream: {e}");
                self.refuse_stream(e, now_us, io);
                return;
            }
        };
        let limits = OffsetLimits::for_playout_delay_ms(h.playout_delay_ms as f64);
        if let Err(e) = OffsetLimits::widest().check_base_latency(self.profile.base_latency_ms) {
            let e = format!("profile of {}: {e}", self.device);
            warn!("{e}");
            self.refuse_stream(e, now_us, io);
            return;
        }
        // The device's latency as this receiver knows it: its profile's, or the offset
        // it last applied (a Cast device measured at 2.6 s). When that does not fit
        // below the announced playout delay, the transmitter is asked for more and
        // the next hello is awaited (the transmitter answers every connection with
        // one, or refuses saying why).
        let latency_ms = self
            .offset_now_ms(now_us)
            .map_or(self.profile.base_latency_ms, |o| {
                o.max(self.profile.base_latency_ms)
            });
        if latency_ms > limits.max_ms {
            let need = OffsetLimits::playout_delay_needed_ms(latency_ms);
            let reason = format!(
                "waiting for the transmitter to grow its playout delay from {} ms to {need} ms \
                 (this output's latency is {latency_ms:.0} ms)",
                h.playout_delay_ms
            );
            info!(device = self.device, "{reason}");
            io.stream_send(Frame::PlayoutDelayRequest {
                playout_delay_ms: need,
            });
            self.error = Some(reason);
            self.link = Link::AwaitingDelay;
            self.publish_status(now_us, io);
            return;
        }
        let decoder = match AudioDecoder::new(h.codec, h.sample_rate, h.channels) {
            Ok(d) => d,
            Err(e) => {
                self.refuse_stream(format!("cannot decode the stream: {e}"), now_us, io);
                return;
            }
        };
        self.error = None;
        self.decoder = Some(decoder);
        self.stream = h.stream;
        self.limits = limits;
        if self
            .params
            .is_some_and(|old| old.playout_delay_us != params.playout_delay_us)
        {
            // The playout delay changed (the transmitter grew it for some device):
            // until the microphone hears only audio played with the new delay, a
            // measurement would be off by the change.
            let latency_ms = self.offset_now_ms(now_us).map_or(0.0, |l| l.max(0.0));
            self.skip_measurements_for_new_audio(
                now_us,
                SWITCH_QUIET_MS.max(latency_ms.min(1e5) as i64 + 500),
            );
        }
        self.params = Some(params);
        self.log.clear();
        self.played = false;
        self.audio.new_stream(params);
        let same_stream = self.last_epoch_us == Some(params.epoch_us);
        self.last_epoch_us = Some(params.epoch_us);
        self.reference = ReferenceRing::new(
            params.sample_rate,
            params.epoch_us,
            reference_seconds(&self.drift_cfg, params.playout_delay_us),
        );
        if same_stream {
            // The same stream again (a reconnect after a network cut): its clock is the
            // one clock sync knows, so playout resumes at once, in sync.
            if let Some(m) = self.clock.mapping() {
                self.audio.send(ToRender::Clock(m));
            }
        } else {
            // A new stream (the transmitter restarted, or another one): playout waits
            // for the next clock-sync answer. Clock sync itself goes on: a transmitter
            // restarted on the same machine has the same clock, and its answers fit
            // the filter at once; another clock makes them inconsistent, and the
            // filter starts again from them by itself. An offset's rate is dropped
            // (its reference time may be another clock's); the offset stays.
            let now_tx = self.clock.tx_from_local(now_us as f64).unwrap_or(f64::NAN);
            self.offset = OffsetRamp::constant(self.offset.at_ms(now_tx));
            self.audio.send(ToRender::ClockLost);
        }
        let offset = self.offset;
        self.set_offset(offset);
        self.link = Link::Up;
        self.next_sync_us = now_us;
        info!(
            device = self.device,
            codec = ?h.codec,
            playout_delay_ms = h.playout_delay_ms,
            "streaming"
        );
        self.publish_status(now_us, io);
    }

    /// The connection now carries another stream on the same timeline: a new decoder
    /// and jitter buffer, the same clock sync and offset. A measurement in flight, and
    /// the next ones until the microphone has heard only the new stream, are skipped.
    /// A switch this receiver cannot play (bad numbers, an unknown codec) is refused as
    /// a bad hello is.
    fn on_switch(
        &mut self,
        stream: String,
        codec: syncstream_protocol::wire::Codec,
        codec_delay_samples: u32,
        epoch_us: i64,
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        let Some(old) = self.params else {
            return;
        };
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            sample_rate: old.sample_rate,
            channels: old.channels as u16,
            codec,
            codec_delay_samples,
            epoch_us,
            playout_delay_ms: (old.playout_delay_us / 1000) as u32,
            stream,
        };
        let params = match hello.check() {
            Ok(p) => p,
            Err(e) => {
                self.counters.frames_rejected += 1;
                warn!(
                    device = self.device,
                    "cannot play the stream switched to: {e}"
                );
                self.refuse_stream(e, now_us, io);
                return;
            }
        };
        let decoder = match AudioDecoder::new(codec, params.sample_rate, STREAM_CHANNELS) {
            Ok(d) => d,
            Err(e) => {
                self.refuse_stream(format!("cannot decode the stream: {e}"), now_us, io);
                return;
            }
        };
        info!(
            device = self.device,
            from = self.stream,
            to = hello.stream,
            "stream switched"
        );
        self.decoder = Some(decoder);
        self.stream = hello.stream;
        self.params = Some(params);
        self.audio.new_stream(params);
        // The kept decoded stream goes on by PTS (what was played before the switch
        // is what the microphone hears until then), unless the timeline changed.
        if params.epoch_us != old.epoch_us {
            self.reference = ReferenceRing::new(
                params.sample_rate,
                params.epoch_us,
                reference_seconds(&self.drift_cfg, params.playout_delay_us),
            );
        }
        self.last_epoch_us = Some(params.epoch_us);
        self.skip_measurements_for_new_audio(now_us, SWITCH_QUIET_MS);
        self.publish_status(now_us, io);
    }

    /// The offset in effect at local time `now_us`, ms (`None` before clock sync has a
    /// mapping and the offset has a rate to follow).
    pub(super) fn offset_now_ms(&self, now_us: i64) -> Option<f64> {
        let now_tx = self.clock.tx_from_local(now_us as f64).unwrap_or(f64::NAN);
        Some(self.offset.at_ms(now_tx)).filter(|o| o.is_finite())
    }

    /// The output's audio changes from now on (another stream, another playout
    /// delay, sound again after a mute): the measurement in flight is dropped, and the next waits until the
    /// microphone window holds only the new audio, `output_latency_ms` after it
    /// reached the output.
    pub(super) fn skip_measurements_for_new_audio(&mut self, now_us: i64, output_latency_ms: i64) {
        self.pending = None;
        let quiet_us = (self.drift_cfg.window_ms as i64 + output_latency_ms) * 1000;
        self.next_measure_us = self.next_measure_us.max(now_us + quiet_us);
    }

    /// This receiver cannot play the stream: error state, and try again much later.
    fn refuse_stream(&mut self, reason: String, now_us: i64, io: &mut impl ReceiverIo) {
        self.error = Some(reason);
        self.link = Link::Down;
        io.stream_reset("unplayable stream", MISFIT_RETRY_US);
        self.publish_status(now_us, io);
    }

    /// Sends due clock-sync requests.
    pub(super) fn poll_stream(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        // (A Snapcast connection makes its own Time exchanges.)
        if !matches!(self.link, Link::Up) || self.snap.is_some() {
            return;
        }
        if now_us >= self.next_sync_us {
            if self.outstanding.len() == MAX_OUTSTANDING_REQUESTS {
                self.outstanding.pop_front();
            }
            self.outstanding.push_back(now_us);
            // Every KEEPALIVE_EVERY-th request goes on the stream connection itself: it
            // tells the transmitter this receiver is alive there (it drops a stream
            // connection that is silent), and keeps clock sync going if the clock
            // connection is lost.
            self.requests_sent = self.requests_sent.wrapping_add(1);
            if self.requests_sent.is_multiple_of(KEEPALIVE_EVERY) {
                io.stream_send(Frame::TimeRequest { t1_us: now_us });
            } else {
                io.clock_send(Frame::TimeRequest { t1_us: now_us });
            }
            self.next_sync_us += SYNC_INTERVAL_US;
            if self.next_sync_us <= now_us {
                // Fell behind (a stall): keep the cadence from now.
                self.next_sync_us = now_us + SYNC_INTERVAL_US;
            }
        }
    }
}

fn kind(f: &Frame) -> &'static str {
    match f {
        Frame::ClientHello { .. } => "ClientHello",
        Frame::ClockHello { .. } => "ClockHello",
        Frame::AuthChallenge { .. } => "AuthChallenge",
        Frame::AuthResponse { .. } => "AuthResponse",
        Frame::ServerHello { .. } => "ServerHello",
        Frame::Refused { .. } => "Refused",
        Frame::Audio { .. } => "Audio",
        Frame::TimeRequest { .. } => "TimeRequest",
        Frame::TimeResponse { .. } => "TimeResponse",
        Frame::StreamSwitch { .. } => "StreamSwitch",
        Frame::PlayoutDelayRequest { .. } => "PlayoutDelayRequest",
    }
}

/// The transmitter's hello, to be checked.
struct Hello {
    protocol_version: u16,
    sample_rate: u32,
    channels: u16,
    codec: syncstream_protocol::wire::Codec,
    codec_delay_samples: u32,
    epoch_us: i64,
    playout_delay_ms: u32,
    stream: String,
}

impl Hello {
    /// The stream parameters, or why this receiver cannot play the stream.
    fn check(&self) -> Result<StreamParams, String> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(format!(
                "the transmitter speaks protocol {}, this receiver {PROTOCOL_VERSION}",
                self.protocol_version
            ));
        }
        if self.sample_rate != STREAM_SAMPLE_RATE || self.channels != STREAM_CHANNELS {
            return Err(format!(
                "the stream is {} channels at {} Hz; receivers play {STREAM_CHANNELS} channels \
                 at {STREAM_SAMPLE_RATE} Hz",
                self.channels, self.sample_rate
            ));
        }
        check_playout_delay_ms(self.playout_delay_ms)?;
        if self.codec_delay_samples > MAX_CODEC_DELAY_SAMPLES {
            return Err(format!(
                "codec delay {} samples is out of range",
                self.codec_delay_samples
            ));
        }
        check_device_name(&self.stream).map_err(|e| format!("stream name: {e}"))?;
        if !(-MAX_ABS_TIMESTAMP_US..=MAX_ABS_TIMESTAMP_US).contains(&self.epoch_us) {
            return Err(format!("stream epoch {} µs is out of range", self.epoch_us));
        }
        Ok(StreamParams {
            sample_rate: self.sample_rate,
            channels: self.channels as usize,
            epoch_us: self.epoch_us,
            codec_delay_samples: self.codec_delay_samples,
            playout_delay_us: self.playout_delay_ms as i64 * 1000,
        })
    }
}

/// Seconds of decoded stream a receiver keeps for its measurements: the playout delay,
/// a window and its wide search margin on both sides, and a second of slack.
pub fn reference_seconds(cfg: &crate::drift::DriftConfig, playout_delay_us: i64) -> f64 {
    playout_delay_us as f64 / 1e6
        + cfg.window_ms as f64 / 1000.0
        + 2.0 * cfg.acquire_margin_ms / 1000.0
        + 1.0
}
