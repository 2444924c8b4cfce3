//! The sync controller's MQTT side, without I/O: what it does with each message on
//! `syncstream/drift/+` and `syncstream/command/+`, written once for the real
//! transmitter ([`crate::mqtt`]) and the simulator.
//!
//! A drift report on `syncstream/drift/<device>` goes to the [`SyncController`]; an
//! offset it decides on is answered retained on `syncstream/buffer_offset/<device>`
//! (so a receiver that restarts gets its offset back at once), and every settled
//! offset feeds the auto-calibration history ([`crate::history`]). A `resync` command
//! makes the controller forget the device. Topics whose device part is not a valid
//! device name, payloads over [`MAX_PAYLOAD_BYTES`], malformed JSON and reports naming
//! another device than their topic are dropped with a log line.

use std::sync::{Arc, Mutex};

use syncstream_protocol::messages::{parse, topics, Command, DriftReport, TOPIC_ROOT};
use syncstream_shared::names::is_valid_device_name;
use tracing::{debug, info, warn};

use crate::controller::{Decision, LockState, SyncController};
use crate::history::ProfileKeeper;
use crate::playout_delay::PlayoutDelay;

/// Largest payload handled, bytes (a drift report is about 200).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// An MQTT message to publish (QoS 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retained.
    pub retain: bool,
}

/// The controller's message handling (see the module docs).
pub struct SyncService {
    controller: Arc<Mutex<SyncController>>,
    keeper: Option<ProfileKeeper>,
    playout: Option<Arc<PlayoutDelay>>,
}

impl SyncService {
    /// A service around `controller`; with `keeper`, settled offsets update profiles.
    pub fn new(controller: Arc<Mutex<SyncController>>, keeper: Option<ProfileKeeper>) -> Self {
        Self {
            controller,
            keeper,
            playout: None,
        }
    }

    /// The same, keeping the controller's limits on `playout`'s delay and asking it
    /// to grow when a device's measured offset does not fit (see
    /// [`crate::playout_delay`]).
    pub fn with_playout_delay(mut self, playout: Arc<PlayoutDelay>) -> Self {
        self.playout = Some(playout);
        self
    }

    /// Topics to subscribe to.
    pub fn subscriptions() -> Vec<String> {
        vec![
            topics::DRIFT_ALL.to_string(),
            format!("{TOPIC_ROOT}/command/+"),
        ]
    }

    /// The controller (shared with the HTTP status).
    pub fn controller(&self) -> &Arc<Mutex<SyncController>> {
        &self.controller
    }

