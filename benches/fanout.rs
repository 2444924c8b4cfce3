//! Transmitter fan-out: what one transmitter costs with N receivers.
//!
//! `cargo bench --bench fanout [-- N1,N2,... [SECONDS]]` (default N = 1, 10, 50, 100,
//! 200 and 20 s of measurement after 5 s of warm-up).
//!
//! For each N it starts the real `syncstream transmitter` process (embedded MQTT
//! broker, the orchestral clip in `assets/audio` looped, Opus, a fresh pairing key)
//! pinned to CPU 0 with `taskset`, and N lightweight receivers in this process, pinned
//! to the other CPUs. Each receiver does what a real one does on the wire, over real
//! loopback TCP:
//! - a stream connection with the pairing-key handshake ([`StreamAuth`]), reading
//!   every audio chunk (not decoding it), and sending every 20th clock-sync request
//!   on it as the real receiver's keep-alive (one a second);
//! - a clock-sync connection (`ClockHello`, the same handshake) with a `TimeRequest`
//!   every 50 ms (the receivers' rate), on a thread of its own (as in a receiver, whose
//!   clock sync does not wait behind 199 other receivers' audio);
//! - an MQTT client logged in with its derived password: a retained status, a
//!   subscription to its `buffer_offset`, and a drift report every 2.5 s.
//!
//! It prints, per N, from the transmitter process's `/proc/<pid>/stat` and `status`:
//! CPU time per second of audio (user + system over the measured span, in % of one
//! core), RSS at the end and its peak; from the receivers: the clock-sync round trip
//! (t4 − t1 minus the transmitter's t3 − t2: the reply delay a receiver sees, loopback
//! and scheduling included) p50 and p99, the audio chunks received, the chunks that
//! arrived late (their age at arrival, arrival minus PTS on the transmitter's clock,
//! more than one chunk, 20 ms, beyond the median age; "age p50" is that median) and any receiver that lost a connection.
//!
//! Last, it runs 10 receivers with one more that stalls after its hello, twice: frozen
//! (it reads and sends nothing, a hung process) and not reading (its keep-alives go
//! on), each until the transmitter drops it (or 60 s), and prints when that happened
//! and whether the 10 others lost or received late any chunk meanwhile.
//!
//! "to t2 p99" is the transmitter's side of the clock reply delay: from a request's
//! sending (t1) to the transmitter stamping its arrival (t2), through this receiver's
//! clock offset (fitted on the lowest round trips: loopback, accurate to a few µs).
//! The round trip adds this process's own wake-up to read the answer, which 200
//! receivers sharing one CPU here delay, as one real receiver on its own Pi does not.
//!
//! Figures, not assertions: the README quotes them.

use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rumqttc::{Event, Packet, QoS};
use syncstream_protocol::auth::{nonce, PairingKey, StreamAuth};
use syncstream_protocol::messages::{topics, DriftReport};
use syncstream_protocol::mqtt::{connect, BrokerUrl};
use syncstream_protocol::wire::{Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Stream rate, Hz.
const RATE_HZ: f64 = 48_000.0;
/// One chunk, µs (20 ms).
const CHUNK_US: i64 = 20_000;
/// Clock-sync requests per receiver: one every 50 ms.
const CLOCK_INTERVAL: Duration = Duration::from_millis(50);
/// Every this many requests, one goes on the stream connection (the keep-alive).
const KEEPALIVE_EVERY: u64 = 20;
/// Drift reports: one every 2.5 s.
const REPORT_INTERVAL: Duration = Duration::from_millis(2500);

/// Local monotonic time, µs since the first call.
fn now_us() -> i64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as i64
}

