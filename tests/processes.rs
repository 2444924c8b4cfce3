//! The binaries as a user runs them: `syncstream transmitter` (test tone, embedded broker)
//! and `syncstream receiver` (null output and microphone) as separate processes; the
//! receiver's retained status says it plays, and its last will says `offline` when it dies.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Packet, QoS};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn syncstream(args: &[String]) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_syncstream"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `syncstream transmitter` on a test tone, listening on 127.0.0.1 at the given ports
/// (its embedded broker on `mqtt`), with `extra` arguments.
fn transmitter(stream: u16, http: u16, mqtt: u16, extra: &[String]) -> Killed {
    let mut args: Vec<String> = vec![
        "transmitter".into(),
        "--source".into(),
        "tone:440".into(),
        "--stream-listen".into(),
        format!("127.0.0.1:{stream}"),
        "--http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--broker-listen".into(),
        format!("127.0.0.1:{mqtt}"),
    ];
    args.extend_from_slice(extra);
    syncstream(&args)
}

#[test]
fn receiver_status_and_last_will_over_the_embedded_broker() {
    let (stream, http, mqtt) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let _tx = transmitter(stream, http, mqtt, &[]);
    assert!(
        common::wait_for_port(mqtt, Duration::from_secs(20)),
        "embedded broker did not start"
    );
    let mut rx = syncstream(&[
        "receiver".into(),
        "--name".into(),
        "attic".into(),
        "--transmitter".into(),
        "127.0.0.1".into(),
        "--stream-port".into(),
        stream.to_string(),
        "--http-port".into(),
        http.to_string(),
        "--mqtt".into(),
        format!("mqtt://127.0.0.1:{mqtt}"),
        "--output".into(),
        "null".into(),
        "--mic".into(),
        "null".into(),
    ]);
    let opts = common::mqtt_options("watcher", mqtt, &common::default_key());
    let (client, mut conn) = Client::new(opts, 10);
    client
        .subscribe("syncstream/status/attic", QoS::AtLeastOnce)
        .unwrap();
    let mut wait_for_state = |want: &str, deadline: Duration| -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            match conn.recv_timeout(Duration::from_millis(500)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    if v["state"] == want {
                        return true;
                    }
                }
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                _ => {}
            }
        }
        false
    };
    assert!(
        wait_for_state("playing", Duration::from_secs(30)),
        "no 'playing' status"
    );
    let _ = rx.0.kill();
    let _ = rx.0.wait();
    // The broker publishes the last will once the keep-alive (5 s) runs out.
    assert!(
        wait_for_state("offline", Duration::from_secs(30)),
        "no 'offline' last will"
    );
}

/// Issue 11, the config push: the transmitter pushes the profiles of its
/// `--profiles-dir` retained on `syncstream/config`; a receiver keeps the pushed profile
/// in its state folder (`<device>.profile.json`), and a profile changed on the
/// transmitter (as a calibration or the offset history rewrites it) reaches it within
/// seconds. The receiver's own `--profile` file says something else, and loses.
#[test]
fn a_profile_changed_on_the_transmitter_reaches_the_receiver() {
    use syncstream_shared::profile::{DeviceProfile, OutputType};
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&profiles).unwrap();
    let mut pushed = DeviceProfile::default_for(OutputType::Analog);
    pushed.base_latency_ms = 40.0;
    pushed.area = "Attic".into();
    pushed.save(&profiles.join("loft.json")).unwrap();
    let local = dir.path().join("local.json");
    DeviceProfile::default_for(OutputType::Analog)
        .save(&local)
        .unwrap();
    let (stream, http, mqtt) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let _tx = transmitter(
        stream,
        http,
        mqtt,
        &["--profiles-dir".into(), profiles.display().to_string()],
    );
    assert!(common::wait_for_port(mqtt, Duration::from_secs(20)));
    let _rx = syncstream(&[
        "receiver".into(),
        "--name".into(),
        "loft".into(),
        "--transmitter".into(),
        "127.0.0.1".into(),
        "--stream-port".into(),
        stream.to_string(),
        "--http-port".into(),
        http.to_string(),
        "--mqtt".into(),
        format!("mqtt://127.0.0.1:{mqtt}"),
        "--profile".into(),
        local.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
        "--output".into(),
        "null".into(),
        "--mic".into(),
        "null".into(),
    ]);
    let kept = state.join("loft.profile.json");
    let wait_for_kept = |base_ms: f64| -> Duration {
        let start = Instant::now();
        loop {
            if let Ok(p) = DeviceProfile::load(&kept) {
                if p.base_latency_ms == base_ms {
                    assert_eq!(p.area, "Attic");
                    return start.elapsed();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no kept profile with {base_ms} ms in {}",
                kept.display()
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a file
        }
    };
    wait_for_kept(40.0);
    // A calibration rewrites the profile on the transmitter.
    pushed.base_latency_ms = 57.5;
    pushed.save(&profiles.join("loft.json")).unwrap();
    let took = wait_for_kept(57.5);
    eprintln!("profile update reached the receiver in {took:?}");
    // The receiver plays with it: its retained status says so.
    let opts = common::mqtt_options("watch-loft", mqtt, &common::default_key());
    let (client, mut conn) = Client::new(opts, 10);
    client
        .subscribe("syncstream/status/loft", QoS::AtLeastOnce)
        .unwrap();
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the status never showed the pushed offset"
        );
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(500))
        {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            if v["offset_ms"] == 57.5 {
                break;
            }
        }
    }
}
