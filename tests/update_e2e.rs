//! Signed updates end to end, with the real `syncstream` binary as processes: a
//! transmitter serving and announcing the bundles of its `--updates-dir` (embedded
//! broker), and a receiver run as the service runs it (`syncstream service receiver
//! --config receiver.toml`, updates on, pinned key). systemd's `Restart=on-failure`
//! is played by a small supervisor that starts the receiver again whenever it exits
//! non-zero (there is no systemd as PID 1 here).
//!
//! Each bad bundle is put in the updates folder in turn and must be refused with its
//! code in the receiver's update status while the receiver keeps running and nothing
//! is installed: unsigned, signed with another key, built for another target,
//! older than the running version, truncated. Then a good bundle (this binary signed
//! as 0.1.1) must be installed, the receiver restart into it, report 0.1.1 and confirm
//! it once healthy (connected and playing). Last, a bundle whose binary cannot start
//! (0.1.2, a script that exits 3) must be rolled back to 0.1.1 after three starts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use syncstream_update::agent::UpdateStatus;
use syncstream_update::bundle;
use syncstream_update::keys::SigningKey;

const DEVICE: &str = "upd-test";
const BIN: &str = env!("CARGO_BIN_EXE_syncstream");

/// Kills its process on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command again whenever it exits non-zero, as systemd's Restart=on-failure.
struct Supervisor {
    stop: Arc<AtomicBool>,
    starts: Arc<AtomicU32>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(args: Vec<String>, log: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(AtomicU32::new(0));
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let (s, n, c) = (stop.clone(), starts.clone(), child.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let err = out.try_clone().unwrap();
                let ch = Command::new(BIN)
                    .args(&args)
                    .env("RUST_LOG", "warn,syncstream=info")
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .expect("start the receiver");
                n.fetch_add(1, Ordering::SeqCst);
                *c.lock().unwrap() = Some(ch);
                // Wait for the exit without holding the lock for long.
                let code = loop {
                    if let Some(ch) = c.lock().unwrap().as_mut() {
                        if let Ok(Some(st)) = ch.try_wait() {
                            break st.code();
                        }
                    }
                    if s.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if code == Some(0) {
                    return;
                }
                // RestartSec: a short pause before starting again.
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self {
            stop,
            starts,
            child,
            thread: Some(thread),
        }
    }

    fn running(&self) -> bool {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every status the receiver published: its update statuses, and the `version` field
/// of its receiver statuses (`syncstream/status/<device>`).
type Seen = (
    Arc<Mutex<Vec<UpdateStatus>>>,
    Arc<Mutex<Vec<Option<String>>>>,
);

/// Collects every update status and receiver-status version the receiver publishes.
fn watch_status(port: u16) -> Seen {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let versions = Arc::new(Mutex::new(Vec::new()));
    let opts = common::mqtt_options("upd-test-watch", port, &common::default_key());
    let (client, mut conn) = rumqttc::Client::new(opts, 64);
    let update_topic = syncstream_update::status_topic(DEVICE);
    for topic in [update_topic.clone(), format!("syncstream/status/{DEVICE}")] {
        client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
    }
    let (s, v) = (seen.clone(), versions.clone());
    std::thread::spawn(move || {
        let _client = client;
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if p.topic == update_topic {
                        if let Ok(st) = serde_json::from_slice::<UpdateStatus>(&p.payload) {
                            s.lock().unwrap().push(st);
                        }
                    } else if let Ok(st) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        v.lock()
                            .unwrap()
                            .push(st["version"].as_str().map(str::to_string));
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    (seen, versions)
}

/// Polls (bounded) until a status after index `from` satisfies `pred`; returns it and
/// the index after it.
fn wait_status(
    seen: &Arc<Mutex<Vec<UpdateStatus>>>,
    from: usize,
    what: &str,
    log: &Path,
    pred: impl Fn(&UpdateStatus) -> bool,
) -> (UpdateStatus, usize) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        {
            let v = seen.lock().unwrap();
            if let Some((i, s)) = v.iter().enumerate().skip(from).find(|(_, s)| pred(s)) {
                return (s.clone(), i + 1);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no update status '{what}' within 60 s; statuses: {:#?}\nreceiver log:\n{}",
        &seen.lock().unwrap()[from.min(seen.lock().unwrap().len())..],
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn write_bundle(dir: &Path, name: &str, manifest: &bundle::Manifest, binary: &[u8]) -> PathBuf {
    let path = dir.join(name);
    // Written beside and renamed, so the transmitter never announces half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bundle::encode(manifest, binary)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[test]
fn signed_updates_apply_and_bad_bundles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let updates = dir.path().join("updates");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&updates).unwrap();
    let key = SigningKey::from_bytes(&[42; 32]);
    let other_key = SigningKey::from_bytes(&[43; 32]);
    let target = syncstream_update::BUILD_TARGET;
    // The update is this binary, stripped (a test build's debug info is over the
    // bundle size limit).
    let stripped = dir.path().join("syncstream-stripped");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(BIN)
        .status()
        .expect("strip (binutils)");
    assert!(st.success(), "strip failed");
    let binary = std::fs::read(&stripped).unwrap();

    let (stream, http, mqtt) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let _tx = Proc(
        Command::new(BIN)
            .args(["transmitter", "--source", "tone", "--codec", "pcm"])
            .args(["--stream-listen", &format!("127.0.0.1:{stream}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--broker-listen", &format!("127.0.0.1:{mqtt}")])
            .arg("--updates-dir")
            .arg(&updates)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        common::wait_for_port(mqtt, Duration::from_secs(20)),
        "broker up"
    );
    assert!(
        common::wait_for_port(http, Duration::from_secs(20)),
        "HTTP up"
    );
    let (seen, versions) = watch_status(mqtt);

    let config = dir.path().join("receiver.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"{DEVICE}\"\ntransmitter = \"127.0.0.1\"\nstream_port = {stream}\nhttp_port = {http}\n\
             mqtt = \"mqtt://127.0.0.1:{mqtt}\"\noutput = \"wav\"\noutput_device = \"{}\"\nmic = \"null\"\n\
             [update]\npublic_key = \"{}\"\nstate_dir = \"{}\"\nhealth_timeout_s = 20\n",
            dir.path().join("out.wav").display(),
            syncstream_update::keys::public_hex(&key),
            state.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("receiver.log");
    let rx = Supervisor::start(
        vec![
            "service".into(),
            "receiver".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        log.clone(),
    );
    let (first, mut at) = wait_status(&seen, 0, "idle", &log, |s| s.state == "idle");
    assert_eq!(first.version, syncstream_update::PACKAGE_VERSION);
    assert_eq!(first.target, target);

    // Each bad bundle alone in the folder: refused, nothing installed, still running.
    let good = bundle::sign(&binary, "0.1.1", target, &key).unwrap();
    let mut unsigned = good.clone();
    unsigned.signature.clear();
    let mis_signed = bundle::sign(&binary, "0.1.1", target, &other_key).unwrap();
    let wrong_target = bundle::sign(
        b"\x7fELF other",
        "0.1.1",
        "riscv64gc-unknown-linux-gnu",
        &key,
    )
    .unwrap();
    let older = bundle::sign(&binary, "0.0.9", target, &key).unwrap();
    let cases: [(&str, &bundle::Manifest, &[u8], &str); 5] = [
        ("unsigned.bundle", &unsigned, &binary, "unsigned"),
        ("mis-signed.bundle", &mis_signed, &binary, "bad_signature"),
        (
            "wrong-target.bundle",
            &wrong_target,
            b"\x7fELF other",
            "wrong_target",
        ),
        ("older.bundle", &older, &binary, "older"),
        (
            "truncated.bundle",
            &good,
            &binary[..binary.len() - 4096],
            "truncated",
        ),
    ];
    for (name, manifest, bin, code) in cases {
        let path = write_bundle(&updates, name, manifest, bin);
        let (st, next) = wait_status(&seen, at, code, &log, |s| {
            s.state == "refused" && s.code.as_deref() == Some(code)
        });
        at = next;
        assert!(
            st.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "{st:?}"
        );
        assert_eq!(st.version, syncstream_update::PACKAGE_VERSION, "{name}");
        assert!(
            !state.join("bin/syncstream").exists(),
            "{name}: nothing installed"
        );
        assert!(rx.running(), "{name}: the receiver still runs");
        assert_eq!(rx.starts.load(Ordering::SeqCst), 1, "{name}: not restarted");
        std::fs::remove_file(path).unwrap();
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    for needle in [
        "is unsigned",
        "does not verify",
        "no bundle for this device's target",
        "is older",
        "is truncated",
    ] {
        assert!(
            log_text.contains(needle),
            "log line '{needle}' missing:\n{log_text}"
        );
    }

    // The good bundle: installed, restarted into, reported and confirmed.
    write_bundle(&updates, "good.bundle", &good, &binary);
    let (_, next) = wait_status(&seen, at, "installed 0.1.1", &log, |s| {
        s.state == "installed" && s.version == "0.1.1"
    });
    at = next;
    assert!(
        rx.starts.load(Ordering::SeqCst) >= 2,
        "restarted into the update"
    );
    assert_eq!(std::fs::read(state.join("bin/syncstream")).unwrap(), binary);
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("update-state.json")).unwrap()).unwrap();
    assert_eq!(st["current"]["version"], "0.1.1");
    assert!(st["pending"].is_null(), "{st}");
    assert_eq!(st["last"]["state"], "installed");
    // The receiver's own status reports the new version too (bounded poll).
    let start = Instant::now();
    while !versions
        .lock()
        .unwrap()
        .iter()
        .any(|v| v.as_deref() == Some("0.1.1"))
    {
        let v = versions.lock().unwrap().clone();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no receiver status with version 0.1.1: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = versions.lock().unwrap().first().cloned().flatten();
    assert_eq!(first.as_deref(), Some(syncstream_update::PACKAGE_VERSION));

    // A version that cannot start: installed, started three times, rolled back to 0.1.1.
    let broken = b"#!/bin/sh\necho broken update >&2\nexit 3\n".to_vec();
    let m = bundle::sign(&broken, "0.1.2", target, &key).unwrap();
    write_bundle(&updates, "broken.bundle", &m, &broken);
    let (st, _) = wait_status(&seen, at, "rolled_back", &log, |s| {
        s.state == "rolled_back" && s.version == "0.1.1"
    });
    assert!(
        st.reason.as_deref().is_some_and(|r| r.contains("0.1.2")),
        "{st:?}"
    );
    assert_eq!(
        std::fs::read(state.join("bin/syncstream")).unwrap(),
        binary,
        "0.1.1 back in place"
    );
    let starts = rx.starts.load(Ordering::SeqCst);
    assert!(starts >= 6, "3 failed starts of 0.1.2 between: {starts}");
    assert!(rx.running());
}