/// What the receivers measured, shared by all of them.
#[derive(Default)]
struct Stats {
    measuring: AtomicBool,
    /// Clock-sync reply delays, µs.
    rtt_us: Mutex<Vec<i64>>,
    /// Request to the transmitter's t2 stamp (t2 − t1 − clock offset), µs: the
    /// transmitter's side of the reply delay (loopback, its wake-up and queueing),
    /// without this process's own wake-up to read the answer.
    uplink_us: Mutex<Vec<i64>>,
    /// Chunk ages at arrival: arrival minus the chunk's PTS, µs (transmitter clock;
    /// the receivers play it at PTS + playout delay).
    lead_us: Mutex<Vec<i64>>,
    chunks: AtomicU64,
    /// Bytes of audio frames (with their 4-byte length), all receivers.
    bytes: AtomicU64,
    reports: AtomicU64,
    offsets: AtomicU64,
    lost: AtomicU64,
}

/// One receiver of the benchmark: where it connects, who it is, its view of the
/// transmitter clock, and the figures it adds to.
struct BenchReceiver {
    addr: String,
    auth: StreamAuth,
    device: String,
    instance: u64,
    /// Transmitter clock minus ours, µs, from the exchange with the lowest round trip.
    offset_us: AtomicI64,
    best_rtt_us: AtomicI64,
    stats: Arc<Stats>,
}

impl BenchReceiver {
    /// Now on the transmitter's clock, µs.
    fn transmitter_now_us(&self) -> i64 {
        now_us() + self.offset_us.load(Ordering::Relaxed)
    }

    fn measuring(&self) -> bool {
        self.stats.measuring.load(Ordering::Relaxed)
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>;

async fn send(w: &mut Writer, f: &Frame) -> anyhow::Result<()> {
    w.send(Bytes::from(f.encode()?)).await?;
    Ok(())
}

async fn next_frame(r: &mut Reader) -> anyhow::Result<Frame> {
    match r.next().await {
        Some(b) => Ok(Frame::decode(&b?)?),
        None => bail!("connection closed"),
    }
}

/// Connects and passes the handshake with a `ClientHello` (`clock` false) or a
/// `ClockHello`.
async fn login(
    addr: &str,
    auth: &StreamAuth,
    device: &str,
    instance: u64,
    clock: bool,
) -> anyhow::Result<(Reader, Writer)> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (r, w) = sock.into_split();
    let (mut r, mut w) = (FramedRead::new(r, codec()), FramedWrite::new(w, codec()));
    let client_nonce = nonce();
    let (protocol_version, device_name) = (PROTOCOL_VERSION, device.to_string());
    let hello = if clock {
        Frame::ClockHello {
            protocol_version,
            device: device_name,
            instance,
            client_nonce,
        }
    } else {
        Frame::ClientHello {
            protocol_version,
            device: device_name,
            instance,
            client_nonce,
        }
    };
    send(&mut w, &hello).await?;
    match next_frame(&mut r).await? {
        Frame::AuthChallenge {
            server_nonce,
            server_proof,
        } => {
            let answer = auth
                .respond(
                    &client_nonce,
                    &server_nonce,
                    &server_proof,
                    device,
                    instance,
                )
                .map_err(anyhow::Error::msg)?;
            send(&mut w, &answer).await?;
        }
        Frame::Refused { reason } => bail!("refused: {reason}"),
        other => bail!("no challenge but {other:?}"),
    }
    Ok((r, w))
}

/// The clock-sync connection: a request every 50 ms, answers timed.
async fn clock_task(rx: Arc<BenchReceiver>) -> anyhow::Result<()> {
    let (mut r, mut w) = login(&rx.addr, &rx.auth, &rx.device, rx.instance, true).await?;
    let mut tick = tokio::time::interval(CLOCK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sent += 1;
                // Every KEEPALIVE_EVERY-th request goes on the stream connection.
                if !sent.is_multiple_of(KEEPALIVE_EVERY) {
                    send(&mut w, &Frame::TimeRequest { t1_us: now_us() }).await?;
                }
            }
            f = next_frame(&mut r) => {
                if let Frame::TimeResponse { t1_us, t2_us, t3_us } = f? {
                    let t4 = now_us();
                    let rtt = (t4 - t1_us) - (t3_us - t2_us);
                    if rtt < rx.best_rtt_us.load(Ordering::Relaxed) {
                        rx.best_rtt_us.store(rtt, Ordering::Relaxed);
                        rx.offset_us
                            .store(((t2_us - t1_us) + (t3_us - t4)) / 2, Ordering::Relaxed);
                    }
                    if rx.measuring() {
                        rx.stats.rtt_us.lock().unwrap().push(rtt);
                        let offset = rx.offset_us.load(Ordering::Relaxed);
                        rx.stats.uplink_us.lock().unwrap().push(t2_us - t1_us - offset);
                    }
                }
            }
        }
    }
}

