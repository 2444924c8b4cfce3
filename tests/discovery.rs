//! Zero-configuration discovery end to end, over real multicast (docs/discovery.md).
//!
//! Two network namespaces joined by a veth pair stand for two machines on one LAN:
//! the real `syncstream transmitter` in one, a `syncstream receiver` started without
//! `--transmitter` (and without port or broker options) in the other. The namespaces
//! see nothing else, so no other test's transmitter can answer, and the receiver
//! takes the first (only) one. Needs root and iproute2 (`ip netns`): CI runs as root;
//! elsewhere the test fails saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::watch::Watcher;

const BIN: &str = env!("CARGO_BIN_EXE_syncstream");
/// The transmitter's ports: not the defaults, so the receiver can only know them from
/// the transmitter's TXT record.
const STREAM_PORT: u16 = 5953;
const HTTP_PORT: u16 = 5954;
const MQTT_PORT: u16 = 5883;
const TX_ADDR: &str = "10.231.0.1";
const RX_ADDR: &str = "10.231.0.2";
/// The transmitter's machine's address after it moved (a new lease from DHCP).
const TX_MOVED_ADDR: &str = "10.231.0.3";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` (iproute2) cannot run: {e}; this test needs it"));
    assert!(
        out.status.success(),
        "ip {}: {}\n(this test needs root: it makes network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes network namespace `ns` anew (a stale one of that name is deleted first), with
/// loopback up.
fn fresh_netns(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
    ip(&["netns", "add", ns]);
    ip(&["-n", ns, "link", "set", "lo", "up"]);
}

/// Two network namespaces joined by a veth pair (`TX_ADDR` in `a`, `RX_ADDR` in `b`),
/// loopback up in both; deleted on drop.
struct Lan {
    a: String,
    b: String,
}

impl Lan {
    fn new() -> Lan {
        let id = std::process::id();
        let lan = Lan {
            a: format!("ssd{id}a"),
            b: format!("ssd{id}b"),
        };
        fresh_netns(&lan.a);
        fresh_netns(&lan.b);
        let (va, vb) = (lan.a.as_str(), lan.b.as_str());
        ip(&["link", "add", va, "type", "veth", "peer", "name", vb]);
        ip(&["link", "set", va, "netns", &lan.a]);
        ip(&["link", "set", vb, "netns", &lan.b]);
        for (ns, dev, addr) in [(&lan.a, va, TX_ADDR), (&lan.b, vb, RX_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `syncstream args...` in namespace `ns`, logging into `log`; killed on drop.
struct InNs {
    child: Child,
    log: PathBuf,
}

impl InNs {
    fn start(ns: &str, args: &[&str], log: &Path) -> InNs {
        let out = std::fs::File::create(log).unwrap();
        // `ip netns exec` enters the namespace and execs the command: same process.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BIN])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        InNs {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on a thread inside namespace `ns` (threads it starts are inside too).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) on this thread only, with a namespace file we hold open.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// Polls `f` every 100 ms until it gives `Some` or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `syncstream receiver --name name` in namespace `ns` (null output and microphone,
/// the default key file), once its log says it looks for a transmitter over mDNS.
fn looking_receiver(ns: &str, name: &str, log: &Path) -> InNs {
    let key_file = syncstream_protocol::auth::default_key_file();
    let rx = InNs::start(
        ns,
        &[
            "receiver",
            "--name",
            name,
            "--output",
            "null",
            "--mic",
            "null",
            "--key-file",
            key_file.to_str().unwrap(),
        ],
        log,
    );
    assert!(
        poll(Duration::from_secs(20), || rx
            .log()
            .contains("looking for a transmitter over mDNS")
            .then_some(()))
        .is_some(),
        "the receiver does not look for a transmitter:\n{}",
        rx.log()
    );
    rx
}

#[test]
fn a_receiver_without_a_transmitter_finds_one_over_mdns_and_plays() {
    let lan = Lan::new();
    let dir = tempfile::tempdir().unwrap();
    common::default_key();
    let key_file = syncstream_protocol::auth::default_key_file();
    let key_file = key_file.to_str().unwrap();
    let tx_name = format!("Discovery Test {}", std::process::id());
    let t0 = Instant::now();

    // The receiver first: it looks, and keeps looking while there is nothing.
    let rx = looking_receiver(&lan.b, "disc-rx", &dir.path().join("receiver.log"));
    let tx_args = [
        "transmitter".to_string(),
        "--source".into(),
        "tone:440".into(),
        "--stream-listen".into(),
        format!("0.0.0.0:{STREAM_PORT}"),
        "--http-listen".into(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--broker-listen".into(),
        format!("0.0.0.0:{MQTT_PORT}"),
        "--mdns-name".into(),
        tx_name.clone(),
        "--key-file".into(),
        key_file.to_string(),
    ];
    let tx_args: Vec<&str> = tx_args.iter().map(String::as_str).collect();
    let tx = InNs::start(&lan.a, &tx_args, &dir.path().join("transmitter.log"));

    // It plays: its retained status on the transmitter's broker (reached only through
    // what the TXT record says) says so, seen from the transmitter's namespace. The
    // transmitter publishes its Home Assistant discovery config, and it obeys a
    // command as Home Assistant's volume entity sends it.
    let outcome = in_netns(&lan.a, move || {
        let status = "syncstream/status/disc-rx";
        let ha = "homeassistant/sensor/syncstream_disc_rx/drift/config";
        let w = Watcher::start(MQTT_PORT, "disc-watch", &[status, ha]);
        let long = Duration::from_secs(60);
        if w.wait(status, t0, long, |v| v["state"] == "playing")
            .is_none()
        {
            return Err("the receiver did not play");
        }
        if w.wait(ha, t0, long, |v| {
            v["state_topic"] == "syncstream/state/disc-rx"
        })
        .is_none()
        {
            return Err("no Home Assistant discovery config for the receiver");
        }
        let sent = Instant::now();
        let cmd = br#"{"cmd":"volume","value":0.5}"#.to_vec();
        w.publish("syncstream/command/disc-rx", cmd, false);
        let volume = |v: &serde_json::Value| v["volume"].as_f64() == Some(0.5);
        if w.wait(status, sent, Duration::from_secs(20), volume)
            .is_none()
        {
            return Err("the receiver did not take the volume command");
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}\nreceiver:\n{}\ntransmitter:\n{}", rx.log(), tx.log());
    }
    let log = rx.log();
    assert!(
        log.contains(&format!("using transmitter \"{tx_name}\" at {TX_ADDR}")),
        "{log}"
    );

    // `syncstream discover --json` in the receiver's namespace lists both: the
    // transmitter over the veth pair with its ports, the receiver (itself on this
    // machine) playing from it; its state is the re-announced one.
    let mut last = String::new();
    let found = poll(Duration::from_secs(30), || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.b,
                BIN,
                "discover",
                "--json",
                "--timeout",
                "2",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "discover: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(&last).ok()?;
        let t = v["transmitters"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == tx_name.as_str())?
            .clone();
        let r = v["receivers"]
            .as_array()?
            .iter()
            .find(|r| r["device"] == "disc-rx" && r["state"] == "playing")?
            .clone();
        Some((t, r))
    });
    let (t, r) = found.unwrap_or_else(|| panic!("discover did not list both:\n{last}"));
    assert_eq!(t["addresses"][0], TX_ADDR, "{t}");
    assert_eq!(
        (&t["stream_port"], &t["http_port"], &t["mqtt_port"]),
        (
            &serde_json::json!(STREAM_PORT),
            &serde_json::json!(HTTP_PORT),
            &serde_json::json!(MQTT_PORT)
        ),
        "{t}"
    );
    assert_eq!(
        t["protocol"],
        syncstream_protocol::wire::PROTOCOL_VERSION,
        "{t}"
    );
    assert_eq!(r["source"], format!("{TX_ADDR}:{STREAM_PORT}"), "{r}");
    assert_eq!(r["output"], "null (default)", "{r}");
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"), "{r}");
    assert!(
        r["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == RX_ADDR || a == "127.0.0.1"),
        "{r}"
    );

    // The transmitter moves: it stops, its machine gets a new address (a new DHCP
    // lease) and it starts again. The receiver, without a stream for
    // `LOOK_AGAIN_AFTER`, looks for it again, finds it at the new address and plays
    // from there (its status on the new transmitter's broker says so).
    drop(tx);
    let dev = lan.a.clone();
    ip(&[
        "-n",
        &lan.a,
        "addr",
        "del",
        &format!("{TX_ADDR}/24"),
        "dev",
        &dev,
    ]);
    ip(&[
        "-n",
        &lan.a,
        "addr",
        "add",
        &format!("{TX_MOVED_ADDR}/24"),
        "dev",
        &dev,
    ]);
    let moved_at = Instant::now();
    let tx = InNs::start(&lan.a, &tx_args, &dir.path().join("transmitter-moved.log"));
    let back = in_netns(&lan.a, move || {
        let status = "syncstream/status/disc-rx";
        let w = Watcher::start(MQTT_PORT, "disc-watch-moved", &[status]);
        w.wait(status, moved_at, Duration::from_secs(90), |v| {
            v["state"] == "playing"
        })
        .map(|s| s.at - moved_at)
    });
    let log = rx.log();
    let Some(back) = back else {
        panic!("the receiver did not follow the transmitter to {TX_MOVED_ADDR}\nreceiver:\n{log}\ntransmitter:\n{}", tx.log());
    };
    assert!(
        log.contains(&format!("moved: now at {TX_MOVED_ADDR}")),
        "{log}"
    );
    println!(
        "MOVED: the receiver plays from the transmitter's new address {:.1} s after it restarted there",
        back.as_secs_f64()
    );
    drop(rx);
    drop(tx);
    drop(lan);
}

/// One network namespace with only loopback up, deleted on drop: a network where no
/// transmitter answers.
struct LoneNs(String);

impl LoneNs {
    fn new() -> LoneNs {
        let ns = LoneNs(format!("ssd{}s", std::process::id()));
        fresh_netns(&ns.0);
        ns
    }
}

impl Drop for LoneNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// systemd stops a receiver with SIGTERM, also while it is still looking for its
/// transmitter (it told systemd it is ready when the search began): it must exit 0,
/// not die of the signal.
#[test]
fn a_receiver_stopped_while_it_looks_for_a_transmitter_exits_cleanly() {
    let ns = LoneNs::new();
    let dir = tempfile::tempdir().unwrap();
    common::default_key();
    let mut rx = looking_receiver(&ns.0, "stop-rx", &dir.path().join("receiver.log"));
    let pid = rx.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child, which has not been waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = poll(Duration::from_secs(10), || rx.child.try_wait().unwrap())
        .unwrap_or_else(|| panic!("the receiver did not stop on SIGTERM:\n{}", rx.log()));
    assert!(
        status.success(),
        "SIGTERM while looking: {status} (expected exit 0):\n{}",
        rx.log()
    );
    assert!(
        rx.log().contains("stopped while looking for a transmitter"),
        "{}",
        rx.log()
    );
}
