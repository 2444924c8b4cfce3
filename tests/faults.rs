//! Faults on the real processes (issue 14), on loopback and bounded in time: the
//! broker killed and restarted without persistence, the transmitter killed (-9) and
//! restarted, the transmitter paused (SIGSTOP) for 5 s, a receiver's network cut for
//! 10 s, 50 stream connections that never say hello and 200 half-open HTTP connections
//! while a receiver plays, HTTP clients that never read their answers, a flood of
//! drift reports for 2000 made-up devices, and the
//! state that survives a restart of everything (controller offsets in
//! `controller.json`, each receiver's own in `<device>.state.json`).
//!
//! Offsets are set through the real controller: the test publishes a confident drift
//! report for a device as its microphone would, the controller locks the device and
//! publishes its offset, the receiver applies it. Every case then asserts that the
//! receivers come back to `playing` within a bound (the measured recovery time is
//! printed: `cargo test --workspace --test faults -- --nocapture`) and that nothing is
//! lost: offsets back to their values (not the profile's), retained statuses and
//! offsets correct, no underrun where there should be none. docs/faults.md lists the
//! figures.

mod common;

use std::time::{Duration, Instant};

use common::procs::{poll, Receiver, ReceiverOpts, Transmitter, TransmitterOpts};
use common::watch::{retained, Seen, Watcher};
use common::Mosquitto;
use serde_json::{json, Value};

/// How long a receiver may take to play after it started (the routine start waits for
/// the regular status, every 5 s).
const START: Duration = Duration::from_secs(40);

fn status_topic(device: &str) -> String {
    format!("syncstream/status/{device}")
}

fn offset_topic(device: &str) -> String {
    format!("syncstream/buffer_offset/{device}")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.01
}

/// A transmitter, its receivers and an observer on their broker.
struct Rig {
    dir: tempfile::TempDir,
    broker: Option<Mosquitto>,
    tx: Transmitter,
    rx: Vec<Receiver>,
    watch: Watcher,
}

impl Rig {
    /// A test-tone transmitter (on a mosquitto of its own when `external_broker`,
    /// keeping its state when `state`) and receivers `names` whose profiles say
    /// `profile_ms[i]`; waits until every receiver plays.
    fn start(
        tag: &str,
        external_broker: bool,
        state: bool,
        names: &[&str],
        profile_ms: &[f64],
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let broker = external_broker.then(|| Mosquitto::start_on(common::procs::port()));
        let mut opts = TransmitterOpts::new(dir.path());
        if let Some(b) = &broker {
            opts = opts.with_broker(b.port);
        }
        if state {
            opts = opts.with_state_dir(&dir.path().join("tx-state"));
        }
        let tx = Transmitter::start(opts);
        let watch = Watcher::start(
            tx.opts.mqtt_port,
            &format!("watch-{tag}"),
            &["syncstream/status/+", "syncstream/buffer_offset/+"],
        );
        let rx = names
            .iter()
            .zip(profile_ms)
            .map(|(n, &ms)| {
                let mut o = ReceiverOpts::new(n, &tx.opts);
                o.base_latency_ms = Some(ms);
                if state {
                    o.state_dir = Some(dir.path().join("rx-state"));
                }
                Receiver::start(o)
            })
            .collect();
        let rig = Rig {
            dir,
            broker,
            tx,
            rx,
            watch,
        };
        let t0 = Instant::now();
        for r in &rig.rx {
            rig.playing(&r.opts.name, t0, START, "at start");
        }
        rig
    }

    /// The first status of `device` since `since` that says `playing`; panics with
    /// the logs after `deadline`.
    fn playing(&self, device: &str, since: Instant, deadline: Duration, when: &str) -> Seen {
        self.status_where(device, since, deadline, when, |s| s["state"] == "playing")
    }