/// The stream connection: reads every chunk and notes its lead.
async fn stream_task(rx: Arc<BenchReceiver>) -> anyhow::Result<()> {
    let (mut r, mut w) = login(&rx.addr, &rx.auth, &rx.device, rx.instance, false).await?;
    let stats = &rx.stats;
    let mut epoch_us = None;
    let mut keepalive = tokio::time::interval(CLOCK_INTERVAL * KEEPALIVE_EVERY as u32);
    loop {
        tokio::select! {
            _ = keepalive.tick() => send(&mut w, &Frame::TimeRequest { t1_us: now_us() }).await?,
            f = next_frame(&mut r) => match f? {
                Frame::ServerHello { epoch_us: e, .. } => epoch_us = Some(e),
                Frame::Audio { sample_index, payload, .. } => {
                    if !rx.measuring() {
                        continue;
                    }
                    stats.chunks.fetch_add(1, Ordering::Relaxed);
                    // The payload, the 4-byte length and about 9 bytes of postcard
                    // (variant, index, frame count, payload length).
                    stats.bytes.fetch_add(payload.len() as u64 + 13, Ordering::Relaxed);
                    if let Some(e) = epoch_us {
                        let pts = e + (sample_index as f64 * 1e6 / RATE_HZ) as i64;
                        stats.lead_us.lock().unwrap().push(rx.transmitter_now_us() - pts);
                    }
                }
                Frame::Refused { reason } => bail!("refused: {reason}"),
                _ => {}
            }
        }
    }
}

/// The MQTT side: status, offsets, a drift report every 2.5 s.
async fn mqtt_task(rx: Arc<BenchReceiver>, url: BrokerUrl, phase: Duration) -> anyhow::Result<()> {
    let (client, events) = connect(
        &url,
        &rx.device,
        Some((
            topics::status(&rx.device),
            br#"{"state":"offline"}"#.to_vec(),
        )),
    );
    tokio::select! {
        r = publish_reports(client, &rx, phase) => r,
        r = count_offsets(events, &rx.stats) => r,
    }
}

