//! Tests of the receiver node: every number from the network or MQTT is checked before
//! it is used; malformed or extreme input gets a clear error or is dropped, never a
//! panic or a wrong offset (these run in debug builds, with overflow checks, and in
//! release builds).

use syncstream_protocol::messages::{topics, BufferOffset, Status};
use syncstream_protocol::wire::{Codec, Frame, PROTOCOL_VERSION};
use syncstream_shared::profile::{DeviceProfile, OutputType};

use super::*;
use crate::realtime::{self, Capturer, Renderer};

/// Collects what the node asks for.
#[derive(Default)]
struct Recorder {
    sent: Vec<Frame>,
    resets: Vec<(String, i64)>,
    published: Vec<(String, Vec<u8>, bool)>,
    fetches: Vec<WindowRequest>,
    jobs: Vec<Job>,
    persisted: Vec<PersistedState>,
    kept_profiles: Vec<DeviceProfile>,
}

impl ReceiverIo for Recorder {
    fn stream_send(&mut self, frame: Frame) {
        self.sent.push(frame);
    }
    fn clock_send(&mut self, frame: Frame) {
        self.sent.push(frame);
    }
    fn stream_reset(&mut self, reason: &str, retry_after_us: i64) {
        self.resets.push((reason.into(), retry_after_us));
    }
    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.published.push((topic, payload, retain));
    }
    fn fetch_window(&mut self, request: WindowRequest) {
        self.fetches.push(request);
    }
    fn run_job(&mut self, job: Job) {
        self.jobs.push(job);
    }
    fn persist(&mut self, state: &PersistedState) {
        self.persisted.push(*state);
    }
    fn keep_profile(&mut self, profile: &DeviceProfile) {
        self.kept_profiles.push(profile.clone());
    }
}

impl Recorder {
    fn last_status(&self) -> Status {
        let (_, p, _) = self
            .published
            .iter()
            .rev()
            .find(|(t, _, _)| t.starts_with("syncstream/status/"))
            .expect("a status was published");
        serde_json::from_slice(p).unwrap()
    }
}

fn node_with(profile: DeviceProfile) -> (ReceiverNode, Renderer, Capturer) {
    let (r, c, control) = realtime::engine(profile.base_latency_ms, 48_000);
    let node = ReceiverNode::new(
        NodeConfig {
            device: "tv".into(),
            instance: 42,
            profile,
            drift: DriftConfig::default(),
            mic_rate_hz: 48_000,
            persisted: None,
            key: test_key(),
        },
        control,
        0,
    )
    .unwrap();
    (node, r, c)
}

fn node() -> (ReceiverNode, Renderer, Capturer) {
    node_with(DeviceProfile::default_for(OutputType::Hdmi))
}

fn test_key() -> syncstream_protocol::auth::PairingKey {
    syncstream_protocol::auth::PairingKey::parse(&"7e".repeat(32)).unwrap()
}

/// The transmitter's challenge to the last hello `io` sent, under `key`.
fn challenge(io: &Recorder, key: syncstream_protocol::auth::PairingKey) -> Vec<u8> {
    let Some(Frame::ClientHello {
        device,
        instance,
        client_nonce,
        ..
    }) = io
        .sent
        .iter()
        .rev()
        .find(|f| matches!(f, Frame::ClientHello { .. }))
    else {
        panic!("no hello sent: {:?}", io.sent)
    };
    let (frame, _) =
        syncstream_protocol::auth::StreamAuth::new(key).challenge(client_nonce, device, *instance);
    frame.encode().unwrap()
}

/// The stream connection opens and the transmitter's challenge (test key) is answered.
fn connect(n: &mut ReceiverNode, now_us: i64, io: &mut Recorder) {
    n.on_stream_connected(now_us, io);
    let c = challenge(io, test_key());
    n.on_stream_frame(&c, now_us, io);
    assert!(
        matches!(io.sent.last(), Some(Frame::AuthResponse { .. })),
        "{:?}",
        io.sent.last()
    );
}

#[test]
fn a_transmitter_that_skips_the_challenge_or_has_another_key_is_not_played() {
    // A hello without the challenge first: dropped, the connection reset.
    let (mut n, _r, _c) = node();
    let mut io = Recorder::default();
    n.on_stream_connected(0, &mut io);
    n.on_stream_frame(&hello(1000), 5, &mut io);
    assert!(!n.connected());
    assert_eq!(io.resets.len(), 1);
    // A challenge under another key: no answer, an error status saying why.
    let (mut n, _r, _c) = node();
    let mut io = Recorder::default();
    n.on_stream_connected(0, &mut io);
    let other = syncstream_protocol::auth::PairingKey::parse(&"01".repeat(32)).unwrap();
    n.on_stream_frame(&challenge(&io, other), 5, &mut io);
    assert!(!io
        .sent
        .iter()
        .any(|f| matches!(f, Frame::AuthResponse { .. })));
    assert_eq!(io.resets.len(), 1);
    let s = io.last_status();
    assert_eq!(s.state, "error");
    assert!(s.reason.unwrap().contains("pairing key"));
    n.on_stream_frame(&hello(1000), 10, &mut io);
    assert!(!n.connected());
}

fn hello(playout_delay_ms: u32) -> Vec<u8> {
    Frame::ServerHello {
        protocol_version: PROTOCOL_VERSION,
        sample_rate: 48_000,
        channels: 2,
        codec: Codec::Pcm16,
        codec_delay_samples: 0,
        epoch_us: 0,
        playout_delay_ms,
        stream: "default".into(),
    }
    .encode()
    .unwrap()
}

/// A node that is streaming (hello accepted).
fn streaming() -> (ReceiverNode, Recorder, Renderer, Capturer) {
    let (mut n, r, c) = node();
    let mut io = Recorder::default();
    connect(&mut n, 0, &mut io);
    assert!(matches!(
        io.sent[0],
        Frame::ClientHello { ref device, instance: 42, .. } if device == "tv"
    ));
    n.on_stream_frame(&hello(1000), 10, &mut io);
    assert!(n.connected(), "{:?}", n.status(10));
    (n, io, r, c)
}

#[test]
fn invalid_names_are_refused() {
    for bad in ["a/b", "", "kitchen+", &"x".repeat(65)] {
        let (_, _, control) = realtime::engine(0.0, 48_000);
        let e = ReceiverNode::new(
            NodeConfig {
                device: bad.into(),
                instance: 1,
                profile: DeviceProfile::default_for(OutputType::Analog),
                drift: DriftConfig::default(),
                mic_rate_hz: 48_000,
                persisted: None,
                key: test_key(),
            },
            control,
            0,
        )
        .err()
        .unwrap();
        assert!(e.contains("device name"), "{bad}: {e}");
    }
}

