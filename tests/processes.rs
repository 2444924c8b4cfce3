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

#[test]
fn receiver_status_and_last_will_over_the_embedded_broker() {
    let (stream, http, mqtt) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let _tx = syncstream(&[
        "transmitter".into(),
        "--source".into(),
        "tone:440".into(),
        "--stream-listen".into(),
        format!("127.0.0.1:{stream}"),
        "--http-listen".into(),
        format!("127.0.0.1:{http}"),
        "--broker-listen".into(),
        format!("127.0.0.1:{mqtt}"),
    ]);
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