async fn publish_reports(
    c: rumqttc::AsyncClient,
    rx: &BenchReceiver,
    phase: Duration,
) -> anyhow::Result<()> {
    let dev = &rx.device;
    c.subscribe(topics::buffer_offset(dev), QoS::AtLeastOnce)
        .await?;
    let status = format!(r#"{{"device":"{dev}","state":"playing"}}"#);
    c.publish(topics::status(dev), QoS::AtLeastOnce, true, status)
        .await?;
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        let report = DriftReport {
            device: dev.clone(),
            // A receiver in sync: a few µs either side.
            drift_ms: Some(if n.is_multiple_of(2) { 0.004 } else { -0.004 }),
            confidence: 0.9,
            signal_strength_db: -32.0,
            ts_us: rx.transmitter_now_us(),
            ..Default::default()
        };
        let payload = serde_json::to_vec(&report)?;
        c.publish(topics::drift(dev), QoS::AtMostOnce, false, payload)
            .await?;
        if rx.measuring() {
            rx.stats.reports.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn count_offsets(mut events: rumqttc::EventLoop, stats: &Stats) -> anyhow::Result<()> {
    loop {
        if let Event::Incoming(Packet::Publish(_)) = events.poll().await? {
            if stats.measuring.load(Ordering::Relaxed) {
                stats.offsets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How a stalled receiver misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Stall {
    /// Frozen (a hung process): it reads nothing and sends nothing.
    Frozen,
    /// Alive but not reading: its keep-alives go on.
    NotReading,
}

/// TCP state of `sock` (TCP_INFO's `tcpi_state`; 8 is CLOSE_WAIT: the peer closed).
fn tcp_state(sock: &impl std::os::fd::AsRawFd) -> u8 {
    // SAFETY: getsockopt writes at most `len` bytes into a zeroed tcp_info.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        info.tcpi_state
    }
}

/// Runs one of a receiver's tasks; its end (always an error) counts as a lost
/// connection, and is printed when it came before the measurement.
async fn counting_loss(
    rx: Arc<BenchReceiver>,
    what: &'static str,
    task: impl std::future::Future<Output = anyhow::Result<()>>,
) {
    if let Err(e) = task.await {
        if !rx.measuring() {
            eprintln!("{}: {what} ended before the measurement: {e:#}", rx.device);
        }
        rx.stats.lost.fetch_add(1, Ordering::Relaxed);
    }
}

/// A receiver that says hello, passes the handshake and then stalls: returns how long
/// after that the transmitter closed it (None: still open at `limit`).
async fn stalled_receiver(
    addr: String,
    auth: StreamAuth,
    how: Stall,
    limit: Duration,
) -> Option<Duration> {
    let (r, mut w) = login(&addr, &auth, "bench-stalled", 7, false).await.ok()?;
    let stopped = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n = 0u32;
    loop {
        tick.tick().await;
        if stopped.elapsed() > limit {
            return None;
        }
        if tcp_state(r.get_ref().as_ref()) == 8 {
            return Some(stopped.elapsed());
        }
        n += 1;
        // Not reading, but alive: a keep-alive a second, as a real receiver sends.
        if how == Stall::NotReading && n.is_multiple_of(5) {
            let t = Frame::TimeRequest { t1_us: now_us() };
            if send(&mut w, &t).await.is_err() {
                return Some(stopped.elapsed());
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the transmitter's {what} port {port} did not open in 20 s")
}

/// CPU time (user + system) of process `pid`, s.
fn cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses): utime is the 14th
    // field of the line, stime the 15th (proc(5)).
    let rest = stat.rsplit_once(')').context("/proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// `VmRSS` and `VmHWM` of process `pid`, MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Pins this process's future threads to every CPU but the first (the transmitter's).
fn pin_away_from_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity get a valid set.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        if n < 2 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 1..n {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Transmitter {
    child: Child,
    stream: u16,
    mqtt: u16,
    key: PairingKey,
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_transmitter(dir: &Path) -> anyhow::Result<Transmitter> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let clip = root.join("assets/audio/battle-orchestral-44k1.ogg");
    let key_file = dir.join("pairing.key");
    let (stream, http, mqtt) = (free_port()?, free_port()?, free_port()?);
    let log = std::fs::File::create(dir.join("transmitter.log"))?;
    let child = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_syncstream"), "transmitter"])
        .arg("--key-file")
        .arg(&key_file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--source")
        .arg(&clip)
        .arg("--loop")
        .args(["--stream-listen", &format!("127.0.0.1:{stream}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--broker-listen", &format!("127.0.0.1:{mqtt}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting `taskset -c 0 syncstream transmitter` (util-linux's taskset)")?;
    let mut t = Transmitter {
        child,
        stream,
        mqtt,
        key: PairingKey::generate()?, // replaced below by the transmitter's own
    };
    wait_port(stream, "stream").await?;
    wait_port(mqtt, "MQTT").await?;
    t.key = PairingKey::load(&key_file)?;
    Ok(t)
}

struct Row {
    n: usize,
    cpu_pct: f64,
    rss_mib: f64,
    hwm_mib: f64,
    rtt_p50_us: i64,
    rtt_p99_us: i64,
    uplink_p99_us: i64,
    chunks: u64,
    kbit_s_each: f64,
    expected_chunks: u64,
    late: usize,
    lead_p50_ms: f64,
    reports: u64,
    offsets: u64,
    lost: u64,
    stalled_dropped_s: Option<f64>,
}

/// How long the stalled receiver waits to be dropped before the bench gives up.
const STALL_LIMIT: Duration = Duration::from_secs(60);

async fn run(
    clock_rt: &tokio::runtime::Handle,
    n: usize,
    warmup: Duration,
    measure: Duration,
    stall: Option<Stall>,
) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let tx = start_transmitter(dir.path()).await?;
    let auth = StreamAuth::new(tx.key.clone());
    let stats = Arc::new(Stats::default());
    let addr = format!("127.0.0.1:{}", tx.stream);
    let mut tasks = Vec::new();
    for i in 0..n {
        let device = format!("bench-{i:03}");
        let instance = 1000 + i as u64;
        let rx = Arc::new(BenchReceiver {
            addr: addr.clone(),
            auth: auth.clone(),
            device: device.clone(),
            instance,
            offset_us: AtomicI64::new(0),
            best_rtt_us: AtomicI64::new(i64::MAX),
            stats: stats.clone(),
        });
        // The clock connections on their own thread, as each real receiver's clock
        // sync runs in a process of its own: the round trip is then the
        // transmitter's, not the queue of 200 receivers' audio reads in this process.
        tasks.push(clock_rt.spawn(counting_loss(rx.clone(), "clock", clock_task(rx.clone()))));
        tasks.push(tokio::spawn(counting_loss(
            rx.clone(),
            "stream",
            stream_task(rx.clone()),
        )));
        let url = BrokerUrl::new("127.0.0.1", tx.mqtt).with_key(&tx.key, &device);
        let phase = REPORT_INTERVAL.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(counting_loss(
            rx.clone(),
            "mqtt",
            mqtt_task(rx, url, phase),
        )));
    }
    let stalled = stall.map(|how| {
        tokio::spawn(stalled_receiver(
            addr.clone(),
            auth.clone(),
            how,
            STALL_LIMIT,
        ))
    });
    tokio::time::sleep(warmup).await;
    let pid = tx.child.id();
    let cpu0 = cpu_s(pid)?;
    let t0 = Instant::now();
    stats.measuring.store(true, Ordering::Relaxed);
    // With a stalled receiver, the measurement lasts until it is dropped (and 2 s
    // more): the others' chunks over that span show whether it delayed them.
    let stalled_dropped_s = match stalled {
        Some(h) => {
            let r = h.await.ok().flatten().map(|d| d.as_secs_f64());
            tokio::time::sleep(Duration::from_secs(2)).await;
            r
        }
        None => {
            tokio::time::sleep(measure).await;
            None
        }
    };
    stats.measuring.store(false, Ordering::Relaxed);
    let span_s = t0.elapsed().as_secs_f64();
    let cpu = cpu_s(pid)? - cpu0;
    let (rss, hwm) = rss_mib(pid)?;
    for t in &tasks {
        t.abort();
    }
    drop(tx);
    let mut rtt = std::mem::take(&mut *stats.rtt_us.lock().unwrap());
    let mut uplink = std::mem::take(&mut *stats.uplink_us.lock().unwrap());
    let mut lead = std::mem::take(&mut *stats.lead_us.lock().unwrap());
    let lead_p50 = percentile(&mut lead, 0.5);
    let late = lead.iter().filter(|&&l| l > lead_p50 + CHUNK_US).count();
    Ok(Row {
        n,
        cpu_pct: 100.0 * cpu / span_s,
        rss_mib: rss,
        hwm_mib: hwm,
        rtt_p50_us: percentile(&mut rtt, 0.5),
        rtt_p99_us: percentile(&mut rtt, 0.99),
        uplink_p99_us: percentile(&mut uplink, 0.99),
        chunks: stats.chunks.load(Ordering::Relaxed),
        kbit_s_each: stats.bytes.load(Ordering::Relaxed) as f64 * 8.0 / 1000.0 / span_s / n as f64,
        expected_chunks: (n as f64 * span_s * 1e6 / CHUNK_US as f64) as u64,
        late,
        lead_p50_ms: lead_p50 as f64 / 1000.0,
        reports: stats.reports.load(Ordering::Relaxed),
        offsets: stats.offsets.load(Ordering::Relaxed),
        lost: stats.lost.load(Ordering::Relaxed),
        stalled_dropped_s,
    })
}

fn main() -> anyhow::Result<()> {
    // cargo bench passes `--bench`; the rest: N list and seconds.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let counts: Vec<usize> = match args.first() {
        Some(s) => s
            .split(',')
            .map(|n| n.parse().with_context(|| format!("receiver count '{n}'")))
            .collect::<anyhow::Result<_>>()?,
        None => vec![1, 10, 50, 100, 200],
    };
    let measure = Duration::from_secs_f64(match args.get(1) {
        Some(s) => s.parse().with_context(|| format!("seconds '{s}'"))?,
        None => 20.0,
    });
    let warmup = Duration::from_secs(5);
    pin_away_from_cpu0();
    let clock_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-clock")
        .enable_all()
        .build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "transmitter fan-out: {} s measured after {} s warm-up per N; transmitter on CPU 0, receivers on the others",
        measure.as_secs_f64(),
        warmup.as_secs()
    );
    println!(
        "{:>4} {:>9} {:>8} {:>8} {:>10} {:>10} {:>12} {:>15} {:>7} {:>5} {:>9} {:>8} {:>8} {:>5} {:>14}",
        "N",
        "CPU %",
        "RSS MiB",
        "peak",
        "clock p50",
        "clock p99",
        "to t2 p99",
        "chunks",
        "kbit/s",
        "late",
        "age p50",
        "reports",
        "offsets",
        "lost",
        "stalled drop"
    );
    let mut runs: Vec<(usize, Option<Stall>)> = counts.iter().map(|&n| (n, None)).collect();
    runs.push((10, Some(Stall::Frozen)));
    runs.push((10, Some(Stall::NotReading)));
    for (n, stall) in runs {
        match stall {
            Some(Stall::Frozen) => println!(
                "10 receivers and one more that freezes after its hello (reads and sends nothing), until it is dropped:"
            ),
            Some(Stall::NotReading) => println!(
                "10 receivers and one more that stops reading after its hello (keep-alives go on), until it is dropped or {} s:",
                STALL_LIMIT.as_secs()
            ),
            None => {}
        }
        let r = rt.block_on(run(clock_rt.handle(), n, warmup, measure, stall))?;
        println!(
            "{:>4} {:>8.1}% {:>8.1} {:>8.1} {:>7} µs {:>7} µs {:>9} µs {:>7}/{:<7} {:>7.0} {:>5} {:>6.0} ms {:>8} {:>8} {:>5} {:>14}",
            r.n,
            r.cpu_pct,
            r.rss_mib,
            r.hwm_mib,
            r.rtt_p50_us,
            r.rtt_p99_us,
            r.uplink_p99_us,
            r.chunks,
            r.expected_chunks,
            r.kbit_s_each,
            r.late,
            r.lead_p50_ms,
            r.reports,
            r.offsets,
            r.lost,
            r.stalled_dropped_s
                .map_or_else(
                    || if stall.is_some() { format!("not in {} s", STALL_LIMIT.as_secs()) } else { "-".into() },
                    |s| format!("after {s:.1} s"),
                ),
        );
        std::io::stdout().flush()?;
    }
    Ok(())
}