    /// The first status of `device` since `since` that satisfies `pred`; panics with
    /// the logs after `deadline`.
    fn status_where(
        &self,
        device: &str,
        since: Instant,
        deadline: Duration,
        when: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Seen {
        self.watch
            .wait(&status_topic(device), since, deadline, pred)
            .unwrap_or_else(|| self.fail(&format!("{device}: no such status {when}")))
    }

    /// Panics with `what`, the last statuses and the processes' log tails.
    fn fail(&self, what: &str) -> ! {
        let mut msg = format!("{what}\n--- transmitter:\n{}", self.tx.proc.log_tail(25));
        for r in &self.rx {
            let last = self.watch.last(&status_topic(&r.opts.name));
            msg += &format!(
                "\n--- {} (last status {:?}):\n{}",
                r.opts.name,
                last.map(|s| s.json),
                r.proc.log_tail(25)
            );
        }
        panic!("{msg}");
    }

    /// Sets `device`'s offset to `target_ms` through the controller: a confident drift
    /// report (as its microphone would send) while `applied_ms` is in effect; waits
    /// until the receiver's status shows it. Returns when the controller's offset
    /// arrived.
    fn set_offset(&self, device: &str, applied_ms: f64, target_ms: f64) -> Instant {
        let since = Instant::now();
        let report = json!({
            "device": device,
            "drift_ms": target_ms - applied_ms,
            "confidence": 0.995,
            "signal_strength_db": -30.0,
            "ts_us": self.tx.now_us(),
            "applied_offset_ms": applied_ms,
        });
        self.watch.publish(
            &format!("syncstream/drift/{device}"),
            report.to_string().into_bytes(),
            false,
        );
        let answered = self
            .watch
            .wait(&offset_topic(device), since, Duration::from_secs(30), |o| {
                o["offset_ms"].as_f64().is_some_and(|v| close(v, target_ms))
            })
            .unwrap_or_else(|| self.fail(&format!("{device}: the controller sent no offset")));
        // The status reports the offset in effect at the next regular status (5 s).
        self.status_where(
            device,
            since,
            Duration::from_secs(15),
            "with its offset",
            |s| s["offset_ms"].as_f64().is_some_and(|v| close(v, target_ms)),
        );
        answered.at
    }

    /// The receivers' names.
    fn names(&self) -> Vec<String> {
        self.rx.iter().map(|r| r.opts.name.clone()).collect()
    }

    /// Waits until every receiver has published, since `since`, a `playing` status
    /// with its offset `targets[i]` that the next status confirms (also `playing` at
    /// that offset); returns the time from `since` to the first of those pairs, the
    /// last receiver's. A lone `playing` is not enough: the status a receiver sends
    /// when it reconnects to the broker may still play from its jitter buffer, and
    /// then say `starved` once the buffered audio runs out.
    fn recovered(
        &self,
        since: Instant,
        deadline: Duration,
        targets: &[f64],
        when: &str,
    ) -> Duration {
        // The confirming status comes with the next regular one (every 5 s).
        let deadline = deadline + Duration::from_secs(6);
        let good = |s: &Seen, t: f64| {
            s.json["state"] == "playing"
                && s.json["offset_ms"].as_f64().is_some_and(|v| close(v, t))
        };
        self.names()
            .iter()
            .zip(targets)
            .map(|(d, &t)| {
                poll(deadline, || {
                    let seen = self.watch.since(&status_topic(d), since);
                    seen.windows(2)
                        .find(|w| good(&w[0], t) && good(&w[1], t))
                        .map(|w| w[0].at - since)
                })
                .unwrap_or_else(|| {
                    self.fail(&format!(
                        "{d}: no confirmed playing status at {t} ms {when}"
                    ))
                })
            })
            .max()
            .unwrap_or_default()
    }

    /// Asserts that a newcomer on the rig's broker gets, retained, each receiver's
    /// offset `targets[i]` and a `playing` status.
    fn assert_retained(&self, targets: &[f64]) {
        let port = self.broker.as_ref().expect("a rig with a broker").port;
        let names = self.names();
        let mut topics: Vec<String> = names.iter().map(|d| offset_topic(d)).collect();
        topics.extend(names.iter().map(|d| status_topic(d)));
        let got = retained(port, &topics, Duration::from_secs(10));
        for (d, &t) in names.iter().zip(targets) {
            let o = got.iter().find(|s| s.topic == offset_topic(d));
            assert!(
                o.is_some_and(|o| o.json["offset_ms"].as_f64().is_some_and(|v| close(v, t))),
                "{d}: retained offset {:?}, want {t}",
                o.map(|o| &o.json)
            );
            let s = got.iter().find(|s| s.topic == status_topic(d));
            assert!(
                s.is_some_and(|s| s.json["state"] == "playing"),
                "{d}: retained status {:?}",
                s.map(|s| &s.json)
            );
        }
    }

    /// The controller's offsets on `GET /api/v1/status`, by device.
    fn controller_offsets(&self) -> Vec<(String, Option<f64>)> {
        let Ok((v, _)) = self.tx.status() else {
            return Vec::new();
        };
        self.names()
            .into_iter()
            .map(|d| {
                let o = v["devices"][&d]["offset_ms"].as_f64();
                (d, o)
            })
            .collect()
    }

    /// The last status's underrun count of `device`.
    fn underruns(&self, device: &str) -> u64 {
        self.watch
            .last(&status_topic(device))
            .and_then(|s| s.json["underruns"].as_u64())
            .unwrap_or(0)
    }
}

/// Prints a recovery figure (captured unless `--nocapture`) in one greppable form.
fn report(case: &str, what: &str, d: Duration) {
    println!("RECOVERY {case}: {what} {:.1} s", d.as_secs_f64());
}

#[test]
fn broker_killed_and_restarted_without_persistence() {
    let names = ["br-a", "br-b"];
    let targets = [41.5, 57.25];
    let mut rig = Rig::start("broker", true, false, &names, &[10.0, 20.0]);
    for ((d, &t), p) in names.iter().zip(&targets).zip([10.0, 20.0]) {
        rig.set_offset(d, p, t);
    }
    let before: Vec<u64> = names.iter().map(|d| rig.underruns(d)).collect();
    rig.broker.as_mut().unwrap().restart(Duration::from_secs(2));
    let back = Instant::now();
    // The controller republishes the offsets it holds, every receiver its status.
    let t = rig.recovered(
        back,
        Duration::from_secs(30),
        &targets,
        "after the broker restart",
    );
    rig.assert_retained(&targets);
    let offsets_back = back.elapsed();
    report("broker restart", "statuses back", t);
    report(
        "broker restart",
        "retained offsets and statuses back",
        offsets_back,
    );
    assert!(t < Duration::from_secs(20), "{t:?}");
    // The audio does not go through the broker: it never stopped.
    for (d, b) in names.iter().zip(before) {
        assert_eq!(
            rig.underruns(d),
            b,
            "{d} had underruns while the broker was away"
        );
    }
}

#[test]
fn transmitter_killed_and_restarted() {
    let names = ["kill-a", "kill-b"];
    let targets = [33.0, 48.75];
    let mut rig = Rig::start("kill", true, true, &names, &[10.0, 20.0]);
    for ((d, &t), p) in names.iter().zip(&targets).zip([10.0, 20.0]) {
        rig.set_offset(d, p, t);
    }
    // The controller keeps its state every 5 s.
    let state = rig.dir.path().join("tx-state/controller.json");
    poll(Duration::from_secs(15), || {
        let s = std::fs::read_to_string(&state).ok()?;
        names.iter().all(|d| s.contains(d)).then_some(())
    })
    .unwrap_or_else(|| rig.fail("controller.json does not hold the devices"));
    let killed = Instant::now();
    rig.tx.proc.kill9();
    // The receivers notice (their buffered second runs out).
    for d in &names {
        rig.status_where(d, killed, Duration::from_secs(15), "after the kill", |s| {
            s["state"] == "starved"
        });
    }
    rig.tx.restart();
    let back = Instant::now();
    let t = rig.recovered(back, Duration::from_secs(30), &targets, "after the restart");
    report(
        "transmitter kill -9",
        "receivers playing at their offsets",
        t,
    );
    assert!(t < Duration::from_secs(20), "{t:?}");
    // The controller restored them, and the receivers are connected again.
    let restored = poll(Duration::from_secs(10), || {
        let o = rig.controller_offsets();
        o.iter()
            .zip(&targets)
            .all(|((_, v), &t)| v.is_some_and(|v| close(v, t)))
            .then_some(o)
    });
    assert!(
        restored.is_some(),
        "controller: {:?}",
        rig.controller_offsets()
    );
    let (status, _) = rig.tx.status().unwrap();
    let receivers = status["receivers"].to_string();
    for d in &names {
        assert!(receivers.contains(d), "{d} is not connected: {receivers}");
    }
    rig.assert_retained(&targets);
}

#[test]
fn transmitter_paused_for_5_s() {
    let names = ["pause-a"];
    let targets = [62.5];
    let rig = Rig::start("pause", true, false, &names, &[10.0]);
    rig.set_offset(names[0], 10.0, targets[0]);
    let paused = Instant::now();
    rig.tx.proc.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5)); // the fault itself
    rig.tx.proc.signal(libc::SIGCONT);
    let back = Instant::now();
    // It ran dry meanwhile (the playout delay holds 1 s) ...
    rig.status_where(
        names[0],
        paused,
        Duration::from_secs(10),
        "while paused",
        |s| s["state"] == "starved",
    );
    // ... and plays again at its offset.
    let t = rig.recovered(back, Duration::from_secs(30), &targets, "after SIGCONT");
    report(
        "transmitter SIGSTOP 5 s",
        "receiver playing at its offset",
        t,
    );
    assert!(t < Duration::from_secs(20), "{t:?}");
    let o = rig.controller_offsets();
    assert!(o[0].1.is_some_and(|v| close(v, targets[0])), "{o:?}");
    rig.assert_retained(&targets);
}

