//! A real Snapcast server (Debian 12's `snapserver`, 0.26) private to one test: its own
//! config, loopback ports nobody else uses, a fresh data dir, and `file://` sources of
//! raw PCM that it loops. Killed, and its files removed, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// One stream of the server.
#[derive(Debug, Clone)]
pub struct SnapSource {
    /// The stream's name (`name=`; the first source is the default stream).
    pub name: String,
    /// Raw interleaved s16le stereo at 48 kHz (see [`write_pcm_s16`]).
    pub file: PathBuf,
    /// `pcm`, `flac`, `ogg` or `opus`.
    pub codec: String,
}

/// A running snapserver.
pub struct Snapserver {
    child: Child,
    dir: tempfile::TempDir,
    /// The binary stream port (clients).
    pub stream_port: u16,
    /// The JSON-RPC port over TCP (newline-delimited).
    pub tcp_port: u16,
    /// The HTTP port (`POST /jsonrpc`).
    pub http_port: u16,
}

impl Drop for Snapserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `snapserver` can run here.
pub fn have_snapserver() -> bool {
    Command::new("snapserver")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Writes interleaved stereo f32 samples (−1..1) as raw s16le, the format a
/// `file://` source with `sampleformat=48000:16:2` reads.
///
/// Errors: the file cannot be written (named).
pub fn write_pcm_s16(path: &Path, interleaved: &[f32]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = interleaved
        .iter()
        .flat_map(|v| ((v.clamp(-1.0, 1.0) * 32_767.0).round() as i16).to_le_bytes())
        .collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

impl Snapserver {
    /// Starts a server with `sources` (at least one), a buffer of `buffer_ms` and 20 ms
    /// chunks, and waits (bounded, 10 s) until its stream and HTTP ports accept
    /// connections.
    ///
    /// Errors: snapserver cannot be started, exits, or does not listen in time (the
    /// error has its log).
    pub fn start(sources: &[SnapSource], buffer_ms: u32) -> anyhow::Result<Snapserver> {
        if sources.is_empty() {
            bail!("a snapserver needs at least one source");
        }
        let dir = tempfile::Builder::new()
            .prefix("ss-snapserver-")
            .tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let (stream_port, tcp_port, http_port) = (free_port(), free_port(), free_port());
        let mut config = format!(
            "[server]\nthreads = 1\ndatadir = {data}\n\
             [http]\nenabled = true\nbind_to_address = 127.0.0.1\nport = {http_port}\n\
             [tcp]\nenabled = true\nbind_to_address = 127.0.0.1\nport = {tcp_port}\n\
             [stream]\nbind_to_address = 127.0.0.1\nport = {stream_port}\n\
             buffer = {buffer_ms}\nchunk_ms = 20\nsampleformat = 48000:16:2\n",
            data = data.display(),
        );
        for s in sources {
            config.push_str(&format!(
                "source = file://{}?name={}&sampleformat=48000:16:2&codec={}\n",
                s.file.display(),
                s.name,
                s.codec
            ));
        }
        config.push_str(&format!(
            "[logging]\nsink = file:{}\nfilter = *:info\n",
            dir.path().join("server.log").display()
        ));
        let conf_path = dir.path().join("snapserver.conf");
        std::fs::write(&conf_path, config)?;
        let child = Command::new("snapserver")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting snapserver (Debian: apt-get install snapserver)")?;
        let mut server = Snapserver {
            child,
            dir,
            stream_port,
            tcp_port,
            http_port,
        };
        server.wait_listening(stream_port)?;
        server.wait_listening(http_port)?;
        Ok(server)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Waits until `port` accepts connections, at most 10 s.
    fn wait_listening(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("snapserver exited ({status}); its log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "snapserver: port {port} not listening after 10 s; its log:\n{}",
                    self.log()
                );
            }
            // Poll interval of a bounded readiness loop (not a synchronisation sleep).
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
