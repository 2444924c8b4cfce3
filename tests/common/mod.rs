//! Helpers shared by the end-to-end tests: real brokers, free ports, the demo as a
//! process ([`demo`]).

#![allow(dead_code)]

pub mod demo;
pub mod procs;
pub mod watch;

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

/// Starts the embedded rumqttd broker on a free port without logins (the tests of
/// what travels over MQTT; the login itself is tested in tests/security.rs), waits
/// until it accepts connections and returns the port.
pub fn embedded_broker() -> u16 {
    let port = free_port();
    syncstream_transmitter::broker::start_embedded_broker(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        None,
    )
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
        Self::start_on(free_port())
    }

    /// Starts `mosquitto` on `port`, without persistence (a restart loses every
    /// retained message).
    pub fn start_on(port: u16) -> Mosquitto {
        Self::start_on_with(port, |port| {
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        })
    }

    /// Starts `mosquitto` with the configuration `config(port)` (on a free port).
    pub fn start_with(config: impl Fn(u16) -> String) -> Mosquitto {
        Self::start_on_with(free_port(), config)
    }

    /// Starts `mosquitto` on `port` with the configuration `config(port)`.
    pub fn start_on_with(port: u16, config: impl Fn(u16) -> String) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config(port)).unwrap();
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

    /// Kills it (SIGKILL) and starts a new one on the same port: every connection
    /// drops and the retained messages are gone. `down` is how long it stays away.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        *self = Self::start_on(self.port);
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

/// A TCP proxy on loopback that adds network jitter and can cut its connections: the
/// simulator's delay model (`syncstream_sim::network`) on real sockets, as
/// `syncstream demo --scenario` uses it.
pub struct JitterProxy {
    /// Port to connect to.
    pub port: u16,
    proxy: syncstream_sim::net_proxy::NetProxy,
}

impl JitterProxy {
    /// Starts a proxy to `target`: each chunk is forwarded `delay + extra` later, in
    /// order, where `extra` is U(0, jitter) for 30 % of chunks and U(0, jitter / 20)
    /// otherwise.
    pub async fn start(
        target: std::net::SocketAddr,
        delay_ms: f64,
        jitter_ms: f64,
        seed: u64,
    ) -> JitterProxy {
        let net = syncstream_sim::scenario::NetworkSpec {
            delay_ms,
            jitter_ms,
        };
        let proxy = syncstream_sim::net_proxy::NetProxy::start(target, &net, seed).unwrap();
        JitterProxy {
            port: proxy.addr().port(),
            proxy,
        }
    }

    /// Drops every connection open now (new ones are accepted again).
    pub fn cut(&self) {
        self.proxy.cut();
    }

    /// A network outage of `d` from now: nothing crosses in either direction until it
    /// ends (connections stay open unless an end gives up on them).
    pub fn hold_for(&self, d: Duration) {
        self.proxy.hold_for(d);
    }
}

/// The pairing key of in-process systems in tests (processes started by the tests
/// use the default key file, as a user's would).
pub fn test_key() -> syncstream_protocol::auth::PairingKey {
    syncstream_protocol::auth::PairingKey::parse(&"7e".repeat(32)).unwrap()
}

/// The default pairing key file's key (created if missing), as the `syncstream`
/// processes a test starts find it: a test creates it before it starts them, so no
/// receiver starts before its transmitter made the key.
pub fn default_key() -> syncstream_protocol::auth::PairingKey {
    let path = syncstream_protocol::auth::default_key_file();
    syncstream_protocol::auth::PairingKey::load_or_create(&path)
        .unwrap()
        .0
}

/// MQTT options for a test's own client of a broker whose logins come from `key`
/// (user `test-observer`).
pub fn mqtt_options(
    client_id: &str,
    port: u16,
    key: &syncstream_protocol::auth::PairingKey,
) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_credentials("test-observer", key.mqtt_password("test-observer"));
    o
}