#[test]
fn a_receivers_network_cut_for_10_s() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_on(common::procs::port());
    let tx = Transmitter::start(TransmitterOpts::new(dir.path()).with_broker(broker.port));
    // The cut receiver reaches the transmitter and the broker through proxies the test
    // holds; the other one directly.
    let proxy = |port: u16| {
        futures::executor::block_on(common::JitterProxy::start(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            0.0,
            0.0,
            7,
        ))
    };
    let (ps, ph, pm) = (
        proxy(tx.opts.stream_port),
        proxy(tx.opts.http_port),
        proxy(broker.port),
    );
    let watch = Watcher::start(
        broker.port,
        "watch-cut",
        &["syncstream/status/+", "syncstream/buffer_offset/+"],
    );
    let mut cut_opts = ReceiverOpts::new("cut-a", &tx.opts);
    (cut_opts.stream_port, cut_opts.http_port, cut_opts.mqtt_port) = (ps.port, ph.port, pm.port);
    cut_opts.base_latency_ms = Some(10.0);
    let mut other = ReceiverOpts::new("cut-b", &tx.opts);
    other.base_latency_ms = Some(20.0);
    let rig = Rig {
        rx: vec![Receiver::start(cut_opts), Receiver::start(other)],
        dir,
        broker: Some(broker),
        tx,
        watch,
    };
    let t0 = Instant::now();
    for d in rig.names() {
        rig.playing(&d, t0, START, "at start");
    }
    let targets = [27.5, 38.0];
    rig.set_offset("cut-a", 10.0, targets[0]);
    rig.set_offset("cut-b", 20.0, targets[1]);
    let other_before = rig.underruns("cut-b");
    let cut = Instant::now();
    for p in [&ps, &ph, &pm] {
        p.hold_for(Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_secs(10)); // the fault itself
    let back = Instant::now();
    rig.status_where(
        "cut-a",
        cut,
        Duration::from_secs(5),
        "during the cut",
        |s| s["state"] == "starved" || s["state"] == "offline",
    );
    let t = rig.recovered(
        back,
        Duration::from_secs(40),
        &targets[..1],
        "after the cut",
    );
    report("network cut 10 s", "receiver playing at its offset", t);
    assert!(t < Duration::from_secs(30), "{t:?}");
    rig.assert_retained(&targets);
    // The other receiver did not notice.
    rig.playing("cut-b", back, Duration::from_secs(10), "after the cut");
    assert_eq!(rig.underruns("cut-b"), other_before, "cut-b had underruns");
}

