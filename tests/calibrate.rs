//! Calibration, end to end.
//!
//! - The issue's targets in the virtual room, through `calibrate --scenario`'s logic
//!   (`scenarios/calibration-five-devices.json`: RT60 0.6 s, SNR 10 dB, every device
//!   heard by another at −10 dB): every device within ±0.1 ms of its true latency,
//!   sequentially (sweep, < 30 s of audio) and simultaneously (orthogonal MLS, < 15 s).
//! - A live system (transmitter, receivers, real-time virtual room, embedded broker):
//!   a raw `test_tone` command gets an answer within 0.5 ms of the true latency, and
//!   `calibrate_live` writes the profiles, leaving a read-only one untouched.
//! - A device that never answers: a clear message, non-zero exit, profile untouched.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rumqttc::{Event, Packet, QoS};
use syncstream_calibration::live::{calibrate_live, LiveOptions};
use syncstream_calibration::run::CalibrationRun;
use syncstream_calibration::SignalKind;
use syncstream_protocol::messages::CalibrationResult;
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_protocol::wire::Codec;
use syncstream_shared::profile::DeviceProfile;
use syncstream_sim::calibrate::{calibrate_scenario, ScenarioOptions};
use syncstream_sim::demo::{default_world, start_system, DemoSystem};
use syncstream_sim::{DemoConfig, Scenario};

fn scenario() -> Scenario {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Scenario::load(&root.join("scenarios/calibration-five-devices.json")).unwrap()
}

fn check_targets(run: &CalibrationRun, max_audio_s: f64) {
    let text = serde_json::to_string_pretty(run).unwrap();
    println!("{text}");
    assert_eq!(run.devices.len(), 5, "{text}");
    assert_eq!(run.succeeded, 5, "{text}");
    for d in &run.devices {
        let e = d.error_ms.unwrap();
        assert!(e.abs() <= 0.1, "{}: error {e} ms:\n{text}", d.device);
    }
    let audio = run.audio_s.unwrap();
    assert!(audio < max_audio_s, "{audio} s of audio:\n{text}");
}

#[test]
fn scenario_targets_sequential_sweep() {
    let sc = scenario();
    // The room the targets name: RT60 0.6 s, SNR 10 dB, a second device at −10 dB.
    for d in &sc.devices {
        assert_eq!((d.rt60_s, d.snr_db), (0.6, 10.0));
        assert_eq!(d.hears.len(), 1);
        assert_eq!(d.hears[0].gain_db, -10.0);
    }
    let report = tempfile::tempdir().unwrap();
    let run = calibrate_scenario(
        &sc,
        &ScenarioOptions {
            signal: SignalKind::Sweep,
            simultaneous: false,
            report_dir: Some(report.path().to_path_buf()),
        },
    )
    .unwrap();
    check_targets(&run, 30.0);
    // The report's plots are PNG files.
    for d in &run.devices {
        for kind in ["impulse", "peak"] {
            let png =
                std::fs::read(report.path().join(format!("{}-{kind}.png", d.device))).unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{} {kind}", d.device);
        }
    }
    assert!(report.path().join("summary.json").exists());
}

#[test]
fn scenario_targets_sequential_mls() {
    let run = calibrate_scenario(
        &scenario(),
        &ScenarioOptions {
            signal: SignalKind::Mls,
            simultaneous: false,
            report_dir: None,
        },
    )
    .unwrap();
    check_targets(&run, 30.0);
}

