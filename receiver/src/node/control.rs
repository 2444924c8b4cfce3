//! The node's MQTT side: buffer offsets from the controller, commands, the settings
//! of the transmitter's control plane (volume, mute, group), the config push; the last
//! will. Every payload is parsed and range-checked; a bad one is logged and
//! dropped, never applied in part.

use syncstream_protocol::messages::{
    parse, topics, BufferOffset, Command, ConfigPush, DeviceSettings,
};
use tracing::{debug, info, warn};

use super::{Job, ReceiverIo, ReceiverNode, MAX_MQTT_PAYLOAD};

/// Microphone audio a `check_mic` command judges: the last 3 s the node holds, ms.
pub const MIC_CHECK_MS: u64 = 3_000;
use crate::offset::OffsetRamp;
use crate::realtime::ToRender;

impl ReceiverNode {
    /// Topics to subscribe to (after every connect).
    pub fn mqtt_subscriptions(&self) -> Vec<String> {
        vec![
            topics::buffer_offset(&self.device),
            topics::command(&self.device),
            topics::settings(&self.device),
            topics::CONFIG.to_string(),
        ]
    }

    /// The last will: `{"device":"<device>","state":"offline"}`, retained on the status
    /// topic.
    pub fn mqtt_last_will(&self) -> (String, Vec<u8>) {
        let payload = serde_json::json!({ "device": self.device, "state": "offline" });
        (
            topics::status(&self.device),
            payload.to_string().into_bytes(),
        )
    }

    /// The MQTT connection (re)connected: publishes the status.
    pub fn on_mqtt_connected(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        self.publish_status(now_us, io);
    }