/// Which of `conns` the server closed, and when (from `start`), polled until all are
/// closed or `deadline` passes.
fn closed_by_server(
    conns: &mut [std::net::TcpStream],
    start: Instant,
    deadline: Duration,
) -> Vec<Option<Duration>> {
    use std::io::Read;
    let mut closed = vec![None; conns.len()];
    for c in conns.iter() {
        c.set_nonblocking(true).unwrap();
    }
    poll(deadline, || {
        let mut buf = [0u8; 4096];
        for (c, at) in conns.iter_mut().zip(closed.iter_mut()) {
            if at.is_some() {
                continue;
            }
            loop {
                match c.read(&mut buf) {
                    Ok(0) => {
                        *at = Some(start.elapsed());
                        break;
                    }
                    Ok(_) => continue, // an answer (a 408): keep reading to the end
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        *at = Some(start.elapsed());
                        break;
                    }
                }
            }
        }
        closed.iter().all(Option::is_some).then_some(())
    });
    closed
}

#[test]
fn silent_stream_connections_and_half_open_http_while_a_receiver_plays() {
    use std::io::Write;
    let rig = Rig::start("silent", false, false, &["silent-a"], &[10.0]);
    let device = "silent-a";
    // A regular status after playing settled: the underrun count to keep.
    let settled = rig.playing(device, Instant::now(), Duration::from_secs(10), "settled");
    let underruns = settled.json["underruns"].as_u64().unwrap();
    let start = Instant::now();
    let mut stream: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", rig.tx.opts.stream_port)).unwrap())
        .collect();
    let mut http: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", rig.tx.opts.http_port)).unwrap();
            // A request head that never ends.
            s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            s
        })
        .collect();
    // The API still answers meanwhile.
    let asked = Instant::now();
    rig.tx
        .status()
        .expect("the API answers with 250 idle connections open");
    let api_ms = asked.elapsed().as_millis();
    let s = closed_by_server(&mut stream, start, Duration::from_secs(20));
    let h = closed_by_server(&mut http, start, Duration::from_secs(30));
    let worst = |v: &[Option<Duration>]| v.iter().flatten().max().copied().unwrap_or_default();
    let open = |v: &[Option<Duration>]| v.iter().filter(|c| c.is_none()).count();
    println!(
        "silent connections: stream closed after {:.1} s (hello timeout 5 s), HTTP after {:.1} s \
         (header timeout 10 s), the API answered in {api_ms} ms meanwhile",
        worst(&s).as_secs_f64(),
        worst(&h).as_secs_f64()
    );
    assert_eq!(
        open(&s),
        0,
        "stream connections left open by the hello timeout"
    );
    assert_eq!(
        open(&h),
        0,
        "HTTP connections left open by the header timeout"
    );
    assert!(worst(&s) < Duration::from_secs(12), "{:?}", worst(&s));
    assert!(worst(&h) < Duration::from_secs(20), "{:?}", worst(&h));
    // A status published after they are all closed: still playing, no underrun.
    let after = rig.playing(
        device,
        Instant::now(),
        Duration::from_secs(10),
        "afterwards",
    );
    let all = rig.watch.since(&status_topic(device), start);
    assert!(
        all.iter().all(|s| s.json["state"] == "playing"),
        "{:?}",
        all.iter().map(|s| &s.json["state"]).collect::<Vec<_>>()
    );
    assert_eq!(
        after.json["underruns"].as_u64(),
        Some(underruns),
        "underruns while the silent connections were open"
    );
}

