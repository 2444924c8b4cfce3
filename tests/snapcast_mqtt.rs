//! A receiver playing from a real snapserver with a broker configured: its status
//! (playing the `snapcast` stream) and its drift reports go to MQTT, where the
//! dashboard and Home Assistant read them; offsets sent to it there are ignored (it is
//! its own controller). Needs snapserver and mosquitto (scripts/setup.sh).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use syncstream_protocol::messages::{topics, DriftReport, Status};
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_receiver::runtime::ReceiverConfig;
use syncstream_shared::profile::{DeviceProfile, OutputType};
use syncstream_shared::time::{Clock, MonotonicClock};
use syncstream_testkit::snapserver::{write_pcm_s16, SnapSource, Snapserver};

const DEVICE: &str = "kitchen";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_broker_its_status_and_drift_reports_go_to_mqtt() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("noise.raw");
    let noise: Vec<f32> = syncstream_testkit::white_noise(48_000 * 10, 3, 0.3)
        .into_iter()
        .flat_map(|v| [v, v])
        .collect();
    write_pcm_s16(&file, &noise).unwrap();
    let server = Snapserver::start(
        &[SnapSource {
            name: "default".into(),
            file,
            codec: "opus".into(),
        }],
        1000,
    )
    .unwrap();

    // A watcher on the broker.
    let mut opts = MqttOptions::new("snapcast-watcher", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(topics::status(DEVICE), QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe(topics::drift(DEVICE), QoS::AtLeastOnce)
        .await
        .unwrap();

    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let backend = |channels| syncstream_audio::BackendConfig {
        device: None,
        format: syncstream_audio::StreamFormat {
            sample_rate: 48_000,
            channels,
        },
        clock: clock.clone(),
    };
    let rx = syncstream_receiver::start(
        ReceiverConfig {
            device: DEVICE.into(),
            transmitter_host: String::new(),
            stream_port: 0,
            http_port: 0,
            broker: Some(BrokerUrl::new("127.0.0.1", broker.port)),
            snapserver: Some(format!("127.0.0.1:{}", server.stream_port)),
            profile: DeviceProfile::default_for(OutputType::Analog),
            drift: Default::default(),
            state_dir: None,
            key: common::test_key(),
            voice: Default::default(),
        },
        syncstream_audio::null::open_sink(&backend(2)).unwrap(),
        syncstream_audio::null::open_microphone(&backend(1)).unwrap(),
        clock.clone(),
    )
    .await
    .unwrap();

    let (mut playing, mut report) = (None::<Status>, None::<DriftReport>);
    let deadline = Instant::now() + Duration::from_secs(30);
    while playing.is_none() || report.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "within 30 s: status {playing:?}, drift report {report:?}; receiver {:?}",
            rx.snapshot()
        );
        let Ok(event) = tokio::time::timeout(left, events.poll()).await else {
            continue;
        };
        let Ok(Event::Incoming(Packet::Publish(p))) = event else {
            continue;
        };
        if p.topic == topics::status(DEVICE) {
            let s: Status = serde_json::from_slice(&p.payload).unwrap();
            if s.state == "playing" {
                assert_eq!(s.stream.as_deref(), Some("snapcast"), "{s:?}");
                assert!((s.playout_delay_ms - 1000.0).abs() < 1e-9, "{s:?}");
                playing = Some(s);
            }
        } else if p.topic == topics::drift(DEVICE) {
            report = Some(serde_json::from_slice(&p.payload).unwrap());
        }
    }

    // An offset on MQTT does not move it: it is its own controller.
    let before = rx.snapshot().offset_ms;
    client
        .publish(
            topics::buffer_offset(DEVICE),
            QoS::AtLeastOnce,
            false,
            format!(
                r#"{{"device":"{DEVICE}","offset_ms":{},"seq":1}}"#,
                before + 25.0
            ),
        )
        .await
        .unwrap();
    // The second status after it comes at least one status interval (5 s) later: the
    // offset had arrived by then.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut statuses = 0;
    while statuses < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{statuses} statuses after the offset within 20 s"
        );
        let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(left, events.poll()).await
        else {
            continue;
        };
        if p.topic == topics::status(DEVICE) {
            statuses += 1;
            let s: Status = serde_json::from_slice(&p.payload).unwrap();
            assert!(
                (s.offset_ms - before).abs() < 5.0,
                "{s:?} (was {before} ms)"
            );
        }
    }
    assert!((rx.snapshot().offset_ms - before).abs() < 5.0);
}