    /// Handles one message that reached the controller at its time `now_us`; returns
    /// what to publish.
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now_us: i64) -> Vec<Outgoing> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            warn!(
                "{} byte payload on {topic} is over the limit of {MAX_PAYLOAD_BYTES}; ignored",
                payload.len()
            );
            return Vec::new();
        }
        if let Some(device) = topics::device_of(topic, "command") {
            if is_valid_device_name(device) {
                if let Ok(Command::Resync) = parse::<Command>(topic, payload) {
                    info!(device, "resync: forgetting the device's lock");
                    self.lock().reset(device);
                    if let Some(k) = self.keeper.as_mut() {
                        k.reset(device);
                    }
                }
            }
            return Vec::new();
        }
        let Some(device) = topics::device_of(topic, "drift") else {
            return Vec::new();
        };
        if !is_valid_device_name(device) {
            debug!("drift report on {topic}: not a valid device name; ignored");
            return Vec::new();
        }
        let report: DriftReport = match parse(topic, payload) {
            Ok(r) => r,
            Err(e) => {
                warn!("{e}");
                return Vec::new();
            }
        };
        if report.device != device {
            warn!(
                "drift report on {topic} names device '{}'; ignored",
                report.device.chars().take(80).collect::<String>()
            );
            return Vec::new();
        }
        let (decision, settled) = {
            let mut c = self.lock();
            if let Some(p) = &self.playout {
                let limits = p.limits();
                if c.limits() != limits {
                    c.set_limits(limits);
                }
            }
            let d = c.on_report(&report, now_us);
            if let (Some(p), Some((dev, offset_ms))) = (&self.playout, c.take_wanted_above_limits())
            {
                // The receivers get the new delay at once (a new hello); the next
                // report is clamped to the new limits.
                if let Err(e) = p.request_for_offset(&dev, offset_ms) {
                    warn!("{e}");
                }
            }
            let settled = c
                .device(device)
                .filter(|s| s.state == LockState::Tracking)
                .and_then(|s| s.offset_ms);
            (d, settled)
        };
        if let (Some(k), Some(offset_ms), Decision::Publish(_) | Decision::Hold) =
            (self.keeper.as_mut(), settled, &decision)
        {
            match k.observe(device, report.ts_us, offset_ms) {
                Ok(Some(change)) => info!(
                    device,
                    previous_ms = change.previous_base_latency_ms,
                    new_ms = change.new_base_latency_ms,
                    "profile updated from the offset history"
                ),
                Ok(None) => {}
                Err(e) => warn!("{e}"),
            }
        }
        match decision {
            Decision::Publish(offset) => {
                info!(device, offset_ms = offset.offset_ms, drift_ms = ?report.drift_ms, "new buffer offset");
                match serde_json::to_vec(&offset) {
                    Ok(payload) => vec![Outgoing {
                        topic: topics::buffer_offset(device),
                        payload,
                        retain: true,
                    }],
                    Err(e) => {
                        warn!("cannot encode the offset for {device}: {e}");
                        Vec::new()
                    }
                }
            }
            Decision::Hold => {
                debug!(device, "in sync");
                Vec::new()
            }
            Decision::Ignored(why) => {
                debug!(device, "report ignored: {why}");
                Vec::new()
            }
        }
    }

    /// What to publish at controller time `now_us` without a report (see
    /// [`SyncController::keepalive`]); call it about once a second.
    pub fn on_tick(&mut self, now_us: i64) -> Vec<Outgoing> {
        keepalive(&self.controller, now_us)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncController> {
        // The controller holds plain data; a panic elsewhere leaves it usable.
        self.controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every locked device's offset of `controller` at `now_us`, as retained publishes
/// (see [`SyncController::republish`]).
pub fn republish(controller: &Mutex<SyncController>, now_us: i64) -> Vec<Outgoing> {
    let offsets = controller
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .republish(now_us);
    to_outgoing(offsets)
}

/// The keep-alive offsets of `controller` at `now_us`, as retained publishes (see
/// [`SyncController::keepalive`]).
pub fn keepalive(controller: &Mutex<SyncController>, now_us: i64) -> Vec<Outgoing> {
    let offsets = controller
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keepalive(now_us);
    to_outgoing(offsets)
}

fn to_outgoing(offsets: Vec<syncstream_protocol::messages::BufferOffset>) -> Vec<Outgoing> {
    offsets
        .into_iter()
        .filter_map(|o| {
            let payload = serde_json::to_vec(&o).ok()?;
            Some(Outgoing {
                topic: topics::buffer_offset(&o.device),
                payload,
                retain: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ControllerConfig;

    fn service() -> SyncService {
        SyncService::new(
            Arc::new(Mutex::new(SyncController::new(ControllerConfig::default()))),
            None,
        )
    }

    fn report(device: &str, drift: f64, ts: i64) -> Vec<u8> {
        serde_json::to_vec(&DriftReport {
            device: device.into(),
            drift_ms: Some(drift),
            confidence: 0.995,
            signal_strength_db: -30.0,
            ts_us: ts,
            applied_offset_ms: 10.0,
            reason: None,
            step: false,
            uncertainty_ms: None,
        })
        .unwrap()
    }

    #[test]
    fn a_report_is_answered_with_a_retained_offset() {
        let mut s = service();
        let out = s.on_message("syncstream/drift/tv", &report("tv", 5.0, 1000), 1000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "syncstream/buffer_offset/tv");
        assert!(out[0].retain);
        let o: syncstream_protocol::messages::BufferOffset =
            serde_json::from_slice(&out[0].payload).unwrap();
        assert!((o.offset_ms - 15.0).abs() < 1e-9);
    }

    #[test]
    fn bad_messages_are_dropped() {
        let mut s = service();
        for (topic, payload) in [
            ("syncstream/drift/tv", b"not json".to_vec()),
            ("syncstream/drift/tv", report("kitchen", 5.0, 0)),
            ("syncstream/drift/a b", report("a b", 5.0, 0)),
            ("syncstream/drift/tv", vec![b' '; MAX_PAYLOAD_BYTES + 1]),
            ("syncstream/drift/tv", report("tv", 5.0, i64::MIN)),
            ("syncstream/command/tv", b"{\"cmd\":\"resync\"}".to_vec()),
            ("elsewhere/drift/tv", report("tv", 5.0, 0)),
        ] {
            assert!(s.on_message(topic, &payload, 0).is_empty(), "{topic}");
        }
        assert!(s.controller().lock().unwrap().is_empty());
    }

    /// Issue 14: drift reports for 2000 made-up devices (status 276 B → 353 KB before)
    /// keep at most MAX_DEVICES in the controller, its status stays small, and a real
    /// device reporting afterwards is tracked.
    #[test]
    fn made_up_devices_are_bounded() {
        let mut s = service();
        for k in 0..2000i64 {
            let d = format!("fake{k}");
            s.on_message(&format!("syncstream/drift/{d}"), &report(&d, 5.0, k), k);
        }
        let out = s.on_message("syncstream/drift/tv", &report("tv", 5.0, 3000), 3000);
        assert_eq!(out.len(), 1, "the real device is answered");
        let c = s.controller().lock().unwrap();
        assert_eq!(c.len(), crate::controller::MAX_DEVICES);
        assert!(c.device("tv").is_some());
        let status = serde_json::to_vec(&c.snapshot()).unwrap();
        assert!(status.len() < 128 * 1024, "{} bytes", status.len());
    }
}