#[test]
fn a_hello_with_absurd_values_is_refused_with_a_reason() {
    for (field, frame) in [
        (
            "protocol",
            Frame::ServerHello {
                protocol_version: 99,
                sample_rate: 48_000,
                channels: 2,
                codec: Codec::Opus,
                codec_delay_samples: 312,
                epoch_us: 0,
                playout_delay_ms: 1000,
                stream: "default".into(),
            },
        ),
        (
            "channels",
            Frame::ServerHello {
                protocol_version: PROTOCOL_VERSION,
                sample_rate: 48_000,
                channels: 7,
                codec: Codec::Opus,
                codec_delay_samples: 312,
                epoch_us: 0,
                playout_delay_ms: 1000,
                stream: "default".into(),
            },
        ),
        (
            "playout delay",
            Frame::ServerHello {
                protocol_version: PROTOCOL_VERSION,
                sample_rate: 48_000,
                channels: 2,
                codec: Codec::Opus,
                codec_delay_samples: 312,
                epoch_us: 0,
                playout_delay_ms: u32::MAX,
                stream: "default".into(),
            },
        ),
        (
            "epoch",
            Frame::ServerHello {
                protocol_version: PROTOCOL_VERSION,
                sample_rate: 48_000,
                channels: 2,
                codec: Codec::Opus,
                codec_delay_samples: 312,
                epoch_us: i64::MIN,
                playout_delay_ms: 1000,
                stream: "default".into(),
            },
        ),
        (
            "codec delay",
            Frame::ServerHello {
                protocol_version: PROTOCOL_VERSION,
                sample_rate: 48_000,
                channels: 2,
                codec: Codec::Opus,
                codec_delay_samples: u32::MAX,
                epoch_us: 0,
                playout_delay_ms: 1000,
                stream: "default".into(),
            },
        ),
    ] {
        let (mut n, _r, _c) = node();
        let mut io = Recorder::default();
        connect(&mut n, 0, &mut io);
        n.on_stream_frame(&frame.encode().unwrap(), 5, &mut io);
        assert!(!n.connected(), "{field}");
        assert_eq!(io.resets.len(), 1, "{field}");
        let s = io.last_status();
        assert_eq!(s.state, "error", "{field}");
        assert!(
            s.reason.as_deref().unwrap().contains(field),
            "{field}: {:?}",
            s.reason
        );
    }
}

#[test]
fn a_profile_beyond_the_playout_delay_asks_for_more_and_plays_when_it_comes() {
    let mut profile = DeviceProfile::default_for(OutputType::Chromecast);
    profile.base_latency_ms = 2000.0;
    let (mut n, _r, _c) = node_with(profile);
    let mut io = Recorder::default();
    connect(&mut n, 0, &mut io);
    n.on_stream_frame(&hello(1000), 5, &mut io);
    assert!(!n.connected());
    // It asks for 2000 + 50 ms of headroom, says so, and keeps the connection.
    assert!(
        matches!(
            io.sent.last(),
            Some(Frame::PlayoutDelayRequest {
                playout_delay_ms: 2050
            })
        ),
        "{:?}",
        io.sent
    );
    assert!(io.resets.is_empty(), "{:?}", io.resets);
    let s = io.last_status();
    let reason = s.reason.unwrap();
    for needle in ["1000 ms", "2050 ms", "2000 ms"] {
        assert!(reason.contains(needle), "{needle}: {reason}");
    }
    // Audio sent meanwhile (with the short delay) is dropped, not a protocol error.
    let chunk = Frame::Audio {
        sample_index: 0,
        frames: 960,
        payload: vec![0; 960 * 4],
    };
    n.on_stream_frame(&chunk.encode().unwrap(), 6, &mut io);
    assert!(io.resets.is_empty(), "{:?}", io.resets);
    assert_eq!(n.counters().frames_rejected, 0);
    // The transmitter grew the delay: the new hello is taken, the error is gone.
    n.on_stream_frame(&hello(2300), 20, &mut io);
    assert!(n.connected());
    let s = io.last_status();
    assert_eq!(s.state, "connecting");
    assert_eq!(s.reason, None);
    assert_eq!(s.playout_delay_ms, 2300.0);
}