/// The server-side sockets of the transmitter's HTTP port `port` whose peer is one of
/// `clients` (local ports) and that are still established (from /proc/net/tcp: a
/// client that never reads cannot see the server close).
fn established_from(port: u16, clients: &[u16]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && port_of(f[1]) == Some(port)
                && port_of(f[2]).is_some_and(|p| clients.contains(&p))
                && f[3] == "01"
        })
        .count()
}

#[test]
fn http_clients_that_never_read_their_answers_are_dropped() {
    use std::io::Write;
    let rig = Rig::start("stall", false, false, &["stall-a"], &[10.0]);
    let settled = rig.playing(
        "stall-a",
        Instant::now(),
        Duration::from_secs(10),
        "settled",
    );
    let underruns = settled.json["underruns"].as_u64().unwrap();
    let rss_before = rig.tx.proc.rss_kb();
    // Each asks for 40 source windows of 2 s (15 MB) and never reads a byte.
    let path = format!(
        "/api/v1/window?start_us={}&duration_ms=2000",
        rig.tx.now_us() - 3_000_000
    );
    let head = common::procs::request_head(&path, false).repeat(40);
    let start = Instant::now();
    let conns: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", rig.tx.opts.http_port)).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    let ports: Vec<u16> = conns
        .iter()
        .map(|c| c.local_addr().unwrap().port())
        .collect();
    let http = rig.tx.opts.http_port;
    assert!(established_from(http, &ports) > 0);
    let dropped = poll(Duration::from_secs(40), || {
        (established_from(http, &ports) == 0).then(|| start.elapsed())
    });
    let rss_after = rig.tx.proc.rss_kb();
    println!(
        "clients that never read: dropped after {:?}; transmitter RSS {rss_before} -> {rss_after} kB",
        dropped.map(|d| d.as_secs_f64())
    );
    let dropped = dropped.unwrap_or_else(|| {
        rig.fail(&format!(
            "{} of 10 connections that never read are still open after 40 s",
            established_from(http, &ports)
        ))
    });
    assert!(dropped < Duration::from_secs(30), "{dropped:?}");
    // The receiver played on meanwhile.
    let after = rig.playing(
        "stall-a",
        Instant::now(),
        Duration::from_secs(10),
        "afterwards",
    );
    assert_eq!(after.json["underruns"].as_u64(), Some(underruns));
    drop(conns);
}

