//! The receiver's MQTT side: applies buffer offsets, profiles from the retained config
//! and commands; publishes a retained status (with an `offline` last will) and the
//! drift reports. Malformed payloads are logged and ignored.

use rumqttc::{AsyncClient, Publish, QoS};
use syncstream_protocol::messages::{
    parse, topics, BufferOffset, Command, ConfigPush, DriftReport, Status,
};
use tracing::{info, warn};

use crate::core::SharedCore;

/// The last will: `{"device":"<device>","state":"offline"}`, retained on the status topic.
pub fn last_will(device: &str) -> (String, Vec<u8>) {
    let payload = serde_json::json!({ "device": device, "state": "offline" });
    (topics::status(device), payload.to_string().into_bytes())
}

/// Topics the receiver subscribes to.
pub fn subscriptions(device: &str) -> Vec<String> {
    vec![
        topics::buffer_offset(device),
        topics::command(device),
        topics::CONFIG.to_string(),
    ]
}

/// The receiver's current status.
pub fn status(core: &SharedCore, now_us: i64) -> Status {
    let c = core.lock().unwrap();
    let state = if !c.connected {
        "connecting"
    } else if c.playout.stopped() {
        "stopped"
    } else {
        "playing"
    };
    Status {
        device: c.device.clone(),
        state: state.into(),
        offset_ms: c.playout.offset_ms(),
        drift_ms: c.last_report.as_ref().and_then(|r| r.drift_ms),
        confidence: c.last_report.as_ref().map_or(0.0, |r| r.confidence),
        playout_delay_ms: c
            .playout
            .stream()
            .map_or(0.0, |p| p.playout_delay_us as f64 / 1000.0),
        volume: c.playout.volume(),
        muted: c.playout.muted(),
        underruns: c.playout.stats().underruns,
        output: c.profile.output_type.as_str().into(),
        ts_us: now_us,
        version: Some(syncstream_shared::version::running()), // issue 13: running version (signed updates)
    }
}

/// Publishes the status, retained.
pub fn publish_status(client: &AsyncClient, core: &SharedCore, now_us: i64) {
    let s = status(core, now_us);
    if let Ok(payload) = serde_json::to_vec(&s) {
        if let Err(e) =
            client.try_publish(topics::status(&s.device), QoS::AtLeastOnce, true, payload)
        {
            warn!("cannot publish status: {e}");
        }
    }
}

/// Publishes a drift report.
pub fn publish_drift(client: &AsyncClient, report: &DriftReport) {
    if let Ok(payload) = serde_json::to_vec(report) {
        if let Err(e) = client.try_publish(
            topics::drift(&report.device),
            QoS::AtLeastOnce,
            false,
            payload,
        ) {
            warn!("cannot publish drift: {e}");
        }
    }
}

/// Handles one incoming publish. Returns a command the caller must carry out itself
/// (`resync`, `test_tone`), if any.
pub fn handle_publish(core: &SharedCore, p: &Publish) -> Option<Command> {
    let device = core.lock().unwrap().device.clone();
    if p.topic == topics::CONFIG {
        match parse::<ConfigPush>(&p.topic, &p.payload) {
            Ok(cfg) => {
                if let Some(profile) = cfg.devices.get(&device) {
                    if let Err(e) = profile.validate() {
                        warn!("config for {device} ignored: {e}");
                        return None;
                    }
                    let mut c = core.lock().unwrap();
                    if !c.offset_from_controller {
                        c.playout.set_offset_ms(profile.base_latency_ms);
                    }
                    c.profile = profile.clone();
                    info!(
                        device,
                        "profile from syncstream/config: {:?}", profile.output_type
                    );
                }
            }
            Err(e) => warn!("{e}"),
        }
        return None;
    }
    if p.topic == topics::buffer_offset(&device) {
        match parse::<BufferOffset>(&p.topic, &p.payload) {
            Ok(o) if o.device != device => {
                warn!("offset on {} names device '{}'; ignored", p.topic, o.device)
            }
            Ok(o) if !o.offset_ms.is_finite() => {
                warn!("offset on {} is not finite; ignored", p.topic)
            }
            Ok(o) => {
                let ms = core
                    .lock()
                    .unwrap()
                    .apply_offset(o.offset_ms, o.rate_ms_per_s, o.ref_us);
                info!(device, offset_ms = ms, "buffer offset applied");
            }
            Err(e) => warn!("{e}"),
        }
        return None;
    }
    if p.topic == topics::command(&device) {
        let cmd = match parse::<Command>(&p.topic, &p.payload) {
            Ok(c) => c,
            Err(e) => {
                warn!("{e}");
                return None;
            }
        };
        info!(device, ?cmd, "command");
        let mut c = core.lock().unwrap();
        match cmd {
            Command::Stop => c.playout.set_stopped(true),
            Command::Start => c.playout.set_stopped(false),
            Command::Mute => c.playout.set_muted(true),
            Command::Unmute => c.playout.set_muted(false),
            Command::Volume { value } => c.playout.set_volume(value),
            Command::Resync => {
                c.tracking = false;
                c.last_report = None;
                return Some(Command::Resync);
            }
            Command::TestTone(_) => return Some(cmd),
        }
    }
    None
}