#[test]
fn a_profile_beyond_any_playout_delay_is_refused_with_its_numbers() {
    let mut profile = DeviceProfile::default_for(OutputType::Chromecast);
    profile.base_latency_ms = 9990.0;
    let (_, _, control) = realtime::engine(0.0, 48_000);
    let e = ReceiverNode::new(
        NodeConfig {
            device: "cast".into(),
            instance: 1,
            profile,
            drift: DriftConfig::default(),
            mic_rate_hz: 48_000,
            persisted: None,
            key: test_key(),
        },
        control,
        0,
    )
    .err()
    .unwrap();
    for needle in ["9990", "9950 ms"] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn a_refusal_is_shown_and_retried_later() {
    let (mut n, _r, _c) = node();
    let mut io = Recorder::default();
    connect(&mut n, 0, &mut io);
    let refused = Frame::Refused {
        reason: "a receiver named 'tv' is already streaming from 10.0.0.5:4000".into(),
    };
    n.on_stream_frame(&refused.encode().unwrap(), 5, &mut io);
    assert!(!n.connected());
    assert!(io.resets[0].1 >= 1_000_000);
    let s = io.last_status();
    assert_eq!(s.state, "error");
    assert!(s
        .reason
        .unwrap()
        .contains("already streaming from 10.0.0.5"));
}

#[test]
fn extreme_audio_chunks_are_dropped() {
    let (mut n, mut io, _r, _c) = streaming();
    for (index, frames, payload) in [
        (u64::MAX, 960u32, vec![0u8; 3840]),
        (1 << 60, 960, vec![0u8; 3840]),
        (0, u32::MAX, vec![0u8; 3840]),
        (0, 0, vec![]),
        (0, 960, vec![1, 2, 3]),
    ] {
        let f = Frame::Audio {
            sample_index: index,
            frames,
            payload,
        };
        n.on_stream_frame(&f.encode().unwrap(), 100, &mut io);
    }
    assert_eq!(n.counters().frames_rejected, 5);
    // A good chunk is taken.
    let f = Frame::Audio {
        sample_index: 960,
        frames: 960,
        payload: vec![0u8; 3840],
    };
    n.on_stream_frame(&f.encode().unwrap(), 100, &mut io);
    assert_eq!(n.counters().frames_rejected, 5);
}

#[test]
fn clock_sync_answers_are_checked() {
    let (mut n, mut io, _r, _c) = streaming();
    n.poll(1_000, &mut io);
    let t1 = io
        .sent
        .iter()
        .find_map(|f| match f {
            Frame::TimeRequest { t1_us } => Some(*t1_us),
            _ => None,
        })
        .expect("a clock-sync request");
    let answer = |t1_us, t2_us, t3_us| {
        Frame::TimeResponse {
            t1_us,
            t2_us,
            t3_us,
        }
        .encode()
        .unwrap()
    };
    // Unsolicited, impossible and absurd answers change nothing.
    n.on_stream_frame(&answer(t1 + 1, 5000, 5010), 1_400, &mut io);
    n.on_stream_frame(&answer(t1, 5010, 5000), 1_400, &mut io);
    assert_eq!(n.counters().exchanges_rejected, 2);
    assert_eq!(n.clock().exchanges(), 0);
    n.poll(60_000, &mut io);
    let t1b = match io.sent.last() {
        Some(Frame::TimeRequest { t1_us }) => *t1_us,
        other => panic!("{other:?}"),
    };
    n.on_stream_frame(&answer(t1b, i64::MAX, i64::MAX), 60_500, &mut io);
    assert_eq!(n.clock().exchanges(), 0);
    // A good one is used.
    n.poll(120_000, &mut io);
    let t1c = match io.sent.last() {
        Some(Frame::TimeRequest { t1_us }) => *t1_us,
        other => panic!("{other:?}"),
    };
    n.on_stream_frame(&answer(t1c, t1c + 5_100, t1c + 5_120), t1c + 220, &mut io);
    assert_eq!(n.clock().exchanges(), 1);
    assert!((n.clock().offset_us().unwrap() - 5000.0).abs() < 1.0);
}

#[test]
fn offsets_from_mqtt_are_checked() {
    let (mut n, mut io, _r, _c) = streaming();
    let topic = topics::buffer_offset("tv");
    let send = |n: &mut ReceiverNode, io: &mut Recorder, payload: &[u8]| {
        n.on_mqtt_message(&topic, payload, 1_000, io)
    };
    // The case that used to silence a receiver: a rate with an absurd reference time.
    let o = BufferOffset {
        device: "tv".into(),
        offset_ms: 5.0,
        seq: 1,
        rate_ms_per_s: 1.0,
        ref_us: i64::MIN,
    };
    send(&mut n, &mut io, &serde_json::to_vec(&o).unwrap());
    assert_eq!(n.offset(), OffsetRamp::constant(5.0));
    for t in [i64::MIN as f64, -1e18, 0.0, 1e18, i64::MAX as f64] {
        assert_eq!(n.offset().at_ms(t), 5.0);
    }
    // Beyond the buffer: clamped to what the playout delay allows.
    let o = BufferOffset {
        offset_ms: 5000.0,
        ..o.clone()
    };
    send(&mut n, &mut io, &serde_json::to_vec(&o).unwrap());
    assert_eq!(n.offset().offset_ms, 950.0);
    // Malformed, another device's, out of range, oversized: ignored.
    let before = n.offset();
    for bad in [
        &b"{\"device\":\"tv\",\"offset_ms\":1e999}"[..],
        b"{\"device\":\"kitchen\",\"offset_ms\":3}",
        b"{\"device\":\"tv\",\"offset_ms\":\"soon\"}",
        b"\xff\xfe",
        &vec![b' '; MAX_MQTT_PAYLOAD + 1],
    ] {
        send(&mut n, &mut io, bad);
    }
    assert_eq!(n.offset(), before);
    assert_eq!(n.counters().mqtt_rejected, 5);
    // Commands with out-of-range values are refused too.
    n.on_mqtt_message(
        &topics::command("tv"),
        b"{\"cmd\":\"volume\",\"value\":1e300}",
        1_000,
        &mut io,
    );
    assert_eq!(n.status(0).volume, 1.0);
    n.on_mqtt_message(
        &topics::command("tv"),
        b"{\"cmd\":\"volume\",\"value\":0.25}",
        1_000,
        &mut io,
    );
    assert_eq!(n.status(0).volume, 0.25);
}

#[test]
fn arbitrary_frames_never_panic() {
    let (mut n, mut io, _r, _c) = streaming();
    let mut x: u64 = 0x1234_5678;
    for len in 0..2000usize {
        let bytes: Vec<u8> = (0..len % 97)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        n.on_stream_frame(&bytes, len as i64 * 1000, &mut io);
        n.on_mqtt_message(&topics::buffer_offset("tv"), &bytes, 0, &mut io);
        n.on_mqtt_message(&topics::command("tv"), &bytes, 0, &mut io);
        n.on_mqtt_message(topics::CONFIG, &bytes, 0, &mut io);
        n.poll(len as i64 * 1000, &mut io);
    }
}

#[test]
fn the_status_counts_xruns_and_late_callbacks() {
    let (mut n, _io, mut r, _c) = streaming();
    let xruns = Arc::new(AtomicU64::new(3));
    n.add_xrun_counter(xruns.clone());
    let mut out = vec![0.0f32; 960];
    r.render(&mut out, 0);
    r.render(&mut out, 100_000);
    let s = n.status(0);
    assert_eq!((s.xruns, s.late_callbacks), (3, 1));
}

/// A stream switch keeps clock sync and the offset, starts a new decoder, names the new
/// stream in the status and in source-window requests; a switch with bad numbers is
/// refused like a bad hello.
#[test]
fn a_stream_switch_keeps_clock_sync() {
    let (mut n, mut io, _r, _c) = streaming();
    assert_eq!(n.stream(), "default");
    n.poll(1_000, &mut io);
    let t1 = io
        .sent
        .iter()
        .rev()
        .find_map(|f| match f {
            Frame::TimeRequest { t1_us } => Some(*t1_us),
            _ => None,
        })
        .unwrap();
    let answer = Frame::TimeResponse {
        t1_us: t1,
        t2_us: t1 + 5_100,
        t3_us: t1 + 5_120,
    };
    n.on_stream_frame(&answer.encode().unwrap(), t1 + 220, &mut io);
    assert_eq!(n.clock().exchanges(), 1);
    let offset = n.offset();
    let switch = Frame::StreamSwitch {
        stream: "radio".into(),
        codec: Codec::Pcm16,
        codec_delay_samples: 0,
        epoch_us: 0,
    };
    n.on_stream_frame(&switch.encode().unwrap(), 2_000, &mut io);
    assert_eq!(n.stream(), "radio");
    assert!(n.connected());
    assert_eq!(n.clock().exchanges(), 1, "clock sync survives a switch");
    assert_eq!(n.offset(), offset);
    assert_eq!(io.last_status().stream.as_deref(), Some("radio"));
    // Measurements wait until the microphone has heard only the new stream.
    assert!(n.next_measurement_us() >= 2_000 + 3_000_000);
    for bad in [
        Frame::StreamSwitch {
            stream: "no/such".into(),
            codec: Codec::Pcm16,
            codec_delay_samples: 0,
            epoch_us: 0,
        },
        Frame::StreamSwitch {
            stream: "x".into(),
            codec: Codec::Pcm16,
            codec_delay_samples: u32::MAX,
            epoch_us: 0,
        },
    ] {
        let (mut n, mut io, _r, _c) = streaming();
        n.on_stream_frame(&bad.encode().unwrap(), 2_000, &mut io);
        assert!(!n.connected(), "{bad:?} accepted");
        assert_eq!(n.status(0).state, "error");
    }
}

/// Settings from the control plane: applied whole (device × group volume), bad ones
/// dropped and counted; a manual-adjust command is for the controller and ignored.
#[test]
fn settings_from_the_control_plane_are_checked() {
    let (mut n, mut io, _r, _c) = streaming();
    let topic = topics::settings("tv");
    n.on_mqtt_message(
        &topic,
        br#"{"device":"tv","group":"upstairs","stream":"default","volume":0.5,"muted":false,"group_volume":0.8,"group_muted":true}"#,
        100,
        &mut io,
    );
    let s = io.last_status();
    assert_eq!(
        (s.volume, s.muted, s.group.as_deref()),
        (0.5, false, Some("upstairs"))
    );
    let before = n.counters().mqtt_rejected;
    for bad in [
        &br#"{"device":"tv","volume":1.5,"muted":false}"#[..],
        br#"{"device":"kitchen","volume":0.5,"muted":false}"#,
        br#"{"device":"tv","volume":0.5,"muted":false,"group_volume":-1}"#,
        b"nonsense",
    ] {
        n.on_mqtt_message(&topic, bad, 200, &mut io);
    }
    assert_eq!(n.counters().mqtt_rejected, before + 4);
    assert_eq!(n.status(0).volume, 0.5);
    n.on_mqtt_message(
        &topics::command("tv"),
        br#"{"cmd":"adjust","manual_adjust_ms":2.0}"#,
        300,
        &mut io,
    );
    assert_eq!(n.counters().mqtt_rejected, before + 4);
}

/// An unmute: the next measurement comes when a window can hold only the device's
/// sound again (a window plus its output latency and a margin after the unmute), not
/// at the next regular time; a mute and unmute between two polls counts too.
#[test]
fn after_an_unmute_the_first_measurement_waits_for_one_window_of_sound() {
    let (mut n, mut io, _r, _c) = streaming();
    let cmd = |n: &mut ReceiverNode, io: &mut Recorder, c: &[u8], at: i64| {
        n.on_mqtt_message(&topics::command("tv"), c, at, io)
    };
    let latency_us = (n.offset().offset_ms * 1000.0) as i64;
    let window_us = DriftConfig::default().window_ms as i64 * 1000;
    let expected = |at: i64| {
        let lo = at + window_us + latency_us + measure::RESUME_MARGIN_MS * 1000;
        lo..lo + 2_000 // rounding up of the latency and the microphone's distance
    };
    cmd(&mut n, &mut io, br#"{"cmd":"mute"}"#, 1_000_000);
    for t in (1_100_000..20_000_000).step_by(100_000) {
        n.poll(t, &mut io);
    }
    cmd(&mut n, &mut io, br#"{"cmd":"unmute"}"#, 20_000_000);
    n.poll(20_000_000, &mut io);
    assert!(
        expected(20_000_000).contains(&n.next_measurement_us()),
        "{} not in {:?}",
        n.next_measurement_us(),
        expected(20_000_000)
    );
    // Muted and unmuted again before the node polled.
    n.poll(30_000_000, &mut io);
    cmd(&mut n, &mut io, br#"{"cmd":"mute"}"#, 30_000_001);
    cmd(&mut n, &mut io, br#"{"cmd":"unmute"}"#, 30_000_002);
    n.poll(30_000_003, &mut io);
    assert!(expected(30_000_003).contains(&n.next_measurement_us()));
}

/// `check_mic`: with no microphone audio yet the answer says so; with 4 s of a tone it
/// runs the check as a job and publishes the report, naming the device.
#[test]
fn check_mic_judges_the_microphone_audio_it_holds() {
    let (mut n, mut io, _r, c) = streaming();
    let cmd = br#"{"cmd":"check_mic"}"#;
    n.on_mqtt_message(&topics::command("tv"), cmd, 0, &mut io);
    let (topic, payload, retain) = io.published.last().expect("an answer").clone();
    assert_eq!((topic.as_str(), retain), ("syncstream/mic_check/tv", false));
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("no microphone audio yet"),
        "{v}"
    );

    let mut capture = c.into_capture_fn();
    let rate = 48_000.0;
    let mut block = vec![0.0f32; 480];
    for b in 0..400 {
        for (i, s) in block.iter_mut().enumerate() {
            let t = (b * 480 + i) as f64 / rate;
            *s = (0.05 * (std::f64::consts::TAU * 1000.0 * t).sin()) as f32;
        }
        let adc_us = b as i64 * 10_000;
        capture(&block, adc_us);
        n.poll(adc_us + 10_000, &mut io);
    }
    io.jobs.clear();
    n.on_mqtt_message(&topics::command("tv"), cmd, 4_000_000, &mut io);
    let job = io.jobs.pop().expect("a mic check job");
    assert!(matches!(
        job,
        Job::MicCheck {
            rate_hz: 48_000,
            ..
        }
    ));
    n.on_job_done(job.run(), 4_100_000, &mut io);
    let (topic, payload, _) = io.published.last().expect("a report").clone();
    assert_eq!(topic, "syncstream/mic_check/tv");
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        (v["device"].as_str(), v["ok"].as_bool()),
        (Some("tv"), Some(true)),
        "{v}"
    );
    assert_eq!(v["signal_on"], "mono");
    let rms = v["channels"][0]["rms_dbfs"].as_f64().unwrap();
    assert!(
        (rms - (-29.0)).abs() < 1.0,
        "RMS {rms} dBFS of a 0.05 sine (−29 dBFS)"
    );
}

/// A node whose microphone captures at `mic_rate_hz`.
fn node_with_mic(mic_rate_hz: u32) -> (ReceiverNode, Renderer, Capturer) {
    let (r, c, control) = realtime::engine(0.0, mic_rate_hz);
    let node = ReceiverNode::new(
        NodeConfig {
            device: "tv".into(),
            instance: 42,
            profile: DeviceProfile::default_for(OutputType::Hdmi),
            drift: DriftConfig::default(),
            mic_rate_hz,
            persisted: None,
            key: test_key(),
        },
        control,
        0,
    )
    .unwrap();
    (node, r, c)
}

/// A band-limited random sound defined at any time: 120 sinusoids of random
/// frequencies (150 Hz to 7 kHz) and phases; `t_s` in seconds.
struct Sound(Vec<(f64, f64, f64)>);

impl Sound {
    fn new() -> Self {
        let r = syncstream_testkit::white_noise(360, 11, 1.0);
        Self(
            r.chunks(3)
                .map(|c| {
                    let f = 150.0 + (c[0] as f64 + 1.0) / 2.0 * 6850.0;
                    (
                        f,
                        c[1] as f64 * std::f64::consts::PI,
                        0.01 + 0.01 * c[2].abs() as f64,
                    )
                })
                .collect(),
        )
    }
    fn at(&self, t_s: f64) -> f32 {
        self.0
            .iter()
            .map(|(f, ph, a)| a * (2.0 * std::f64::consts::PI * f * t_s + ph).sin())
            .sum::<f64>() as f32
    }
}

/// Feeds `secs` of the sound delayed by `delay_us` to a node's microphone at
/// `mic_rate_hz` (10 ms capture blocks stamped with their ADC times), then estimates
/// the delay of the node's 48 kHz microphone recording against the sound, ms.
fn measured_delay_ms(mic_rate_hz: u32, delay_us: f64) -> f64 {
    use syncstream_dsp::delay::LagSearch;
    use syncstream_shared::time::samples_to_us;
    let (mut n, _r, mut c) = node_with_mic(mic_rate_hz);
    let sound = Sound::new();
    let t0_us: i64 = 3_000_123;
    let block = (mic_rate_hz / 100) as usize;
    for k in 0..300 {
        let first = k * block;
        let samples: Vec<f32> = (first..first + block)
            .map(|i| {
                // ADC time of sample i, then the sound as it was `delay_us` earlier.
                let t_us = t0_us as f64 + i as f64 * 1e6 / mic_rate_hz as f64;
                sound.at((t_us - delay_us) * 1e-6)
            })
            .collect();
        c.capture(&samples, t0_us + samples_to_us(first as i64, mic_rate_hz));
        if k % 10 == 9 {
            n.pump_audio();
        }
    }
    n.pump_audio();
    assert_eq!(n.mic.rate(), 48_000);
    let (first_us, recording) = n.mic.latest(2000).expect("2 s of microphone audio");
    let reference: Vec<f32> = (0..recording.len())
        .map(|m| sound.at(first_us as f64 * 1e-6 + m as f64 / 48_000.0))
        .collect();
    let mut est = DelayEstimator::new(48_000);
    let e = est
        .estimate(&reference, &recording, &LagSearch::symmetric(5.0))
        .unwrap();
    e.delay_ms.expect("a delay")
}

#[test]
fn a_44_1_khz_microphone_measures_delays_as_exactly_as_a_48_khz_one() {
    for rate in [44_100, 48_000] {
        for delay_us in [0.0, 1234.0] {
            let d = measured_delay_ms(rate, delay_us);
            eprintln!("{rate} Hz: delay {delay_us} µs measured {:.4} ms", d);
            assert!(
                (d - delay_us / 1000.0).abs() < 0.05,
                "{rate} Hz: measured {d} ms, expected {} ms",
                delay_us / 1000.0
            );
        }
    }
}

/// A receiver node playing from a transmitter on the same clock: 20 ms PCM chunks sent
/// 5 ms after their end, clock-sync requests answered at once (200 µs round trip),
/// the output rendering 10 ms blocks. Time is simulated (µs).
struct Playback {
    n: ReceiverNode,
    io: Recorder,
    r: Renderer,
    _c: Capturer,
    /// Local time now, µs.
    t: i64,
    next_chunk: u64,
    /// The transmitter sends audio.
    sending: bool,
    out: Vec<f32>,
}

impl Playback {
    fn new() -> Self {
        let (n, io, r, c) = streaming();
        Self {
            n,
            io,
            r,
            _c: c,
            t: 10,
            next_chunk: 0,
            sending: true,
            out: vec![0.0; 960],
        }
    }

    /// Runs for `seconds` of simulated time.
    fn run(&mut self, seconds: f64) {
        let end = self.t + (seconds * 1e6) as i64;
        while self.t < end {
            self.step();
        }
    }

    /// Runs until `done` holds, for at most `seconds`; returns whether it held.
    fn run_until(&mut self, seconds: f64, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.t + (seconds * 1e6) as i64;
        while self.t < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    fn step(&mut self) {
        self.t += 10_000;
        let t = self.t;
        if self.sending {
            while (self.next_chunk as i64 + 1) * 20_000 + 5_000 <= t {
                let payload: Vec<u8> = (0..3840u32).map(|i| (i * 7 % 251) as u8).collect();
                let f = Frame::Audio {
                    sample_index: self.next_chunk * 960,
                    frames: 960,
                    payload,
                };
                self.n
                    .on_stream_frame(&f.encode().unwrap(), t, &mut self.io);
                self.next_chunk += 1;
            }
        } else {
            // A transmitter that comes back sends what it makes from then on.
            self.next_chunk = (t as u64).saturating_sub(25_000) / 20_000;
        }
        self.n.poll(t, &mut self.io);
        let requests: Vec<i64> = self
            .io
            .sent
            .drain(..)
            .filter_map(|f| match f {
                Frame::TimeRequest { t1_us } => Some(t1_us),
                _ => None,
            })
            .collect();
        for t1 in requests {
            let answer = Frame::TimeResponse {
                t1_us: t1,
                t2_us: t1 + 100,
                t3_us: t1 + 100,
            };
            self.n
                .on_stream_frame(&answer.encode().unwrap(), t1 + 200, &mut self.io);
        }
        self.r.render(&mut self.out, t);
    }

    fn underruns(&self) -> u64 {
        self.n.snapshot().audio.underruns
    }

    fn state(&self) -> String {
        self.io.last_status().state
    }
}

/// Issue 14: `{"offset_ms":5,"rate_ms_per_s":1,"ref_us":-9223372036854775808}` on
/// `syncstream/buffer_offset/<device>` made a receiver underrun a hundred times a second
/// while its status said `playing`. Now the rate is dropped (its reference time is
/// absurd) and any rate is bounded so the offset never leaves the buffer: playout goes
/// on without an underrun.
#[test]
fn a_forged_offset_ramp_does_not_silence_the_receiver() {
    let mut p = Playback::new();
    p.run(3.0);
    assert!(p.n.clock().mapping().is_some(), "clock sync");
    assert!(p.run_until(6.0, |p| p.state() == "playing"));
    let before = p.underruns();
    let topic = topics::buffer_offset("tv");
    for payload in [
        &br#"{"offset_ms":5,"rate_ms_per_s":1,"ref_us":-9223372036854775808}"#[..],
        br#"{"device":"tv","offset_ms":5,"rate_ms_per_s":1,"ref_us":-9223372036854775808}"#,
    ] {
        p.n.on_mqtt_message(&topic, payload, p.t, &mut p.io);
    }
    assert_eq!(p.n.offset(), OffsetRamp::constant(5.0));
    // Then a legitimate-looking ramp at the top of the buffer: followed for 20 s at
    // 1 ms/s it would reach 970 ms, past the 950 ms a 1000 ms playout delay allows.
    let now_tx = p.n.clock().tx_from_local(p.t as f64).unwrap() as i64;
    let edge = format!(r#"{{"device":"tv","offset_ms":945,"rate_ms_per_s":1,"ref_us":{now_tx}}}"#);
    p.n.on_mqtt_message(&topic, edge.as_bytes(), p.t, &mut p.io);
    let limits = OffsetLimits::for_playout_delay_ms(1000.0);
    for k in -30..=60 {
        let o = p.n.offset().at_ms(now_tx as f64 + k as f64 * 1e6);
        assert!(
            limits.contains(o),
            "offset {o} ms at {k} s is outside the buffer"
        );
    }
    // Back to the forged one; the receiver plays on.
    p.n.on_mqtt_message(
        &topic,
        br#"{"device":"tv","offset_ms":5,"rate_ms_per_s":1,"ref_us":-9223372036854775808}"#,
        p.t,
        &mut p.io,
    );
    p.run(25.0);
    assert_eq!(p.underruns(), before, "no underrun after the forged offset");
    let s = p.io.last_status();
    assert_eq!((s.state.as_str(), s.offset_ms), ("playing", 5.0));
}

/// Issue 14: the status says what the receiver really does: `starved` (with the
/// reason) while it runs dry, published within a couple of seconds, `muted`, `stopped`
/// and `error` with their reasons, and `playing` again when audio comes back.
#[test]
fn the_status_tells_the_truth() {
    let mut p = Playback::new();
    // Playing is reported by the regular status (every 5 s).
    assert!(p.run_until(6.0, |p| p.state() == "playing"));
    p.run(1.0);
    // The transmitter stops sending (connection up): the 1 s buffer runs out.
    p.sending = false;
    let stopped_at = p.t;
    assert!(
        p.run_until(5.0, |p| p.state() == "starved"),
        "no 'starved' status while running dry: {:?}",
        p.io.last_status()
    );
    assert!(
        p.t - stopped_at < 3_000_000,
        "starved published {} ms after the audio stopped",
        (p.t - stopped_at) / 1000
    );
    let s = p.io.last_status();
    assert_eq!(s.reason.as_deref(), Some("the audio stream ran dry"));
    assert!(s.underruns > 0);
    // It comes back.
    p.sending = true;
    assert!(
        p.run_until(5.0, |p| p.state() == "playing"),
        "{:?}",
        p.io.last_status()
    );
    // The transmitter goes away: connection closed, buffer runs out.
    p.n.on_stream_closed(p.t, "reset by peer", &mut p.io);
    p.sending = false;
    assert!(p.run_until(5.0, |p| p.state() == "starved"));
    assert!(p
        .io
        .last_status()
        .reason
        .unwrap()
        .contains("transmitter is unreachable"));
    // Reconnected and streaming again.
    connect(&mut p.n, p.t, &mut p.io);
    p.n.on_stream_frame(&hello(1000), p.t, &mut p.io);
    p.sending = true;
    assert!(
        p.run_until(10.0, |p| p.state() == "playing"),
        "{:?}",
        p.io.last_status()
    );
    // Muted: by command, then by its group.
    let command = topics::command("tv");
    p.n.on_mqtt_message(&command, br#"{"cmd":"mute"}"#, p.t, &mut p.io);
    let s = p.io.last_status();
    assert_eq!(
        (s.state.as_str(), s.reason.as_deref(), s.muted),
        ("muted", Some("the device is muted"), true)
    );
    p.n.on_mqtt_message(&command, br#"{"cmd":"unmute"}"#, p.t, &mut p.io);
    assert_eq!(p.state(), "playing");
    p.n.on_mqtt_message(
        &topics::settings("tv"),
        br#"{"device":"tv","group":"upstairs","stream":"default","volume":1,"muted":false,"group_volume":1,"group_muted":true}"#,
        p.t,
        &mut p.io,
    );
    let s = p.io.last_status();
    assert_eq!(
        (s.state.as_str(), s.reason.as_deref()),
        ("muted", Some("its group 'upstairs' is muted"))
    );
    // Stopped, and started again.
    p.n.on_mqtt_message(&command, br#"{"cmd":"stop"}"#, p.t, &mut p.io);
    assert_eq!(p.state(), "stopped");
    p.run(3.0);
    assert_eq!(p.state(), "stopped", "a stopped receiver is not starved");
    p.n.on_mqtt_message(&command, br#"{"cmd":"start"}"#, p.t, &mut p.io);
    // An output that fails: error, with its reason.
    p.n.on_output(
        crate::output::OutputState {
            error: Some("output hw:1 cannot be opened: busy; retried in 5 s".into()),
            hardware_volume: false,
        },
        p.t,
        &mut p.io,
    );
    let s = p.io.last_status();
    assert_eq!(s.state, "error");
    assert!(s.reason.unwrap().contains("hw:1 cannot be opened"));
}

/// Issue 14, state that survives: a receiver restarted with the offset it kept (the
/// controller's) stays there when the retained `syncstream/config` brings its profile
/// again; one without a kept offset takes the profile's.
#[test]
fn a_kept_offset_is_not_replaced_by_the_profile_of_a_config_push() {
    let config = br#"{"devices":{"tv":{"type":"hdmi","base_latency_ms":70}}}"#;
    for (kept, want) in [(Some(61.25), 61.25), (None, 70.0)] {
        let profile = DeviceProfile::default_for(OutputType::Hdmi);
        let (_, _, control) = realtime::engine(profile.base_latency_ms, 48_000);
        let mut n = ReceiverNode::new(
            NodeConfig {
                device: "tv".into(),
                instance: 42,
                profile,
                drift: DriftConfig::default(),
                mic_rate_hz: 48_000,
                persisted: kept.map(|offset_ms| PersistedState { offset_ms }),
                key: test_key(),
            },
            control,
            0,
        )
        .unwrap();
        let mut io = Recorder::default();
        n.on_mqtt_message("syncstream/config", config, 10, &mut io);
        assert_eq!(n.status(20).offset_ms, want, "kept {kept:?}");
    }
}

/// Issue 11, the config push: a pushed profile replaces the local one, its base
/// latency becomes the offset, and it is kept for the next start, once (the same
/// retained push after a reconnect is not written again); another device's profile,
/// or an invalid one, changes nothing.
#[test]
fn a_pushed_profile_is_adopted_and_kept_once() {
    let (mut n, _r, _c) = node_with(DeviceProfile::default_for(OutputType::Hdmi));
    let mut io = Recorder::default();
    let push = br#"{"devices":{"tv":{"type":"hdmi","base_latency_ms":82.5,"area":"Living room"},
                               "kitchen":{"type":"analog","base_latency_ms":5}}}"#;
    n.on_mqtt_message("syncstream/config", push, 10, &mut io);
    assert_eq!(n.status(20).offset_ms, 82.5);
    assert_eq!(n.profile().area, "Living room");
    assert_eq!(io.kept_profiles.len(), 1);
    assert_eq!(io.kept_profiles[0].base_latency_ms, 82.5);
    n.on_mqtt_message("syncstream/config", push, 30, &mut io);
    assert_eq!(io.kept_profiles.len(), 1, "the same push is not kept again");
    let bad = br#"{"devices":{"tv":{"type":"hdmi","base_latency_ms":-4}}}"#;
    n.on_mqtt_message("syncstream/config", bad, 40, &mut io);
    assert_eq!(n.status(50).offset_ms, 82.5);
    assert_eq!(io.kept_profiles.len(), 1);
}

/// While the programme is silent the node looks again every second for as long as the
/// pause lasts (the first window after it is measured at once); other reports without
/// an estimate get two follow-ups, then the normal interval.
#[test]
fn a_silent_programme_is_followed_up_every_second_while_it_lasts() {
    use crate::drift::DriftOutcome;
    use syncstream_dsp::DelayEstimator;
    use syncstream_protocol::messages::DriftReport;
    let done = |silent: bool| JobDone::Drift {
        outcome: DriftOutcome {
            report: DriftReport {
                device: "tv".into(),
                drift_ms: None,
                confidence: 0.0,
                signal_strength_db: -200.0,
                ts_us: 0,
                applied_offset_ms: 0.0,
                reason: Some(
                    if silent {
                        "the reference is silent"
                    } else {
                        "noise"
                    }
                    .into(),
                ),
                step: false,
                uncertainty_ms: None,
            },
            observation: None,
            silent,
        },
        estimator: Box::new(DelayEstimator::new(48_000)),
    };
    let interval_us = DriftConfig::default().interval_ms as i64 * 1000;
    for silent in [true, false] {
        let (mut n, _r, _c) = node();
        let mut io = Recorder::default();
        n.tracking = true;
        for k in 0..6i64 {
            let now_us = k * interval_us;
            n.next_measure_us = now_us + interval_us;
            n.on_job_done(done(silent), now_us, &mut io);
            let expected = if silent || k < measure::MAX_FOLLOW_UPS as i64 {
                now_us + measure::FOLLOW_UP_AFTER_MS * 1000
            } else {
                now_us + interval_us
            };
            assert_eq!(n.next_measure_us, expected, "silent {silent}, report {k}");
        }
    }
}

/// A [`Playback`] whose microphone delivers 10 ms blocks, and whose drift
/// measurements are answered at once (a report of +0.3 ms, the estimator handed
/// back; a source window asked for comes back as silence). Each answered
/// measurement's microphone window (local µs) is recorded.
struct Measured {
    p: Playback,
    windows: Vec<(i64, i64)>,
    speech_jobs: Vec<crate::voice::SpeechJob>,
    /// Every rendered 10 ms block: its DAC time and samples.
    rendered: Vec<(i64, Vec<f32>)>,
}

impl Measured {
    fn new(voice: crate::voice::VoiceConfig) -> Self {
        let mut p = Playback::new();
        p.n.set_voice(voice);
        Self {
            p,
            windows: Vec::new(),
            speech_jobs: Vec::new(),
            rendered: Vec::new(),
        }
    }

    fn step(&mut self) {
        use crate::drift::DriftOutcome;
        use syncstream_protocol::messages::DriftReport;
        self.p.step();
        self.rendered.push((self.p.t, self.p.out.clone()));
        let t = self.p.t;
        self.p._c.capture(&[0.01; 480], t - 10_000);
        for req in std::mem::take(&mut self.p.io.fetches) {
            let w = Window {
                first_pts_us: req.start_us,
                samples: vec![0.0; req.duration_ms as usize * 48],
            };
            self.p.n.on_window(req.id, Ok(w), t, &mut self.p.io);
        }
        for job in std::mem::take(&mut self.p.io.jobs) {
            match job {
                Job::Drift(j) => {
                    let from = self
                        .p
                        .n
                        .clock()
                        .local_from_tx(j.measurement.rec_start_tx_us)
                        .expect("clock sync") as i64;
                    let window_us = self.p.n.drift_cfg.window_ms as i64 * 1000;
                    self.windows.push((from, from + window_us));
                    let done = JobDone::Drift {
                        outcome: DriftOutcome {
                            report: DriftReport {
                                device: "tv".into(),
                                drift_ms: Some(0.3),
                                confidence: 0.9,
                                signal_strength_db: -20.0,
                                ts_us: j.measurement.rec_start_tx_us as i64,
                                applied_offset_ms: j.measurement.applied_offset_ms,
                                reason: None,
                                step: false,
                                uncertainty_ms: None,
                            },
                            observation: None,
                            silent: false,
                        },
                        estimator: j.estimator,
                    };
                    self.p.n.on_job_done(done, t, &mut self.p.io);
                }
                Job::Speak(s) => self.speech_jobs.push(s),
                other => panic!("unexpected job {other:?}"),
            }
        }
    }

    fn run(&mut self, seconds: f64) {
        let end = self.p.t + (seconds * 1e6) as i64;
        while self.p.t < end {
            self.step();
        }
    }

    fn reports(&self) -> usize {
        self.p
            .io
            .published
            .iter()
            .filter(|(t, _, _)| t == "syncstream/drift/tv")
            .count()
    }
}

/// RMS of a block.
fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// The `announce` command: its text comes from the node's figures, the synthesis runs
/// as a job, the speech replaces the music on the output over its span (and the music
/// comes back), and no drift measurement is made, hence no report, from a microphone
/// window the speech may reach, while measurements go on before and after it.
#[test]
fn an_announcement_is_played_and_no_drift_report_comes_from_a_window_it_reaches() {
    let mut m = Measured::new(crate::voice::VoiceConfig::default());
    m.run(12.0);
    assert_eq!(m.p.state(), "playing");
    let before = m.windows.len();
    assert!(before >= 2, "{before} measurements before the announcement");
    assert_eq!(m.reports(), before);

    m.p.n.on_mqtt_message(
        &topics::command("tv"),
        br#"{"cmd":"announce"}"#,
        m.p.t,
        &mut m.p.io,
    );
    m.step();
    assert_eq!(m.speech_jobs.len(), 1);
    let job = m.speech_jobs[0].clone();
    let offset = m.p.n.offset().offset_ms;
    assert_eq!(
        job.text,
        format!("Tv online, drift plus 0.3 milliseconds, offset {offset:.1} milliseconds")
    );
    assert_eq!(job.program, std::path::PathBuf::from("espeak-ng"));
    // A second command while the first is being synthesised: ignored.
    m.p.n.on_mqtt_message(
        &topics::command("tv"),
        br#"{"cmd":"announce"}"#,
        m.p.t,
        &mut m.p.io,
    );
    m.step();
    assert_eq!(m.speech_jobs.len(), 1);

    // 3 s of "speech" (a 440 Hz tone at 0.5) comes back from the job.
    let speech: Vec<f32> = (0..144_000)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin())
        .collect();
    let done_at = m.p.t;
    m.p.n.on_job_done(
        JobDone::Speech {
            id: job.id,
            result: Ok(speech),
        },
        done_at,
        &mut m.p.io,
    );
    let span = m.p.n.speech.expect("the speech is scheduled");
    assert_eq!(span.start_dac_us, done_at + crate::test_tone::LEAD_US);
    assert_eq!(span.end_dac_us, span.start_dac_us + 3_000_000);
    assert!(m.p.n.speaking());
    // A test tone meanwhile is refused, with the reason.
    m.p.n.on_mqtt_message(
        &topics::command("tv"),
        br#"{"cmd":"test_tone","run_id":"t1"}"#,
        m.p.t,
        &mut m.p.io,
    );
    let (_, payload, _) =
        m.p.io
            .published
            .iter()
            .rev()
            .find(|(t, _, _)| t == "syncstream/calibration/tv")
            .expect("an answer to the test tone")
            .clone();
    let cal: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert!(
        cal["error"].as_str().unwrap().contains("announcement"),
        "{cal}"
    );

    let during_from = m.rendered.len();
    m.run(15.0);
    assert!(
        !m.p.n.speaking(),
        "the overlay is disarmed after the speech"
    );

    // On the output: the speech alone over its span, the music before and after.
    let blocks = &m.rendered[during_from..];
    let inside: Vec<&(i64, Vec<f32>)> = blocks
        .iter()
        .filter(|(t, _)| {
            *t >= span.start_dac_us + 20_000 && *t + 10_000 <= span.end_dac_us - 20_000
        })
        .collect();
    assert!(
        inside.len() >= 290,
        "{} blocks inside the span",
        inside.len()
    );
    for (t, b) in &inside {
        let r = rms(b);
        assert!((r - 0.5 / 2f64.sqrt()).abs() < 0.01, "RMS {r} at {t}");
    }
    let after: Vec<&(i64, Vec<f32>)> = blocks
        .iter()
        .filter(|(t, _)| *t >= span.end_dac_us + 100_000)
        .collect();
    assert!(
        !after.is_empty()
            && after
                .iter()
                .all(|(_, b)| rms(b) > 0.05 && (rms(b) - 0.354).abs() > 0.01)
    );

    // Measurements: none whose window the speech, its fades or its echo may reach
    // (it reaches the microphone a buffer offset and the acoustic delay after the
    // DAC); some after it.
    let latency_us = ((offset + m.p.n.profile().mic_delay_ms()) * 1000.0) as i64;
    let fade_us = 20_000;
    let heard = (
        span.start_dac_us - fade_us,
        span.end_dac_us + fade_us + latency_us,
    );
    let after_speech: Vec<&(i64, i64)> = m.windows[before..].iter().collect();
    for (from, to) in &after_speech {
        assert!(
            *to <= heard.0 || *from >= heard.1,
            "a measurement of the window {from}..{to} µs, which overlaps the speech heard \
             {heard:?}"
        );
    }
    let resumed: Vec<&&(i64, i64)> = after_speech.iter().filter(|(f, _)| *f >= heard.1).collect();
    assert!(resumed.len() >= 2, "{after_speech:?}");
    // The first window clear of the speech is measured as soon as it is recorded.
    let window_us = m.p.n.drift_cfg.window_ms as i64 * 1000;
    let first_end = resumed[0].1;
    assert!(
        first_end <= heard.1 + window_us + 500_000,
        "first measurement after the speech ends at {first_end}, speech heard until {}",
        heard.1
    );
    // Every measurement made gave a report, and no other report was made.
    assert_eq!(m.reports(), m.windows.len());
}

/// The start-up announcement (off by default) is asked for once, when the receiver
/// first plays; a synthesis that fails (the program is missing) plays nothing and
/// leaves the node free to announce again.
#[test]
fn the_start_up_announcement_comes_once_and_a_failed_synthesis_plays_nothing() {
    let mut quiet = Measured::new(crate::voice::VoiceConfig::default());
    quiet.run(8.0);
    assert!(quiet.speech_jobs.is_empty());

    let mut m = Measured::new(crate::voice::VoiceConfig {
        program: "espeak-ng-not-installed".into(),
        announce_at_start: true,
    });
    m.run(8.0);
    assert_eq!(m.speech_jobs.len(), 1, "one start-up announcement");
    let job = m.speech_jobs[0].clone();
    assert!(job.text.starts_with("Tv "), "{}", job.text);
    // The real job: the program is missing, the error names it.
    let done = Job::Speak(job).run();
    let JobDone::Speech { result: Err(e), .. } = &done else {
        panic!("{done:?}")
    };
    assert!(e.contains("'espeak-ng-not-installed'"), "{e}");
    let at = m.p.t;
    m.p.n.on_job_done(done, at, &mut m.p.io);
    assert!(!m.p.n.speaking());
    assert!(m.p.n.speech.is_none());
    let from = m.rendered.len();
    m.run(3.0);
    assert!(m.rendered[from..]
        .iter()
        .all(|(_, b)| rms(b) > 0.05 && (rms(b) - 0.354).abs() > 0.01));
    assert_eq!(m.speech_jobs.len(), 1, "no second start-up announcement");
    // Free to announce on command.
    m.p.n.on_mqtt_message(
        &topics::command("tv"),
        br#"{"cmd":"announce"}"#,
        m.p.t,
        &mut m.p.io,
    );
    m.step();
    assert_eq!(m.speech_jobs.len(), 2);
}