#[test]
fn a_flood_of_drift_reports_for_2000_made_up_devices() {
    let rig = Rig::start("flood", false, false, &["flood-a"], &[10.0]);
    let target = 44.25;
    rig.set_offset("flood-a", 10.0, target);
    let rss_before = rig.tx.proc.rss_kb();
    let underruns = rig.underruns("flood-a");
    let (_, status_before) = rig.tx.status().unwrap();
    let start = Instant::now();
    let now = rig.tx.now_us();
    for k in 0..2000 {
        let device = format!("ghost-{k:04}");
        let report = json!({
            "device": device, "drift_ms": 3.0, "confidence": 0.995,
            "signal_strength_db": -30.0, "ts_us": now, "applied_offset_ms": 10.0,
        });
        rig.watch.publish(
            &format!("syncstream/drift/{device}"),
            report.to_string().into_bytes(),
            false,
        );
    }
    // The real device is measured again right behind the flood's reports (the
    // controller answers it while its answers to the flood still queue): its new
    // offset must not be lost.
    let real = json!({
        "device": "flood-a", "drift_ms": 2.0, "confidence": 0.995,
        "signal_strength_db": -30.0, "ts_us": now, "applied_offset_ms": target,
    });
    rig.watch.publish(
        "syncstream/drift/flood-a",
        real.to_string().into_bytes(),
        false,
    );
    let real_answered = rig
        .watch
        .wait(
            &offset_topic("flood-a"),
            start,
            Duration::from_secs(30),
            |o| {
                o["offset_ms"]
                    .as_f64()
                    .is_some_and(|v| close(v, target + 2.0))
            },
        )
        .unwrap_or_else(|| rig.fail("flood-a: its new offset was lost in the flood"))
        .at
        - start;
    // The controller got through the flood, and its answers were not dropped: the
    // last made-up device got its offset too (before the outbox, the answers at the
    // end of such a burst found the MQTT client's queue full and were lost).
    rig.watch
        .wait(
            &offset_topic("ghost-1999"),
            start,
            Duration::from_secs(60),
            |_| true,
        )
        .unwrap_or_else(|| rig.fail("the last made-up device's answer was lost"));
    poll(Duration::from_secs(10), || {
        let (v, _) = rig.tx.status().ok()?;
        v["devices"].get("ghost-1999").map(|_| ())
    })
    .unwrap_or_else(|| rig.fail("the flood was not handled"));
    let handled = start.elapsed();
    let (status, bytes) = rig.tx.status().unwrap();
    let devices = status["devices"].as_object().map_or(0, |m| m.len());
    let rss_after = rig.tx.proc.rss_kb();
    println!(
        "flood: 2000 devices handled in {:.1} s; /api/v1/status {status_before} -> {bytes} bytes, \
         {devices} devices; transmitter RSS {rss_before} -> {rss_after} kB",
        handled.as_secs_f64()
    );
    assert!(devices <= 256, "{devices} devices tracked");
    assert!(bytes < 256 * 1024, "/api/v1/status is {bytes} bytes");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the transmitter grew from {rss_before} to {rss_after} kB"
    );
    let api = common::procs::http_get(rig.tx.opts.http_port, "/api/v1/devices").unwrap();
    println!("flood: /api/v1/devices is {} bytes", api.len());
    assert!(
        api.len() < 1024 * 1024,
        "/api/v1/devices is {} bytes",
        api.len()
    );
    report(
        "flood of 2000 devices",
        "real device's new offset published",
        real_answered,
    );
    // It still plays, at that offset, without underruns.
    let after = Instant::now();
    rig.recovered(
        after,
        Duration::from_secs(15),
        &[target + 2.0],
        "after the flood",
    );
    assert_eq!(
        rig.underruns("flood-a"),
        underruns,
        "underruns during the flood"
    );
}

