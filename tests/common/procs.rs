//! The real binaries as processes: `syncstream transmitter` and `syncstream receiver`
//! (null output and microphone), started from options in one place, so that what every
//! process-level test passes (ports, brokers, state folders, and credentials when they
//! come) is written once. Each process logs into a file (read it with
//! [`Proc::log_tail`] when a test fails) and is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 below the ephemeral range (32768 up), so that no
/// outgoing connection of a concurrent test takes it between now and the bind of the
/// process it is for (a restarted transmitter binds its ports again). Unique within
/// the test process.
pub fn port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 32_700, "no free port left below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A child process of a test: killed (and reaped) on drop.
pub struct Proc {
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `syncstream args...`, logging into `log` (appended: a restart keeps the
    /// first run's lines).
    pub fn syncstream(args: &[String], log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_syncstream"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, SIGTERM, ...) to it.
    pub fn signal(&self, signal: i32) {
        if self.child.is_some() {
            // SAFETY: kill(2) on our own child's pid.
            let r = unsafe { libc::kill(self.pid(), signal) };
            assert_eq!(r, 0, "kill({}, {signal})", self.pid());
        }
    }

    /// Kills it with SIGKILL (no clean shutdown: no MQTT DISCONNECT, no state flushed)
    /// and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Its resident memory, kB (`VmRSS` in /proc), 0 when unknown.
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The last `lines` lines of its log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // SIGKILL ends a stopped process too; SIGCONT first all the same, so a
            // test that failed while it was paused leaves nothing behind.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        }
        self.kill9();
    }
}

/// How a transmitter is started.
#[derive(Debug, Clone)]
pub struct TransmitterOpts {
    /// Audio stream port.
    pub stream_port: u16,
    /// HTTP (API, windows) port.
    pub http_port: u16,
    /// The MQTT broker's port: an external broker's (`external_broker`) or the
    /// embedded one's listen port.
    pub mqtt_port: u16,
    /// Use the broker on `mqtt_port` instead of starting the embedded one.
    pub external_broker: bool,
    /// `--state-dir` (the control plane's and the controller's state).
    pub state_dir: Option<PathBuf>,
    /// `--source`.
    pub source: String,
    /// Folder for the log file.
    pub log_dir: PathBuf,
}

impl TransmitterOpts {
    /// A test-tone transmitter on free ports with its embedded broker, logging into
    /// `log_dir`.
    pub fn new(log_dir: &Path) -> TransmitterOpts {
        TransmitterOpts {
            stream_port: port(),
            http_port: port(),
            mqtt_port: port(),
            external_broker: false,
            state_dir: None,
            source: "tone:440".into(),
            log_dir: log_dir.to_path_buf(),
        }
    }

    /// The same on the external broker at `port`.
    pub fn with_broker(mut self, port: u16) -> TransmitterOpts {
        self.mqtt_port = port;
        self.external_broker = true;
        self
    }

    /// The same keeping its state in `dir`.
    pub fn with_state_dir(mut self, dir: &Path) -> TransmitterOpts {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "transmitter".into(),
            "--source".into(),
            self.source.clone(),
            "--stream-listen".into(),
            format!("127.0.0.1:{}", self.stream_port),
            "--http-listen".into(),
            format!("127.0.0.1:{}", self.http_port),
        ];
        if self.external_broker {
            a.extend([
                "--mqtt".into(),
                format!("mqtt://127.0.0.1:{}", self.mqtt_port),
            ]);
        } else {
            a.extend([
                "--broker-listen".into(),
                format!("127.0.0.1:{}", self.mqtt_port),
            ]);
        }
        if let Some(d) = &self.state_dir {
            a.extend(["--state-dir".into(), d.display().to_string()]);
        }
        a.extend(key_args());
        a
    }
}

/// `--key-file` with the default pairing key (created now if missing): every process
/// of the tests pairs with every other.
fn key_args() -> [String; 2] {
    super::default_key();
    [
        "--key-file".into(),
        syncstream_protocol::auth::default_key_file()
            .display()
            .to_string(),
    ]
}

/// A running `syncstream transmitter`.
pub struct Transmitter {
    /// The process.
    pub proc: Proc,
    /// How it was started.
    pub opts: TransmitterOpts,
}

impl Transmitter {
    /// Starts a transmitter and waits (bounded) until its HTTP port and (embedded)
    /// broker accept connections.
    pub fn start(opts: TransmitterOpts) -> Transmitter {
        let log = opts
            .log_dir
            .join(format!("transmitter-{}.log", opts.http_port));
        let proc = Proc::syncstream(&opts.args(), &log);
        let mut me = Transmitter { proc, opts };
        me.wait_ready();
        me
    }

    fn wait_ready(&mut self) {
        let ports = [
            self.opts.http_port,
            self.opts.stream_port,
            self.opts.mqtt_port,
        ];
        for port in ports {
            assert!(
                super::wait_for_port(port, Duration::from_secs(30)),
                "the transmitter does not listen on {port}:\n{}",
                self.proc.log_tail(30)
            );
        }
        // Its own ports, not another's: it answers and still runs.
        let answered = poll(Duration::from_secs(10), || self.status().ok());
        assert!(
            answered.is_some() && self.proc.running(),
            "the transmitter did not start:\n{}",
            self.proc.log_tail(30)
        );
    }

