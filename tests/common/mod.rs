//! Helpers shared by the end-to-end tests: real brokers and free ports.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the embedded rumqttd broker on a free port, waits until it accepts
/// connections and returns the port.
pub fn embedded_broker() -> u16 {
    let port = free_port();
    syncstream_transmitter::broker::start_embedded_broker(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        port,
    )))
    .unwrap();
    assert!(wait_for_port(port, Duration::from_secs(10)));
    port
}

/// Waits until something accepts TCP connections on `port` (bounded polling).
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A mosquitto broker on a free port, killed on drop.
pub struct Mosquitto {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` (must be installed: `.ci/run` installs it).
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "mosquitto did not start on port {port}"
        );
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clip from the data folder beside the project (`../shared/audio`), or the demo
/// clip shipped in the repository when that folder is absent.
pub fn clip(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/audio").join(name);
    if shared.exists() {
        shared
    } else {
        root.join("assets/audio/battle-orchestral-44k1.ogg")
    }
}

/// A TCP proxy on loopback that adds network jitter and can cut its connections: each
/// chunk read from either side is forwarded `delay + extra` later, in order (like TCP
/// behind a queue), where `extra` is U(0, jitter) for 30 % of chunks (a queue burst) and
/// U(0, jitter / 20) otherwise. It runs on OS threads with precise sleeps, so the delays
/// it adds are what it says (an async timer would round them to whole milliseconds).
pub struct JitterProxy {
    /// Port to connect to.
    pub port: u16,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl JitterProxy {
    /// Starts a proxy to `target`.
    pub async fn start(
        target: std::net::SocketAddr,
        delay_ms: f64,
        jitter_ms: f64,
        seed: u64,
    ) -> JitterProxy {
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let open2 = open.clone();
        std::thread::spawn(move || {
            let mut n = seed;
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                n = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
                {
                    let mut o = open2.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(server.try_clone().unwrap());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, s2, delay_ms, jitter_ms, n));
                std::thread::spawn(move || pipe(server, c2, delay_ms, jitter_ms, n ^ 0xABCD));
            }
        });
        JitterProxy { port, open }
    }

    /// Drops every connection open now (new ones are accepted again).
    pub fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    delay_ms: f64,
    jitter_ms: f64,
    seed: u64,
) {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        while let Ok((at, bytes)) = rx.recv() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let mut x = seed | 1;
    let mut last = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let burst = x % 10 < 3;
        let extra = if burst {
            u * jitter_ms
        } else {
            u * jitter_ms / 20.0
        };
        let at = (Instant::now() + Duration::from_secs_f64((delay_ms + extra) / 1000.0)).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}
