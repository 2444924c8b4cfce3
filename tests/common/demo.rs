//! `syncstream demo` as a process, with helpers to reach its API and broker: shared by
//! the control-API and dashboard tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;

/// A running `syncstream demo`; killed on drop.
pub struct DemoProcess {
    child: Option<Child>,
    /// Its HTTP port (dashboard, API).
    pub http: u16,
    /// Its embedded broker's port.
    pub mqtt: u16,
    /// When it was started.
    pub started: Instant,
    /// Its output (stdout and stderr).
    pub log: PathBuf,
    /// Its pairing key (`pairing.key` in its `--state-dir`, else the default file).
    pub key: syncstream_protocol::auth::PairingKey,
}

impl DemoProcess {
    /// Starts `syncstream demo --quiet --http-port <free>` with `extra` arguments,
    /// logging into `dir`, and waits (bounded) until the API answers and the broker's
    /// port is printed.
    pub fn start(dir: &Path, extra: &[&str]) -> DemoProcess {
        Self::start_on(dir, super::free_port(), extra)
    }

    /// As [`DemoProcess::start`], on HTTP port `http`.
    pub fn start_on(dir: &Path, http: u16, extra: &[&str]) -> DemoProcess {
        let key_file = extra
            .iter()
            .position(|a| *a == "--state-dir")
            .and_then(|i| extra.get(i + 1))
            .map(|d| Path::new(d).join(syncstream_protocol::auth::KEY_FILE_NAME))
            .unwrap_or_else(syncstream_protocol::auth::default_key_file);
        // Made before the demo starts (it would make the same), so it is known now.
        let (key, _) = syncstream_protocol::auth::PairingKey::load_or_create(&key_file).unwrap();
        let log = dir.join(format!("demo-{http}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_syncstream"))
            .arg("demo")
            .args(["--quiet", "--http-port", &http.to_string()])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut me = DemoProcess {
            child: Some(child),
            http,
            mqtt: 0,
            started,
            log,
            key,
        };
        // The demo prints "dashboard: http://127.0.0.1:P/#token=T (API token T; MQTT broker
        // mqtt://127.0.0.1:M)".
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&me.log).unwrap_or_default();
            if let Some(m) = text
                .split("MQTT broker mqtt://127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .and_then(|p| p.parse().ok())
            {
                me.mqtt = m;
                break;
            }
            if let Some(Ok(Some(status))) = me.child.as_mut().map(|c| c.try_wait()) {
                panic!("the demo exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "the demo did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(super::wait_for_port(http, Duration::from_secs(20)));
        me
    }

    /// Base URL of the API.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1", self.http)
    }

    /// An HTTP client that sends the API token.
    pub fn http_client(&self) -> reqwest::Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.key.api_token()).parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap()
    }

    /// Seconds since the process started.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Stops it with SIGINT (it writes its report) and waits for it (bounded).
    pub fn interrupt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the demo did not stop on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it at once (a transmitter that dies), and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The demo's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it gives `Some` or `timeout` passes (then panics with `what`).
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP answer: status and JSON body (`Value::Null` when not JSON).
pub async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = http.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Messages seen: (topic, payload) in arrival order.
pub type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An MQTT client that records every message on `syncstream/#` (retained ones too).
pub struct Spy {
    /// The client (to publish).
    pub client: AsyncClient,
    /// (topic, payload) in arrival order.
    pub seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Spy {
    /// Connects to the broker on `port` (logging in with `key`) and subscribes.
    pub async fn start(port: u16, key: &syncstream_protocol::auth::PairingKey) -> Spy {
        let mut opts = super::mqtt_options(&format!("spy-{}", super::free_port()), port, key);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(opts, 100);
        client
            .subscribe("syncstream/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => s2
                        .lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec())),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Spy { client, seen, task }
    }

    /// The last JSON payload on `topic`.
    pub fn last(&self, topic: &str) -> Option<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(t, _)| t == topic)
            .and_then(|(_, p)| serde_json::from_slice(p).ok())
    }

    /// Every JSON payload on `topic`, oldest first.
    pub fn all(&self, topic: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .filter_map(|(_, p)| serde_json::from_slice(p).ok())
            .collect()
    }

    /// Publishes `payload` on `topic` (QoS 1).
    pub async fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }
}

impl Drop for Spy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