    /// Handles one MQTT message that arrived at local time `now_us`.
    pub fn on_mqtt_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        if payload.len() > MAX_MQTT_PAYLOAD {
            self.counters.mqtt_rejected += 1;
            warn!(
                device = self.device,
                "{} byte payload on {topic} is over the limit of {MAX_MQTT_PAYLOAD}; ignored",
                payload.len()
            );
            return;
        }
        if topic == topics::CONFIG {
            self.on_config(topic, payload, io);
        } else if topic == topics::buffer_offset(&self.device) {
            self.on_offset(topic, payload, now_us, io);
        } else if topic == topics::command(&self.device) {
            self.on_command(topic, payload, now_us, io);
        } else if topic == topics::settings(&self.device) {
            self.on_settings(topic, payload, now_us, io);
        }
    }

    /// Volume, mute and group from the transmitter's control plane (retained): applied
    /// whole or not at all.
    fn on_settings(&mut self, topic: &str, payload: &[u8], now_us: i64, io: &mut impl ReceiverIo) {
        if payload.is_empty() {
            return; // a cleared retained message
        }
        let s = match parse::<DeviceSettings>(topic, payload)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.device != self.device {
                    return Err(format!("settings on {topic} name device '{}'", s.device));
                }
                s.check().map(|()| s)
            }) {
            Ok(s) => s,
            Err(e) => {
                self.counters.mqtt_rejected += 1;
                warn!(device = self.device, "settings ignored: {e}");
                return;
            }
        };
        let changed = (
            s.volume,
            s.muted,
            s.group_volume,
            s.group_muted,
            s.group.as_str(),
        ) != (
            self.volume,
            self.muted,
            self.group_volume,
            self.group_muted,
            self.group.as_str(),
        );
        self.volume = s.volume;
        self.muted = s.muted;
        self.group_volume = s.group_volume;
        self.group_muted = s.group_muted;
        self.group = s.group.chars().take(64).collect();
        self.send_gain();
        if changed {
            info!(
                device = self.device,
                volume = s.effective_volume(),
                muted = s.effective_muted(),
                "settings from the control plane"
            );
            self.publish_status(now_us, io);
        }
    }

    /// The retained config push: this device's profile replaces the local one (its
    /// base latency becomes the offset unless the controller's is in effect) and is
    /// kept ([`ReceiverIo::keep_profile`]) for the next start.
    fn on_config(&mut self, topic: &str, payload: &[u8], io: &mut impl ReceiverIo) {
        if payload.is_empty() {
            return; // a cleared retained config
        }
        let cfg = match parse::<ConfigPush>(topic, payload) {
            Ok(c) => c,
            Err(e) => {
                self.counters.mqtt_rejected += 1;
                warn!("{e}");
                return;
            }
        };
        let Some(profile) = cfg.devices.get(&self.device) else {
            return;
        };
        if let Err(e) = profile
            .validate()
            .and_then(|()| self.limits.check_base_latency(profile.base_latency_ms))
        {
            self.counters.mqtt_rejected += 1;
            warn!(
                device = self.device,
                "config for {} ignored: {e}", self.device
            );
            return;
        }
        if *profile == self.profile {
            return; // the same push again (retained, after a reconnect)
        }
        if profile.output_type != self.profile.output_type || profile.target != self.profile.target
        {
            info!(
                device = self.device,
                "the pushed profile plays through another output ({:?} '{}'): from the next start",
                profile.output_type,
                profile.target
            );
        }
        if !self.offset_from_controller {
            self.set_offset(OffsetRamp::constant(profile.base_latency_ms));
        }
        self.profile = profile.clone();
        io.keep_profile(profile);
        info!(
            device = self.device,
            "profile from syncstream/config: {:?}", profile.output_type
        );
    }

    fn on_offset(&mut self, topic: &str, payload: &[u8], now_us: i64, io: &mut impl ReceiverIo) {
        if payload.is_empty() {
            return; // a cleared retained offset
        }
        let o = match parse::<BufferOffset>(topic, payload) {
            Ok(o) => o,
            Err(e) => {
                self.counters.mqtt_rejected += 1;
                warn!("{e}");
                return;
            }
        };
        if o.device != self.device {
            self.counters.mqtt_rejected += 1;
            warn!("offset on {topic} names device '{}'; ignored", o.device);
            return;
        }
        if self.snap.is_some() {
            // Playing from a Snapcast server, this receiver is its own controller.
            debug!(
                device = self.device,
                "offset on {topic} ignored: the receiver corrects itself"
            );
            return;
        }
        self.apply_offset(&o, topic, now_us, io);
    }

    /// Applies a buffer offset from a controller (`from` names it in the log): the
    /// transmitter's over MQTT, or the receiver's own when it plays from a Snapcast
    /// server. An offset that cannot be applied is counted and logged.
    pub(super) fn apply_offset(
        &mut self,
        o: &BufferOffset,
        from: &str,
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        let now_tx = self.clock.tx_from_local(now_us as f64);
        match OffsetRamp::from_message(o, &self.limits, now_tx) {
            Ok((ramp, note)) => {
                if let Some(note) = note {
                    warn!(device = self.device, "offset from {from}: {note}");
                }
                self.set_offset(ramp);
                self.offset_from_controller = true;
                self.counters.offsets_applied += 1;
                self.persist_if_moved(io);
                info!(
                    device = self.device,
                    offset_ms = ramp.offset_ms,
                    rate_ms_per_s = ramp.rate_ms_per_s,
                    "buffer offset applied"
                );
            }
            Err(e) => {
                self.counters.mqtt_rejected += 1;
                warn!(device = self.device, "offset from {from} ignored: {e}");
            }
        }
    }

    fn on_command(&mut self, topic: &str, payload: &[u8], now_us: i64, io: &mut impl ReceiverIo) {
        let cmd = match parse::<Command>(topic, payload) {
            Ok(c) => c,
            Err(e) => {
                self.counters.mqtt_rejected += 1;
                warn!("{e}");
                return;
            }
        };
        info!(device = self.device, ?cmd, "command");
        match cmd {
            Command::Stop => {
                self.stopped = true;
                self.audio.send(ToRender::Stopped(true));
            }
            Command::Start => {
                self.stopped = false;
                self.audio.send(ToRender::Stopped(false));
                // Even if it was silent for less than a poll: the next measurement
                // waits for a window of its sound (`measure.rs`).
                self.was_silent = true;
            }
            Command::Mute => {
                self.muted = true;
                self.send_gain();
            }
            Command::Unmute => {
                self.muted = false;
                self.send_gain();
                // Even if it was silent for less than a poll: the next measurement
                // waits for a window of its sound (`measure.rs`).
                self.was_silent = true;
            }
            Command::Volume { value } => {
                if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
                    self.counters.mqtt_rejected += 1;
                    warn!(
                        device = self.device,
                        "volume {value} on {topic} is not between 0 and 1; ignored"
                    );
                    return;
                }
                self.volume = value;
                self.send_gain();
            }
            // For the transmitter's controller.
            Command::Adjust { .. } => return,
            Command::Resync => {
                self.tracking = false;
                self.last_report = None;
                self.next_measure_us = now_us;
            }
            Command::TestTone(req) => self.start_test_tone(req, now_us, io),
            Command::Announce => {
                self.start_announcement(now_us, io);
                return;
            }
            Command::CheckMic => {
                match self.mic.latest(MIC_CHECK_MS) {
                    Some((_, samples)) => io.run_job(Job::MicCheck {
                        samples,
                        rate_hz: syncstream_shared::time::STREAM_SAMPLE_RATE,
                    }),
                    None => {
                        let answer = serde_json::json!({
                            "device": self.device,
                            "ok": false,
                            "summary": "no microphone audio yet: the receiver keeps the last 4 s; ask again in a few seconds",
                        });
                        io.publish(
                            syncstream_protocol::messages::topics::mic_check(&self.device),
                            answer.to_string().into_bytes(),
                            false,
                        );
                    }
                }
                return;
            }
        }
        self.publish_status(now_us, io);
    }
}