#[test]
fn scenario_targets_simultaneous() {
    let run = calibrate_scenario(
        &scenario(),
        &ScenarioOptions {
            signal: SignalKind::Mls,
            simultaneous: true,
            report_dir: None,
        },
    )
    .unwrap();
    check_targets(&run, 15.0);
    // A sweep cannot be used simultaneously: a clear error.
    let e = calibrate_scenario(
        &scenario(),
        &ScenarioOptions {
            signal: SignalKind::Sweep,
            simultaneous: true,
            report_dir: None,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("--signal mls"), "{e}");
}

/// Publishes `payload` on `topic` and waits for the first message on `answer_topic`.
async fn request(
    broker: &BrokerUrl,
    topic: &str,
    payload: &str,
    answer_topic: &str,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let o = syncstream_protocol::mqtt::options(broker, "calibrate-test", None);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = tokio::time::timeout_at(deadline, el.poll()).await.ok()?;
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe(answer_topic, QoS::AtLeastOnce)
                    .await
                    .ok()?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
                    .await
                    .ok()?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == answer_topic => {
                return Some(p.payload.to_vec())
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn start_demo() -> DemoSystem {
    let cfg = DemoConfig {
        audio: common::clip("battle-orchestral-44k1.ogg"),
        duration_s: None,
        broker: None,
        codec: Codec::Opus,
        seed: 5,
        live_table: false,
        http_port: 0,
        state_dir: None,
        streams: Vec::new(),
        key: None,
    };
    let sys = start_system(&cfg, default_world()).await.unwrap();
    // Every receiver streaming and playing audio (bounded polling).
    let mut ok = false;
    for _ in 0..200 {
        ok = sys.receivers.iter().all(|r| {
            r.as_ref().is_some_and(|r| {
                let s = r.snapshot();
                s.connected && s.audio.frames > 0
            })
        });
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "receivers did not start streaming");
    // Every receiver subscribed to its commands: a receiver publishes its (retained)
    // status right after subscribing on the same connection, so once every status is
    // seen, commands reach them.
    let names: Vec<String> = sys.devices.iter().map(|d| d.name.to_string()).collect();
    assert!(
        statuses_seen(&sys.broker, &names, Duration::from_secs(30)).await,
        "receivers did not come up on MQTT"
    );
    sys
}

/// Waits (bounded) until a status from each of `names` has been seen on the broker.
async fn statuses_seen(broker: &BrokerUrl, names: &[String], timeout: Duration) -> bool {
    let o = syncstream_protocol::mqtt::options(broker, "status-watch", None);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < names.len() {
        let Ok(ev) = tokio::time::timeout_at(deadline, el.poll()).await else {
            return false;
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client
                    .subscribe("syncstream/status/+", QoS::AtLeastOnce)
                    .await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(name) = p.topic.strip_prefix("syncstream/status/") {
                    if names.iter().any(|n| n == name) {
                        seen.insert(name.to_string());
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    true
}

fn write_profiles(dir: &Path, sys: &DemoSystem) {
    for d in &sys.devices {
        d.profile
            .save(&dir.join(format!("{}.json", d.name)))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_test_tone_and_calibrate_against_the_demo() {
    let sys = start_demo().await;
    let broker = sys.broker.clone();

    // 1. A raw command, as `mosquitto_pub -t syncstream/command/kitchen -m ...` sends it.
    let answer = request(
        &broker,
        "syncstream/command/kitchen",
        r#"{"cmd":"test_tone","signal":"sweep","run_id":"raw"}"#,
        "syncstream/calibration/kitchen",
        Duration::from_secs(30),
    )
    .await
    .expect("no answer on syncstream/calibration/kitchen");
    let r: CalibrationResult = serde_json::from_slice(&answer).unwrap();
    let truth = sys.room.true_latency_ms(0);
    println!("raw test tone: {r:?}, true latency {truth} ms");
    assert_eq!(r.device, "kitchen");
    assert_eq!(r.run_id.as_deref(), Some("raw"));
    let latency = r.latency_ms.unwrap_or_else(|| panic!("no latency: {r:?}"));
    assert!((latency - truth).abs() < 0.5, "{latency} vs {truth}");

    // 2. `calibrate --mqtt --simultaneous` with a profiles folder; cast's profile is
    //    read-only and must be left as it was.
    let profiles = tempfile::tempdir().unwrap();
    write_profiles(profiles.path(), &sys);
    let cast = profiles.path().join("cast.json");
    let cast_before = std::fs::read(&cast).unwrap();
    let mut perm = std::fs::metadata(&cast).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&cast, perm).unwrap();
    let report = tempfile::tempdir().unwrap();
    let run = calibrate_live(&LiveOptions {
        broker: broker.clone(),
        devices: Some(vec!["kitchen".into(), "tv".into(), "cast".into()]),
        signal: SignalKind::Mls,
        simultaneous: true,
        profiles_dir: Some(profiles.path().to_path_buf()),
        timeout: Duration::from_secs(30),
        discovery: Duration::from_millis(0),
        report_dir: Some(report.path().to_path_buf()),
        progress: false,
    })
    .await
    .unwrap();
    let text = serde_json::to_string_pretty(&run).unwrap();
    println!("{text}");
    for (i, d) in run.devices.iter().enumerate() {
        let truth = sys.room.true_latency_ms(i);
        let m = d
            .latency_ms
            .unwrap_or_else(|| panic!("{}: {text}", d.device));
        assert!((m - truth).abs() < 0.5, "{}: {m} vs {truth}", d.device);
        let profile =
            DeviceProfile::load(&profiles.path().join(format!("{}.json", d.device))).unwrap();
        if d.device == "cast" {
            let f = d.failure.as_deref().unwrap_or_default();
            assert!(f.contains("read-only"), "{f}");
            assert_eq!(std::fs::read(&cast).unwrap(), cast_before);
        } else {
            assert!(d.succeeded(), "{text}");
            assert_eq!(profile.base_latency_ms, m);
            assert_eq!(profile.calibration.unwrap().signal, "mls");
        }
    }
    assert_eq!(run.succeeded, 2);
    // The report has every device's plots, drawn from the receivers' impulse responses.
    for d in ["kitchen", "tv", "cast"] {
        let png = std::fs::read(report.path().join(format!("{d}-impulse.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{d}");
    }
}

#[test]
fn a_device_that_never_answers_times_out_and_keeps_its_profile() {
    let port = common::embedded_broker();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("ghost.json");
    std::fs::write(&profile, r#"{"type":"hdmi","base_latency_ms":70}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_syncstream"))
        .args([
            "calibrate",
            "--mqtt",
            &format!("mqtt://127.0.0.1:{port}"),
            "--devices",
            "ghost",
            "--timeout-s",
            "1",
            "--profiles-dir",
            dir.path().to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("ghost: no answer on syncstream/calibration/ghost within 1.0 s")
            && stderr.contains("unknown device?")
            && stderr.contains("profile not touched")
            && stderr.contains("no device was calibrated"),
        "{stderr}"
    );
    let run: CalibrationRun = serde_json::from_str(&stdout).unwrap();
    assert_eq!((run.succeeded, run.failed), (0, 1));
    assert_eq!(
        std::fs::read_to_string(&profile).unwrap(),
        r#"{"type":"hdmi","base_latency_ms":70}"#
    );
}

/// Calibrates the five-device scenario (sequential sweep), writes the measured
/// latencies into profiles, runs the simulator from them for 20 s and returns the time
/// to converge (all pairs within 1 ms and staying there, the report's definition).
/// `clock_ppm`: `None` keeps the scenario's ±100 ppm clocks, `Some(x)` sets every
/// device's clock error to `x`.
fn converge_from_calibrated_profiles(clock_ppm: Option<f64>) -> Option<f64> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut sc = Scenario::load(&root.join("scenarios/five-devices-1h.json")).unwrap();
    sc.duration_s = 20.0;
    if let Some(ppm) = clock_ppm {
        for d in &mut sc.devices {
            d.clock_ppm = ppm;
        }
    }
    let run = calibrate_scenario(
        &sc,
        &ScenarioOptions {
            signal: SignalKind::Sweep,
            simultaneous: false,
            report_dir: None,
        },
    )
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&run).unwrap());
    assert_eq!(run.succeeded, 5);
    assert!(run.max_abs_error_ms.unwrap() < 0.1);
    let dir = tempfile::tempdir().unwrap();
    for (d, o) in sc.devices.iter_mut().zip(&run.devices) {
        let mut p = sc_profile(&d.profile);
        p.base_latency_ms = o.latency_ms.unwrap();
        let path = dir.path().join(format!("{}.json", d.name));
        p.save(&path).unwrap();
        d.profile = path.display().to_string();
    }
    let report = syncstream_sim::run_scenario(&sc, &mut |_, _| {}).unwrap();
    let t = report.time_to_converge_s;
    println!(
        "clock_ppm {clock_ppm:?}: time to converge from calibrated profiles {t:?} s; \
         pairwise max per second: {:?}",
        report.pairwise_max_per_s
    );
    assert!(report.converged);
    t
}

/// The sync loop starting from calibrated profiles converges in under 5 s when the
/// clocks agree (it plays in sync from the first block: the profiles are right).
#[test]
fn the_sync_loop_converges_quickly_from_calibrated_profiles() {
    let t = converge_from_calibrated_profiles(Some(0.0)).unwrap();
    assert!(t < 5.0, "{t} s");
}

/// The same with the scenario's ±100 ppm clocks: the issue's target (< 5 s). This needs
/// the clock sync to fit the clocks' rate within the first seconds of exchanges.
#[test]
fn the_sync_loop_converges_quickly_from_calibrated_profiles_with_drifting_clocks() {
    let t = converge_from_calibrated_profiles(None).unwrap();
    assert!(t < 5.0, "{t} s");
}

fn sc_profile(kind: &str) -> DeviceProfile {
    use syncstream_shared::profile::OutputType;
    let k = match kind {
        "analog" => OutputType::Analog,
        "hdmi" => OutputType::Hdmi,
        "chromecast" => OutputType::Chromecast,
        "airplay" => OutputType::Airplay,
        _ => OutputType::Bluetooth,
    };
    DeviceProfile::default_for(k)
}

/// Waits for the first message on `topic` (e.g. a retained status), bounded.
async fn first_message(broker: &BrokerUrl, topic: &str, timeout: Duration) -> Option<Vec<u8>> {
    let o = syncstream_protocol::mqtt::options(broker, "calibrate-test-wait", None);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 16);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await.ok()? {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client.subscribe(topic, QoS::AtLeastOnce).await.ok()?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => {
                return Some(p.payload.to_vec())
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A receiver whose microphone hears nothing answers with a clear error; calibrate
/// reports it, fails (nothing succeeded) and leaves the profile untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_microphone_gets_a_clear_error_and_keeps_the_profile() {
    use std::sync::Arc;
    use syncstream_audio::{find_microphone, find_sink, BackendConfig, StreamFormat};
    use syncstream_shared::time::{Clock, MonotonicClock};
    let port = common::embedded_broker();
    let broker = BrokerUrl::new("127.0.0.1", port);
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let backend = |channels| BackendConfig {
        device: None,
        format: StreamFormat {
            sample_rate: 48_000,
            channels,
        },
        clock: clock.clone(),
    };
    let sink = find_sink("null").unwrap()(&backend(2)).unwrap();
    let mic = find_microphone("null").unwrap()(&backend(1)).unwrap();
    let profile = DeviceProfile::default_for(syncstream_shared::profile::OutputType::Hdmi);
    let _rx = syncstream_receiver::start(
        syncstream_receiver::ReceiverConfig {
            device: "deaf".into(),
            // No transmitter: the test tone does not need the stream.
            transmitter_host: "127.0.0.1".into(),
            stream_port: common::free_port(),
            http_port: common::free_port(),
            broker: Some(broker.clone()),
            snapserver: None,
            profile: profile.clone(),
            drift: Default::default(),
            state_dir: None,
            key: common::test_key(),
            voice: Default::default(),
        },
        sink,
        mic,
        clock.clone(),
    )
    .await
    .unwrap();
    // The receiver is subscribed once its retained status is out.
    first_message(&broker, "syncstream/status/deaf", Duration::from_secs(10))
        .await
        .expect("the receiver never published its status");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deaf.json");
    profile.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let run = calibrate_live(&LiveOptions {
        broker,
        devices: Some(vec!["deaf".into()]),
        signal: SignalKind::Sweep,
        simultaneous: false,
        profiles_dir: Some(dir.path().to_path_buf()),
        timeout: Duration::from_secs(20),
        discovery: Duration::from_millis(0),
        report_dir: None,
        progress: false,
    })
    .await
    .unwrap();
    let f = run.devices[0].failure.clone().unwrap_or_default();
    assert!(
        f.starts_with("deaf: no test signal found") && f.ends_with("profile not touched"),
        "{f}"
    );
    assert_eq!((run.succeeded, run.failed), (0, 1));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// The thin CLI over the scenario mode: one JSON object on stdout; bad input is named.
#[test]
fn calibrate_scenario_cli_prints_one_json_object() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sc = root.join("scenarios/calibration-five-devices.json");
    let out = Command::new(env!("CARGO_BIN_EXE_syncstream"))
        .args([
            "calibrate",
            "--scenario",
            sc.to_str().unwrap(),
            "--simultaneous",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: CalibrationRun = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (run.mode.as_str(), run.signal.as_str()),
        ("scenario", "mls")
    );
    assert!(run.max_abs_error_ms.unwrap() <= 0.1);
    for (args, needle) in [
        (
            vec!["calibrate", "--scenario", "/nonexistent/s.json"],
            "/nonexistent/s.json",
        ),
        (
            vec![
                "calibrate",
                "--scenario",
                sc.to_str().unwrap(),
                "--signal",
                "noise",
            ],
            "unknown test signal 'noise'",
        ),
        (
            vec![
                "calibrate",
                "--scenario",
                sc.to_str().unwrap(),
                "--simultaneous",
                "--signal",
                "sweep",
            ],
            "--signal mls",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_syncstream"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}
