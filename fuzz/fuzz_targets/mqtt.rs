//! MQTT payloads (`protocol/src/messages.rs`, `protocol/src/mqtt.rs`): every input is
//! parsed, with the production `messages::parse`, as every payload type a SyncStream
//! part reads (drift reports, buffer offsets, commands, statuses, config pushes,
//! device settings, group and stream requests, calibration results), and what parses
//! goes on to the code that consumes it:
//!
//! - drift report → the sync controller (`SyncController::on_report`, three times,
//!   then `keepalive`): every offset it would publish is finite, inside its limits,
//!   with a finite rate; and the control plane's state (`ControlState::on_report`);
//! - buffer offset → the receiver's `OffsetRamp::from_message`: an accepted ramp stays
//!   inside the limits now and 10 s on; and `ControlState::on_offset`;
//! - command → a volume as the receiver checks it, an adjustment through
//!   `SyncController::set_manual_adjust`, a test tone through the receiver's
//!   `ToneSession::new` (short signals only, to keep runs fast);
//! - status → `ControlState::on_status`, then the device's JSON;
//! - config push → each profile through `validate` and the offset limits, as the
//!   receiver does; device settings → `DeviceSettings::check`;
//! - group request → `ControlState::put_group`; stream request → parsed.
//!
//! Also the topic helpers (`topics::device_of`) and broker URLs (`BrokerUrl`) on the
//! input as text. Checks: no panic; what the product publishes for a parsed payload
//! (its own serialization) parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use syncstream_protocol::messages::{
    parse, topics, BufferOffset, CalibrationResult, Command, ConfigPush, DeviceSettings,
    DriftReport, GroupRequest, Status, TestToneRequest,
};
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_receiver::offset::OffsetRamp;
use syncstream_receiver::test_tone::ToneSession;
use syncstream_shared::limits::OffsetLimits;
use syncstream_transmitter::control::state::{ControlState, Settings};
use syncstream_transmitter::control::StreamRequest;
use syncstream_transmitter::controller::{ControllerConfig, Decision, SyncController};

const TOPIC: &str = "syncstream/fuzz/tv";
const NOW_US: i64 = 1_000_000_000;

/// Parses `payload` as `T`; on success, checks that its serialization parses again.
fn parse_and_back<T: DeserializeOwned + Serialize>(payload: &[u8]) -> Option<T> {
    match parse::<T>(TOPIC, payload) {
        Ok(v) => {
            let text = serde_json::to_vec(&v).expect("a parsed payload serializes");
            parse::<T>(TOPIC, &text).expect("a serialized payload parses again");
            Some(v)
        }
        Err(e) => {
            assert!(e.to_string().contains(TOPIC));
            None
        }
    }
}

fn check_offset(o: &BufferOffset, limits: &OffsetLimits) {
    assert!(o.offset_ms.is_finite(), "{o:?}");
    assert!(
        o.offset_ms >= limits.min_ms - 1e-9 && o.offset_ms <= limits.max_ms + 1e-9,
        "{o:?} outside {limits:?}"
    );
    assert!(o.rate_ms_per_s.is_finite(), "{o:?}");
}

fn drift(r: DriftReport) {
    let cfg = ControllerConfig::default();
    let limits = cfg.limits;
    let mut c = SyncController::new(cfg);
    for k in 0..3 {
        let now = NOW_US + k * 2_500_000;
        if let Decision::Publish(o) = c.on_report(&r, now) {
            check_offset(&o, &limits);
        }
    }
    for o in c.keepalive(NOW_US + 30_000_000) {
        check_offset(&o, &limits);
    }
    let _ = serde_json::to_string(&c.snapshot());
    let mut st = ControlState::new(Settings::default());
    st.on_report(r.clone(), NOW_US, 0.0);
    let _ = st.device_json(&r.device, NOW_US, false);
}

fn offset(o: BufferOffset) {
    for limits in [
        OffsetLimits::for_playout_delay_ms(1000.0),
        OffsetLimits::widest(),
    ] {
        for now in [None, Some(NOW_US as f64)] {
            if let Ok((ramp, _note)) = OffsetRamp::from_message(&o, &limits, now) {
                for t in [0.0, 10e6] {
                    let at = ramp.at_ms(NOW_US as f64 + t);
                    assert!(
                        at.is_finite() && at >= limits.min_ms - 1e-6 && at <= limits.max_ms + 1e-6,
                        "{ramp:?} gives {at} ms, outside {limits:?}"
                    );
                }
            }
        }
    }
    let mut st = ControlState::new(Settings::default());
    st.on_offset(o.clone());
    let _ = st.device_json(&o.device, NOW_US, false);
}

fn command(c: Command) {
    match c {
        Command::Volume { value } => {
            // As the receiver checks it.
            let _ok = value.is_finite() && (0.0..=1.0).contains(&value);
        }
        Command::Adjust { manual_adjust_ms } => {
            let mut c = SyncController::new(ControllerConfig::default());
            if c.set_manual_adjust("tv", manual_adjust_ms).is_ok() {
                assert!(c.manual_adjust_ms("tv").is_finite());
            }
        }
        Command::TestTone(req) => test_tone(&req),
        _ => {}
    }
}

fn test_tone(req: &TestToneRequest) {
    // Signals are generated: only short ones (or refused lengths), for speed.
    let short = match req.duration_ms {
        Some(d) => !(d > 300.0),
        None => false,
    };
    if short {
        if let Ok(s) = ToneSession::new(req, NOW_US, 70.0, 0.5) {
            assert!(s.samples().iter().all(|x| x.is_finite()));
        }
    }
}

fn status(s: Status) {
    let mut st = ControlState::new(Settings::default());
    st.on_status(s.clone(), NOW_US);
    let _ = st.device_json(&s.device, NOW_US, true);
}

fn config(c: ConfigPush) {
    let limits = OffsetLimits::for_playout_delay_ms(1000.0);
    for p in c.devices.values() {
        if p.validate().is_ok() && limits.check_base_latency(p.base_latency_ms).is_ok() {
            let r = OffsetRamp::constant(p.base_latency_ms);
            assert!(r.offset_ms.is_finite());
        }
    }
}

fn group(g: GroupRequest) {
    let mut st = ControlState::new(Settings::default());
    let _ = st.put_group("kitchen", &g, &|s: &str| s == "default" || s == "radio");
    let _ = st.groups_json();
}

fuzz_target!(|data: &[u8]| {
    if let Some(r) = parse_and_back::<DriftReport>(data) {
        drift(r);
    }
    if let Some(o) = parse_and_back::<BufferOffset>(data) {
        offset(o);
    }
    if let Some(c) = parse_and_back::<Command>(data) {
        command(c);
    }
    if let Some(s) = parse_and_back::<Status>(data) {
        status(s);
    }
    if let Some(c) = parse_and_back::<ConfigPush>(data) {
        config(c);
    }
    if let Some(s) = parse_and_back::<DeviceSettings>(data) {
        let _ = s.check();
    }
    if let Some(g) = parse_and_back::<GroupRequest>(data) {
        group(g);
    }
    let _ = parse_and_back::<CalibrationResult>(data);
    let _ = parse::<StreamRequest>(TOPIC, data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = topics::device_of(text, "drift");
        if let Ok(url) = text.parse::<BrokerUrl>() {
            // What is shown never has the password.
            let back: BrokerUrl = url.to_string().parse().expect("a shown URL parses");
            let mut shown = url.clone();
            shown.password = None;
            assert_eq!(back, shown);
        }
    }
});