#[test]
fn state_survives_a_restart_of_broker_transmitter_and_receivers() {
    let names = ["keep-a", "keep-b", "keep-c"];
    let profiles = [10.0, 20.0, 30.0];
    let targets = [61.25, 72.5, 83.75];
    let mut rig = Rig::start("keep", true, true, &names, &profiles);
    for ((d, &t), &p) in names.iter().zip(&targets).zip(&profiles) {
        rig.set_offset(d, p, t);
    }
    let dir = rig.dir.path().to_path_buf();
    poll(Duration::from_secs(15), || {
        let s = std::fs::read_to_string(dir.join("tx-state/controller.json")).ok()?;
        let mine = names.iter().all(|d| s.contains(d))
            && names
                .iter()
                .all(|d| dir.join(format!("rx-state/{d}.state.json")).exists());
        mine.then_some(())
    })
    .unwrap_or_else(|| rig.fail("the state files were not written"));
    let port = rig.broker.as_ref().unwrap().port;

    // 1. Broker (no persistence: retained offsets gone) and transmitter restart; the
    //    receivers stay.
    rig.tx.proc.kill9();
    rig.broker.as_mut().unwrap().restart(Duration::from_secs(1));
    rig.tx.restart();
    let back = Instant::now();
    let t = rig.recovered(
        back,
        Duration::from_secs(30),
        &targets,
        "after broker + transmitter",
    );
    rig.assert_retained(&targets);
    report(
        "broker + transmitter restart",
        "receivers playing at their offsets",
        t,
    );
    assert!(t < Duration::from_secs(20), "{t:?}");

    // 2. Everything restarts; the receivers come up before the transmitter, with
    //    their profiles pushed retained on syncstream/config: each starts from the
    //    offset it kept, not its profile's.
    rig.tx.proc.kill9();
    for r in &mut rig.rx {
        r.proc.kill9();
    }
    rig.broker.as_mut().unwrap().restart(Duration::from_secs(1));
    let config = json!({
        "devices": names.iter().zip(&profiles).map(|(d, &p)| {
            (d.to_string(), json!({"type": "analog", "base_latency_ms": p}))
        }).collect::<serde_json::Map<String, Value>>()
    });
    let pusher = Watcher::start(port, "config-push", &[]);
    pusher.publish("syncstream/config", config.to_string().into_bytes(), true);
    let restarted = Instant::now();
    for r in &mut rig.rx {
        r.restart();
    }
    // Two statuses each (the one on connecting, then the regular one 5 s later, after
    // the retained config arrived): both at the kept offset. A last will (`offline`,
    // no offset) says nothing about the offset: it is counted apart and logged, and
    // the receiver's log is shown if its statuses do not come.
    for (d, &t) in names.iter().zip(&targets) {
        let seen = poll(Duration::from_secs(20), || {
            let s: Vec<Seen> = rig
                .watch
                .since(&status_topic(d), restarted)
                .into_iter()
                .filter(|s| s.json["state"] != "offline")
                .collect();
            (s.len() >= 2).then_some(s)
        })
        .unwrap_or_else(|| rig.fail(&format!("{d}: no two statuses without a transmitter")));
        let wills = rig
            .watch
            .since(&status_topic(d), restarted)
            .iter()
            .filter(|s| s.json["state"] == "offline")
            .count();
        if wills > 0 {
            println!(
                "NOTE {d}: {wills} last will(s) after its restart (a dropped MQTT connection)"
            );
        }
        for s in &seen {
            if !s.json["offset_ms"].as_f64().is_some_and(|v| close(v, t)) {
                rig.fail(&format!(
                    "{d} without a transmitter: {} (want its kept {t}, not its profile's)",
                    s.json
                ));
            }
        }
    }
    rig.tx.restart();
    let back = Instant::now();
    let t = rig.recovered(
        back,
        Duration::from_secs(30),
        &targets,
        "after everything restarted",
    );
    rig.assert_retained(&targets);
    report(
        "everything restarted",
        "receivers playing at their offsets",
        t,
    );
    assert!(t < Duration::from_secs(20), "{t:?}");
    let o = rig.controller_offsets();
    for ((d, v), &t) in o.iter().zip(&targets) {
        assert!(v.is_some_and(|v| close(v, t)), "controller: {d} {v:?}");
    }
}
