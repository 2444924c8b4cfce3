//! Oversized MQTT messages do not make clients reconnect forever (issue 14): a retained
//! 1 MB `syncstream/config` on mosquitto used to make every receiver reconnect about
//! fifteen times a second until someone cleared it. Now a receiver reads it, drops it
//! with a warning and carries on; a retained message too big even to read (over
//! `MAX_INCOMING_PACKET_BYTES`) costs a couple of reconnects, then its topic is left
//! out for a while. Either way the receiver stays connected and takes its offsets.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Packet, QoS};
use syncstream_protocol::mqtt::MAX_INCOMING_PACKET_BYTES;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Publishes `bytes` retained on `topic` with `mosquitto_pub -f`.
fn publish_retained(port: u16, topic: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .args(["-t", topic, "-f", file.to_str().unwrap()])
        .output()
        .expect("mosquitto_pub must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A receiver (null output and microphone, no transmitter) on the broker at `port`.
fn receiver(port: u16) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_syncstream"))
            .args(["receiver", "--name", "attic", "--transmitter", "127.0.0.1"])
            .args(["--stream-port", &common::free_port().to_string()])
            .args(["--http-port", &common::free_port().to_string()])
            .args(["--mqtt", &format!("mqtt://127.0.0.1:{port}")])
            .args(["--output", "null", "--mic", "null"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Watches the receiver's statuses for `window`: every MQTT (re)connect publishes
/// one, besides one every 5 s. Midway, sends it an offset on its retained
/// `buffer_offset` topic. Returns (statuses seen, whether one showed that offset).
fn watch(port: u16, window: Duration) -> (usize, bool) {
    let opts = common::mqtt_options("watcher", port, &common::default_key());
    let (client, mut conn) = Client::new(opts, 10);
    client
        .subscribe("syncstream/status/attic", QoS::AtLeastOnce)
        .unwrap();
    let start = Instant::now();
    let (mut statuses, mut offset_seen, mut sent) = (0, false, false);
    while start.elapsed() < window {
        if !sent && start.elapsed() > window / 3 {
            client
                .publish(
                    "syncstream/buffer_offset/attic",
                    QoS::AtLeastOnce,
                    true,
                    br#"{"device":"attic","offset_ms":12.5,"seq":1}"#.to_vec(),
                )
                .unwrap();
            sent = true;
        }
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            conn.recv_timeout(Duration::from_millis(200))
        {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            if v["state"] != "offline" && !p.retain {
                statuses += 1;
                offset_seen |= v["offset_ms"] == 12.5;
            }
        }
    }
    (statuses, offset_seen)
}

fn check(payload_bytes: usize) {
    common::default_key(); // the receiver's (anonymous mosquitto lets it in anyway)
    let broker = common::Mosquitto::start();
    let mut config = b"{\"devices\":{},\"pad\":\"".to_vec();
    config.resize(payload_bytes - 2, b'x');
    config.extend_from_slice(b"\"}");
    publish_retained(broker.port, "syncstream/config", &config);
    let _rx = receiver(broker.port);
    let (statuses, offset_seen) = watch(broker.port, Duration::from_secs(14));
    eprintln!("{statuses} statuses in 14 s with a retained {payload_bytes} byte config");
    // Steady: one status on connecting and one every 5 s (plus the few reconnects
    // that find a message too big to read). The old loop published ~200 here.
    assert!(
        (1..=8).contains(&statuses),
        "{statuses} statuses in 14 s with a retained {payload_bytes} byte config: a reconnect loop"
    );
    assert!(offset_seen, "the receiver still takes its offsets");
}

#[test]
fn a_retained_1_mb_config_is_ignored_without_a_reconnect_loop() {
    check(1_000_000);
}

#[test]
fn a_retained_config_too_big_to_read_costs_a_few_reconnects_only() {
    check(MAX_INCOMING_PACKET_BYTES + 1_000_000);
}
