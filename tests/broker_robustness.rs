//! Nothing an MQTT client sends stops the embedded broker (issue 14): a client id with
//! `/` and a retained will, connected three times with the real `mosquitto_pub`, used
//! to poison a lock in rumqttd so that no client could connect again (fixed in
//! `vendor/rumqttd`, see its README.syncstream.md). After that case, and after odd
//! client ids, wills, topics and payloads sent as raw MQTT packets, a new client
//! still connects, publishes and subscribes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A transmitter (test tone) with its embedded broker on a free port; returns the
/// process and the broker's port.
fn transmitter() -> (Killed, u16) {
    // The key the transmitter process reads (created first, as by a user's first start).
    common::default_key();
    let (stream, http, mqtt) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let tx = Killed(
        Command::new(env!("CARGO_BIN_EXE_syncstream"))
            .args([
                "transmitter".to_string(),
                "--source".into(),
                "tone:440".into(),
                "--stream-listen".into(),
                format!("127.0.0.1:{stream}"),
                "--http-listen".into(),
                format!("127.0.0.1:{http}"),
                "--broker-listen".into(),
                format!("127.0.0.1:{mqtt}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        common::wait_for_port(mqtt, Duration::from_secs(20)),
        "embedded broker did not start"
    );
    (tx, mqtt)
}

/// Runs a mosquitto client to completion, killed after `limit`.
fn run_limited(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto clients must be installed (apt-get install mosquitto-clients)");
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Whether a fresh client can still use the broker: `mosquitto_pub` publishes a
/// retained message and `mosquitto_sub` (another connection) receives it.
fn broker_works(port: u16, n: usize) -> Result<(), String> {
    let topic = format!("syncstream/probe/ok{n}");
    let message = format!("hello {n}");
    let (user, password) = login();
    let mut publish = Command::new("mosquitto_pub");
    publish.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"]);
    publish.args(["-u", &user, "-P", &password]);
    publish.args([
        "-i",
        &format!("fresh-pub-{n}"),
        "-t",
        &topic,
        "-m",
        &message,
    ]);
    let out = run_limited(publish, Duration::from_secs(10));
    if !out.status.success() {
        return Err(format!(
            "mosquitto_pub failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut subscribe = Command::new("mosquitto_sub");
    subscribe.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-C", "1"]);
    subscribe.args(["-u", &user, "-P", &password]);
    subscribe.args(["-W", "10", "-i", &format!("fresh-sub-{n}"), "-t", &topic]);
    let out = run_limited(subscribe, Duration::from_secs(15));
    let got = String::from_utf8_lossy(&out.stdout);
    if got.trim() != message {
        return Err(format!(
            "mosquitto_sub got {got:?} ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

#[test]
fn a_client_id_with_a_slash_and_a_retained_will_does_not_stop_the_broker() {
    let (_tx, port) = transmitter();
    broker_works(port, 0).unwrap();
    // The exact case of issue 14, three times.
    for _ in 0..3 {
        let (user, password) = login();
        let mut evil = Command::new("mosquitto_pub");
        evil.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        evil.args(["-u", &user, "-P", &password]);
        evil.args(["-i", "evil/id", "--will-topic", "syncstream/status/evil"]);
        evil.args(["--will-payload", "off", "--will-retain"]);
        evil.args(["-t", "syncstream/probe", "-m", "x"]);
        // The broker refuses the client id (the connection closes): it fails, fast.
        let out = run_limited(evil, Duration::from_secs(10));
        assert!(!out.status.success(), "a client id with '/' is refused");
    }
    broker_works(port, 1).expect("the broker still serves new clients");
}

// ---- raw MQTT 3.1.1 packets -----------------------------------------------------------

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s[..len]);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

/// A will: topic, payload, QoS, retained.
struct Will<'a>(&'a [u8], &'a [u8], u8, bool);

/// The login of these clients: user `probe` with the pairing key's password for it
/// (the broker refuses everyone else before it looks at anything the tests vary).
fn login() -> (String, String) {
    ("probe".into(), common::default_key().mqtt_password("probe"))
}

/// A CONNECT with [`login`].
fn connect(client_id: &[u8], will: Option<&Will>, clean: bool) -> Vec<u8> {
    let (user, password) = login();
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(4);
    let mut flags = 0xc0 | if clean { 0x02 } else { 0 };
    if let Some(w) = will {
        flags |= 0x04 | (w.2 << 3) | if w.3 { 0x20 } else { 0 };
    }
    body.push(flags);
    body.extend_from_slice(&5u16.to_be_bytes());
    string(client_id, &mut body);
    if let Some(w) = will {
        string(w.0, &mut body);
        string(w.1, &mut body);
    }
    string(user.as_bytes(), &mut body);
    string(password.as_bytes(), &mut body);
    packet(0x10, &body)
}

fn publish(topic: &[u8], payload: &[u8], qos: u8, retain: bool) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic, &mut body);
    if qos > 0 {
        body.extend_from_slice(&1u16.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

fn subscribe(filter: &[u8]) -> Vec<u8> {
    let mut body = 7u16.to_be_bytes().to_vec();
    string(filter, &mut body);
    body.push(1);
    packet(0x82, &body)
}

/// Sends `packets` on a new connection, reads what comes back for a moment, and drops
/// the connection without a DISCONNECT (so wills fire).
fn session(port: u16, packets: &[Vec<u8>]) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for p in packets {
        if s.write_all(p).is_err() {
            return;
        }
    }
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

#[test]
fn odd_client_ids_wills_topics_and_payloads_do_not_stop_the_broker() {
    let (_tx, port) = transmitter();
    let long_id = vec![b'x'; 65_535];
    let long_topic = [b"syncstream/".as_slice(), &[b'y'; 60_000]].concat();
    let ids: Vec<&[u8]> = vec![
        b"evil/id",
        b"/",
        b"#",
        b"+",
        b"$SYS",
        b"a+b/#",
        b"",
        &long_id,
        "küche/日本/🎵".as_bytes(),
        b"\0",
        b"\xff\xfe",
        b"syncstream-controller-1",
    ];
    let wills = [
        Will(b"syncstream/status/evil", b"off", 0, true),
        Will(b"#", b"x", 1, true),
        Will(b"+/+", b"x", 2, false),
        Will(b"", b"x", 0, true),
        Will(b"$SYS/broker", b"x", 1, true),
        Will(&long_topic, &[0u8; 100_000], 1, true),
        Will(b"syncstream/config", &[b'{'; 300_000], 1, true),
        Will(b"\xff/x", b"x", 0, false),
    ];
    let big = vec![b'z'; 300_000];
    let publishes = [
        publish(b"syncstream/probe", b"x", 0, false),
        publish(b"", b"x", 1, true),
        publish(b"#", b"x", 1, true),
        publish(b"a/+/b", b"x", 2, false),
        publish(b"$SYS/x", b"x", 1, true),
        publish(&long_topic, b"x", 1, true),
        publish(b"syncstream/config", &big, 1, true),
        publish(b"\xff\xfe", b"x", 0, false),
        subscribe(b"#"),
        subscribe(b"a/#/b"),
        subscribe(b""),
        subscribe(b"$share/g/#"),
        packet(0xf0, b"reserved packet type"),
        vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ];
    let mut n = 0;
    for id in &ids {
        for clean in [true, false] {
            // Three times each: the old bug needed a repeated client id.
            for _ in 0..3 {
                session(port, &[connect(id, None, clean)]);
            }
            for will in &wills {
                session(port, &[connect(id, Some(will), clean)]);
            }
            session(port, &[connect(id, Some(&wills[0]), clean)]);
            session(
                port,
                &[
                    vec![connect(id, Some(&wills[0]), clean)],
                    publishes.to_vec(),
                ]
                .concat(),
            );
        }
        n += 1;
        broker_works(port, n).unwrap_or_else(|e| {
            panic!(
                "after client id {:?}: {e}",
                String::from_utf8_lossy(&id[..id.len().min(40)])
            )
        });
    }
    // Garbage before any CONNECT.
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0u8; 64],
        &[0x10, 0xff, 0xff],
    ] {
        session(port, &[garbage.to_vec()]);
    }
    broker_works(port, 100).unwrap();
}