    /// Starts it again with the same options (after [`Proc::kill9`]).
    pub fn restart(&mut self) {
        self.proc = Proc::syncstream(&self.opts.args(), &self.proc.log);
        self.wait_ready();
    }

    /// `GET /api/v1/status`, parsed, with its size in bytes.
    pub fn status(&self) -> Result<(serde_json::Value, usize), String> {
        let body = http_get(self.opts.http_port, "/api/v1/status")?;
        let v = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok((v, body.len()))
    }

    /// The transmitter's time now, µs (the newest buffered PTS: what drift reports
    /// are stamped with).
    pub fn now_us(&self) -> i64 {
        let (v, _) = self
            .status()
            .unwrap_or_else(|e| panic!("its status: {e}\n{}", self.proc.log_tail(30)));
        v["buffer"]["newest_us"].as_i64().expect("buffer.newest_us")
    }
}

/// How a receiver is started.
#[derive(Debug, Clone)]
pub struct ReceiverOpts {
    /// Device name.
    pub name: String,
    /// The transmitter's stream port (or a proxy's).
    pub stream_port: u16,
    /// The transmitter's HTTP port (or a proxy's).
    pub http_port: u16,
    /// The MQTT broker's port (or a proxy's).
    pub mqtt_port: u16,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// The profile's `base_latency_ms` (written to a profile file), or the default.
    pub base_latency_ms: Option<f64>,
    /// Folder for the log and profile files.
    pub log_dir: PathBuf,
    /// Play into this WAV file (the `wav` output) instead of the null output.
    pub wav_output: Option<PathBuf>,
}

impl ReceiverOpts {
    /// Device `name` of the transmitter started with `tx` (its ports and broker).
    pub fn new(name: &str, tx: &TransmitterOpts) -> ReceiverOpts {
        ReceiverOpts {
            name: name.into(),
            stream_port: tx.stream_port,
            http_port: tx.http_port,
            mqtt_port: tx.mqtt_port,
            state_dir: None,
            base_latency_ms: None,
            log_dir: tx.log_dir.clone(),
            wav_output: None,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "receiver".into(),
            "--name".into(),
            self.name.clone(),
            "--transmitter".into(),
            "127.0.0.1".into(),
            "--stream-port".into(),
            self.stream_port.to_string(),
            "--http-port".into(),
            self.http_port.to_string(),
            "--mqtt".into(),
            format!("mqtt://127.0.0.1:{}", self.mqtt_port),
            "--mic".into(),
            "null".into(),
        ];
        match &self.wav_output {
            Some(path) => a.extend([
                "--output".into(),
                "wav".into(),
                "--output-device".into(),
                path.display().to_string(),
            ]),
            None => a.extend(["--output".into(), "null".into()]),
        }
        if let Some(d) = &self.state_dir {
            a.extend(["--state-dir".into(), d.display().to_string()]);
        }
        if let Some(ms) = self.base_latency_ms {
            let file = self.log_dir.join(format!("{}.profile.json", self.name));
            std::fs::write(
                &file,
                format!(r#"{{"type":"analog","base_latency_ms":{ms}}}"#),
            )
            .unwrap();
            a.extend(["--profile".into(), file.display().to_string()]);
        }
        a.extend(key_args());
        a
    }
}

/// A running `syncstream receiver` with a null microphone and a null (or WAV) output.
pub struct Receiver {
    /// The process.
    pub proc: Proc,
    /// How it was started.
    pub opts: ReceiverOpts,
}

impl Receiver {
    /// Starts a receiver (it connects by itself; watch its status to know when).
    pub fn start(opts: ReceiverOpts) -> Receiver {
        let log = opts.log_dir.join(format!("receiver-{}.log", opts.name));
        Receiver {
            proc: Proc::syncstream(&opts.args(), &log),
            opts,
        }
    }

    /// Starts it again with the same options (after [`Proc::kill9`]).
    pub fn restart(&mut self) {
        self.proc = Proc::syncstream(&self.opts.args(), &self.proc.log);
    }
}

/// The head of a `GET path` request to the transmitter's HTTP server (the headers
/// every request of the tests carries: the API token of the default key), keeping the
/// connection open unless `close`.
pub fn request_head(path: &str, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    let token = super::default_key().api_token();
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: {connection}\r\n\r\n"
    )
}

/// `GET path` on 127.0.0.1:`port` over a fresh HTTP/1.1 connection; the body of a 200.
pub fn http_get(port: u16, path: &str) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(request_head(path, true).as_bytes())
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head")?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head);
    }
    let body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(&body));
    }
    Ok(body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 4 + n).min(b.len())..];
    }
    out
}

/// Polls `f` until it returns `Some` or `deadline` passes (every 50 ms).
pub fn poll<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
