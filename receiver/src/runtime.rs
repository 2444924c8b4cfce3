//! The real receiver: a [`ReceiverNode`] driven by tokio, with the stream over TCP,
//! MQTT through rumqttc and source windows over HTTP (reqwest).
//!
//! One task owns the node and handles every event in turn (no lock is shared with
//! anything, least of all the audio callbacks). Beside it: the stream transport
//! (connects, reconnects with backoff 0.2 s doubling to 2 s, drops a connection that
//! is silent for [`STREAM_READ_TIMEOUT`]), the MQTT event loop, one task per source
//! window fetch and a blocking task per estimate.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rumqttc::QoS;
use syncstream_audio::{Microphone, Sink};
use syncstream_protocol::auth::StreamAuth;
use syncstream_protocol::mqtt::{self, BrokerUrl};
use syncstream_protocol::wire::{Frame, MAX_FRAME_BYTES};
use syncstream_shared::profile::DeviceProfile;
use syncstream_shared::time::{Clock, STREAM_SAMPLE_RATE};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};

use crate::drift::DriftConfig;
use crate::node::{
    Job, JobDone, NodeConfig, NodeSnapshot, PersistedState, ReceiverIo, ReceiverNode, Window,
    WindowRequest,
};
use crate::output::{fixed_output, OpenOutput, OutputState, OutputSupervisor};
use crate::realtime;

/// A stream connection on which nothing arrives for this long is dropped (audio comes
/// every 20 ms).
pub const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before reconnecting the stream; it doubles after every failed attempt.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts (a transmitter that comes back is found
/// within this long).
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a source-window request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Device name (MQTT topics, status).
    pub device: String,
    /// Transmitter host.
    pub transmitter_host: String,
    /// Transmitter stream port.
    pub stream_port: u16,
    /// Transmitter HTTP port.
    pub http_port: u16,
    /// MQTT broker; `None`: no MQTT (a receiver playing from a Snapcast server can do
    /// without: it corrects itself).
    pub broker: Option<BrokerUrl>,
    /// Play from this Snapcast server's stream port (`HOST:PORT`) instead of the
    /// transmitter (see [`crate::snapcast`]); the transmitter fields are then unused.
    pub snapserver: Option<String>,
    /// Device profile (initial offset = its base latency).
    pub profile: DeviceProfile,
    /// Drift detector settings.
    pub drift: DriftConfig,
    /// Folder where the receiver keeps its state across restarts (its last offset, in
    /// `<device>.state.json`); `None`: nothing is kept.
    pub state_dir: Option<std::path::PathBuf>,
    /// The pairing key (the transmitter's): the stream handshake, the MQTT login (as
    /// the device name, unless `broker` names a user) and the source windows' API
    /// token all derive from it (see [`syncstream_protocol::auth`]).
    pub key: syncstream_protocol::auth::PairingKey,
    /// Spoken announcements: the text-to-speech program, and whether to announce at
    /// start-up (see [`crate::voice`]).
    pub voice: crate::voice::VoiceConfig,
}

/// A running receiver; dropping it stops the audio devices and the tasks.
pub struct Receiver {
    snapshot: watch::Receiver<NodeSnapshot>,
    output: OutputSupervisor,
    mic: Box<dyn Microphone>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The node's events (button presses go in here).
    events: mpsc::UnboundedSender<Event>,
    clock: Arc<dyn Clock>,
    gpio: Option<crate::gpio::GpioDriver>,
}

impl Receiver {
    /// What the receiver shows now (updated every 100 ms).
    pub fn snapshot(&self) -> NodeSnapshot {
        self.snapshot.borrow().clone()
    }

    /// The snapshot as it changes (every 100 ms at most).
    pub fn watch(&self) -> watch::Receiver<NodeSnapshot> {
        self.snapshot.clone()
    }

    /// Whether the receiver is online and playing (streaming, and its status says
    /// `playing`, or `muted`: muted by the user, it plays silence in sync), for health
    /// checks; the closure can be called from any thread.
    pub fn health_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let snapshot = self.snapshot.clone();
        move || {
            let s = snapshot.borrow();
            s.connected && (s.state == "playing" || s.state == "muted")
        }
    }

    /// Starts the status LED and button on `backend` (see [`crate::gpio`]): the LED
    /// follows the node's snapshot, a press is handed to the node's task
    /// ([`crate::gpio::apply_press`]). The driver runs on its own thread until the
    /// receiver stops.
    ///
    /// Errors: the driver's thread cannot be started.
    pub fn start_gpio(&mut self, backend: Box<dyn crate::gpio::GpioBackend>) -> anyhow::Result<()> {
        let events = self.events.clone();
        self.gpio = Some(
            crate::gpio::GpioDriver::spawn(
                backend,
                self.snapshot.clone(),
                self.clock.clone(),
                Box::new(move |p| {
                    let _ = events.send(Event::Button(p));
                }),
            )
            .context("starting the GPIO driver")?,
        );
        Ok(())
    }

    /// Stops audio and background tasks.
    pub fn stop(&mut self) {
        self.gpio = None;
        self.output.stop();
        let _ = self.mic.stop();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Events for the node's task.
enum Event {
    StreamUp(mpsc::Sender<Bytes>),
    /// A frame and the local time it arrived, µs (stamped by the transport, next to
    /// the socket: that is the t4 of a clock-sync answer).
    StreamFrame(Bytes, i64),
    StreamDown(String),
    /// The clock connection is up: its write half, written to directly by the node's
    /// task (a request's t1 is stamped right before its bytes go out).
    ClockUp(tokio::net::tcp::OwnedWriteHalf),
    ClockFrame(Bytes, i64),
    ClockDown,
    /// An event of the Snapcast connection and the local time it was handed on, µs.
    Snap(crate::snapcast::Event, i64),
    /// The Snapcast connection ended, and why.
    SnapDown(String),
    MqttConnected,
    MqttMessage(String, Bytes),
    Window(u64, Result<Window, String>),
    JobDone(JobDone),
    /// The output supervisor's news.
    Output(OutputState),
    /// A press of the GPIO button.
    Button(crate::gpio::Press),
}

/// Instructions for the stream transport.
enum StreamCtl {
    Reset { retry_after: Duration },
}

/// The node's [`ReceiverIo`] on tokio.
struct TokioIo {
    /// Where [`ReceiverIo::persist`] writes.
    state_file: Option<std::path::PathBuf>,
    /// Where a pushed profile is kept ([`pushed_profile_path`]).
    profile_file: Option<std::path::PathBuf>,
    stream_out: Option<mpsc::Sender<Bytes>>,
    clock_out: Option<tokio::net::tcp::OwnedWriteHalf>,
    stream_ctl: mpsc::UnboundedSender<StreamCtl>,
    /// `None` without a broker: publications are dropped.
    mqtt: Option<rumqttc::AsyncClient>,
    http: reqwest::Client,
    http_base: String,
    events: mpsc::UnboundedSender<Event>,
}

impl ReceiverIo for TokioIo {
    fn stream_send(&mut self, frame: Frame) {
        let Some(out) = &self.stream_out else { return };
        match frame.encode() {
            Ok(bytes) => {
                if out.try_send(Bytes::from(bytes)).is_err() {
                    debug!("stream writer busy; frame dropped");
                }
            }
            Err(e) => warn!("cannot encode a frame: {e}"),
        }
    }

    fn clock_send(&mut self, frame: Frame) {
        let Ok(body) = frame.encode() else { return };
        if let Some(w) = &self.clock_out {
            // Length-prefixed, written at once without waiting: a request is 20 bytes,
            // so a socket that cannot take it whole is broken (and is dropped).
            let mut bytes = Vec::with_capacity(4 + body.len());
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&body);
            match w.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return,
                Ok(_) | Err(_) => {
                    debug!("the clock connection cannot take a request; dropped");
                    self.clock_out = None;
                }
            }
        }
        if let Some(out) = &self.stream_out {
            let _ = out.try_send(Bytes::from(body));
        }
    }

    fn stream_reset(&mut self, reason: &str, retry_after_us: i64) {
        debug!("resetting the stream: {reason}");
        self.stream_out = None;
        let _ = self.stream_ctl.send(StreamCtl::Reset {
            retry_after: Duration::from_micros(retry_after_us.max(0) as u64),
        });
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        let Some(mqtt) = &self.mqtt else { return };
        if let Err(e) = mqtt.try_publish(topic.clone(), QoS::AtLeastOnce, retain, payload) {
            debug!("cannot publish on {topic}: {e}");
        }
    }

    fn fetch_window(&mut self, r: WindowRequest) {
        let url = format!(
            "{}/api/v1/window?stream={}&start_us={}&duration_ms={}",
            self.http_base, r.stream, r.start_us, r.duration_ms
        );
        let http = self.http.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = fetch_window(&http, &url, r.duration_ms).await;
            let _ = events.send(Event::Window(r.id, result));
        });
    }

    fn persist(&mut self, state: &PersistedState) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(state) else {
            return;
        };
        // Off the node's task: a slow disk must not stall it.
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    warn!("cannot keep the receiver's state in {}: {e}", dir.display());
                    return;
                }
            }
            if let Err(e) = syncstream_shared::fsutil::write_atomic(&path, &bytes) {
                warn!("cannot keep the receiver's state: {e:#}");
            }
        });
    }

    fn keep_profile(&mut self, profile: &syncstream_shared::profile::DeviceProfile) {
        let Some(path) = self.profile_file.clone() else {
            return;
        };
        let profile = profile.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match profile.save(&path) {
                Ok(()) => info!("pushed profile kept in {}", path.display()),
                Err(e) => warn!("cannot keep the pushed profile: {e}"),
            }
        });
    }

    fn run_job(&mut self, job: Job) {
        let events = self.events.clone();
        tokio::spawn(async move {
            match tokio::task::spawn_blocking(move || job.run()).await {
                Ok(done) => {
                    let _ = events.send(Event::JobDone(done));
                }
                Err(e) => warn!("a measurement task failed: {e}"),
            }
        });
    }
}

/// `GET url` for a window of `duration_ms`: the body is little-endian f32 samples, the
/// `x-syncstream-start-us` header the PTS of the first. Bounded: a body larger than
/// the duration asks for is refused.
async fn fetch_window(
    http: &reqwest::Client,
    url: &str,
    duration_ms: u64,
) -> Result<Window, String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "GET {url}: {status} {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let first_pts_us: i64 = resp
        .headers()
        .get("x-syncstream-start-us")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("GET {url}: no valid x-syncstream-start-us header"))?;
    let max_bytes = (duration_ms + 10) * STREAM_SAMPLE_RATE as u64 / 1000 * 4;
    if resp.content_length().is_some_and(|n| n > max_bytes) {
        return Err(format!("GET {url}: body larger than {max_bytes} bytes"));
    }
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() as u64 > max_bytes || body.len() % 4 != 0 {
        return Err(format!(
            "GET {url}: a body of {} bytes is not the window asked for",
            body.len()
        ));
    }
    Ok(Window {
        first_pts_us,
        samples: body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    })
}

/// Loads a receiver's kept state; a missing, unreadable or malformed file is `None`
/// (logged when it exists but cannot be used).
fn load_state(path: &std::path::Path) -> Option<PersistedState> {
    let bytes = match syncstream_shared::fsutil::read_capped(path, 64 * 1024) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(
                "cannot read {}: {e}; starting from the profile",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice::<PersistedState>(&bytes) {
        Ok(s) => {
            info!(
                offset_ms = s.offset_ms,
                "starting from the offset kept in {}",
                path.display()
            );
            Some(s)
        }
        Err(e) => {
            warn!(
                "{} is not a receiver state ({e}); starting from the profile",
                path.display()
            );
            None
        }
    }
}

/// A random number for this receiver process (see the stream hello's `instance`).
pub fn process_instance() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// Starts a receiver on the current tokio runtime with `sink` as output and `mic` as
/// microphone; all times are on `clock`. A sink that fails is stopped and started
/// again with backoff (see [`start_with_output`]).
///
/// Errors: an invalid name or profile, or the microphone cannot be started.
pub async fn start(
    cfg: ReceiverConfig,
    sink: Box<dyn Sink>,
    mic: Box<dyn Microphone>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Receiver> {
    start_with_output(cfg, "sink".into(), fixed_output(sink), mic, clock).await
}

/// `<state_dir>/<device>.profile.json`: the last profile pushed to `device` on
/// `syncstream/config`, which `syncstream receiver --state-dir` uses over `--profile`.
pub fn pushed_profile_path(state_dir: &std::path::Path, device: &str) -> std::path::PathBuf {
    state_dir.join(format!("{device}.profile.json"))
}

/// Starts a receiver whose output `open` opens (and reopens, with backoff from 1 s to
/// 30 s, after it fails to open or stops playing: see [`crate::output`]); `label`
/// names the output in logs and the status. The receiver is online on MQTT whether
/// or not its output plays; while it does not, its status is `error` with the reason.
///
/// Errors: an invalid name or profile, or the microphone cannot be started.
pub async fn start_with_output(
    cfg: ReceiverConfig,
    label: String,
    open: OpenOutput,
    mut mic: Box<dyn Microphone>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Receiver> {
    let state_file = cfg
        .state_dir
        .as_ref()
        .map(|d| d.join(format!("{}.state.json", cfg.device)));
    let persisted = state_file.as_deref().and_then(load_state);
    let (renderer, capturer, control) =
        realtime::engine(cfg.profile.base_latency_ms, mic.sample_rate());
    let mut node = ReceiverNode::new(
        NodeConfig {
            device: cfg.device.clone(),
            instance: process_instance(),
            profile: cfg.profile.clone(),
            drift: cfg.drift.clone(),
            mic_rate_hz: mic.sample_rate(),
            persisted,
            key: cfg.key.clone(),
        },
        control,
        clock.now_us(),
    )
    .map_err(anyhow::Error::msg)?;
    node.set_voice(cfg.voice.clone());
    node.add_xrun_counter(mic.xrun_counter());
    mic.start(capturer.into_capture_fn())
        .context("starting the microphone")?;

    let (events_tx, events_rx) = mpsc::unbounded_channel::<Event>();
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel::<StreamCtl>();
    let mut tasks = Vec::new();
    if let Some(server) = &cfg.snapserver {
        node.play_from_snapserver();
        tasks.push(tokio::spawn(snap_transport(
            crate::snapcast::ConnectionConfig {
                server: server.clone(),
                hello: syncstream_protocol::snapcast::Hello::syncstream(
                    &cfg.device,
                    SNAPCAST_MAC,
                    &cfg.device,
                    env!("CARGO_PKG_VERSION"),
                ),
            },
            events_tx.clone(),
            clock.clone(),
        )));
    } else {
        let addr = format!("{}:{}", cfg.transmitter_host, cfg.stream_port);
        tasks.push(tokio::spawn(stream_transport(
            addr.clone(),
            events_tx.clone(),
            ctl_rx,
            clock.clone(),
        )));
        tasks.push(tokio::spawn(clock_transport(
            addr,
            ClockLogin {
                auth: StreamAuth::new(cfg.key.clone()),
                device: cfg.device.clone(),
                instance: node.instance(),
            },
            events_tx.clone(),
            clock.clone(),
        )));
    }

    let mqtt_client = match &cfg.broker {
        None => None,
        Some(broker) => {
            let broker = broker.clone().with_key(&cfg.key, &cfg.device);
            let (client, eventloop) = mqtt::connect(
                &broker,
                &format!("syncstream-rx-{}", cfg.device),
                Some(node.mqtt_last_will()),
            );
            let events = events_tx.clone();
            let events2 = events_tx.clone();
            let subs = node.mqtt_subscriptions();
            let client2 = client.clone();
            tasks.push(tokio::spawn(async move {
                mqtt::drive(
                    client2,
                    eventloop,
                    subs,
                    |_| {
                        let _ = events.send(Event::MqttConnected);
                    },
                    |p| {
                        let _ =
                            events2.send(Event::MqttMessage(p.topic.clone(), p.payload.clone()));
                    },
                )
                .await
            }));
            Some(client)
        }
    };
    let io = TokioIo {
        state_file,
        profile_file: cfg
            .state_dir
            .as_deref()
            .map(|d| pushed_profile_path(d, &cfg.device)),
        stream_out: None,
        clock_out: None,
        stream_ctl: ctl_tx,
        mqtt: mqtt_client,
        http: reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .default_headers(api_headers(&cfg.key))
            .build()
            .unwrap_or_default(),
        http_base: format!("http://{}:{}", cfg.transmitter_host, cfg.http_port),
        events: events_tx.clone(),
    };
    let (snap_tx, snap_rx) = watch::channel(node.snapshot());
    let output = {
        let snap = snap_rx.clone();
        let events = io.events.clone();
        OutputSupervisor::spawn(
            label,
            open,
            renderer,
            Box::new(move || {
                let s = snap.borrow();
                (s.gain, s.muted)
            }),
            Box::new(move |state| {
                let _ = events.send(Event::Output(state));
            }),
        )
        .context("starting the output supervisor")?
    };
    node.add_xrun_counter(output.xrun_counter());
    tasks.push(tokio::spawn(run_node(
        node,
        io,
        events_rx,
        snap_tx,
        clock.clone(),
    )));
    info!(device = cfg.device, "receiver running");
    Ok(Receiver {
        snapshot: snap_rx,
        output,
        mic,
        tasks,
        events: events_tx,
        clock,
        gpio: None,
    })
}

/// The node's task: every event in turn, and a poll at least every 20 ms.
async fn run_node(
    mut node: ReceiverNode,
    mut io: TokioIo,
    mut events: mpsc::UnboundedReceiver<Event>,
    snapshot: watch::Sender<NodeSnapshot>,
    clock: Arc<dyn Clock>,
) {
    let mut last_snapshot_us: Option<i64> = None;
    loop {
        let now = clock.now_us();
        let wait_us = (node.next_wakeup_us(now) - now).clamp(0, 20_000) as u64;
        let event = tokio::select! {
            e = events.recv() => match e {
                Some(e) => Some(e),
                None => return,
            },
            _ = tokio::time::sleep(Duration::from_micros(wait_us)) => None,
        };
        let now = clock.now_us();
        match event {
            Some(Event::StreamUp(out)) => {
                io.stream_out = Some(out);
                node.on_stream_connected(now, &mut io);
            }
            Some(Event::StreamFrame(bytes, at)) => node.on_stream_frame(&bytes, at, &mut io),
            Some(Event::StreamDown(why)) => {
                io.stream_out = None;
                node.on_stream_closed(now, &why, &mut io);
            }
            Some(Event::ClockUp(out)) => io.clock_out = Some(out),
            Some(Event::ClockFrame(bytes, at)) => node.on_clock_frame(&bytes, at),
            Some(Event::ClockDown) => io.clock_out = None,
            Some(Event::Snap(e, at)) => node.on_snap_event(e, at, &mut io),
            Some(Event::SnapDown(why)) => node.on_snap_closed(now, &why, &mut io),
            Some(Event::MqttConnected) => node.on_mqtt_connected(now, &mut io),
            Some(Event::MqttMessage(topic, payload)) => {
                node.on_mqtt_message(&topic, &payload, now, &mut io)
            }
            Some(Event::Window(id, result)) => node.on_window(id, result, now, &mut io),
            Some(Event::JobDone(done)) => node.on_job_done(done, now, &mut io),
            Some(Event::Output(state)) => node.on_output(state, now, &mut io),
            Some(Event::Button(press)) => crate::gpio::apply_press(&mut node, press, now, &mut io),
            None => {}
        }
        node.poll(clock.now_us(), &mut io);
        if last_snapshot_us.is_none_or(|t| now.saturating_sub(t) >= 100_000) {
            last_snapshot_us = Some(now);
            let _ = snapshot.send(node.snapshot());
        }
    }
}

/// The stream connection: connects, forwards frames both ways, reconnects with backoff.
async fn stream_transport(
    addr: String,
    events: mpsc::UnboundedSender<Event>,
    mut ctl: mpsc::UnboundedReceiver<StreamCtl>,
    clock: Arc<dyn Clock>,
) {
    let mut backoff = Backoff::default();
    loop {
        let started = std::time::Instant::now();
        let (reason, retry_after) = session(&addr, &events, &mut ctl, clock.as_ref()).await;
        if events.send(Event::StreamDown(reason.clone())).is_err() {
            return;
        }
        let wait = backoff.after(started).max(retry_after.unwrap_or_default());
        debug!("stream from {addr}: {reason}; next try in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// The wait before reconnecting: [`RECONNECT_BACKOFF_MIN`], doubling after every
/// attempt up to [`RECONNECT_BACKOFF_MAX`], and back to the minimum after a connection
/// that lasted over 10 s.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(RECONNECT_BACKOFF_MIN)
    }
}

impl Backoff {
    /// The wait after a connection attempt made at `started`.
    fn after(&mut self, started: std::time::Instant) -> Duration {
        if started.elapsed() > Duration::from_secs(10) {
            self.0 = RECONNECT_BACKOFF_MIN;
        }
        let wait = self.0;
        self.0 = (self.0 * 2).min(RECONNECT_BACKOFF_MAX);
        wait
    }
}

/// The MAC address a SyncStream receiver gives a Snapcast server (it has no use for
/// it; the client id is the device name).
pub const SNAPCAST_MAC: &str = "00:00:00:00:00:00";
/// Events of the Snapcast connection waiting for the node's task.
const SNAP_EVENTS: usize = 256;

/// The Snapcast connection: runs it (see [`crate::snapcast::connection::run`]), hands
/// its events on stamped with their local time, reconnects with backoff as the stream
/// transport does.
async fn snap_transport(
    config: crate::snapcast::ConnectionConfig,
    events: mpsc::UnboundedSender<Event>,
    clock: Arc<dyn Clock>,
) {
    let mut backoff = Backoff::default();
    loop {
        let started = std::time::Instant::now();
        let (tx, mut rx) = mpsc::channel(SNAP_EVENTS);
        let connection = crate::snapcast::run(config.clone(), clock.clone(), tx);
        tokio::pin!(connection);
        let error = loop {
            tokio::select! {
                e = &mut connection => break e,
                Some(e) = rx.recv() => {
                    if events.send(Event::Snap(e, clock.now_us())).is_err() {
                        return;
                    }
                }
            }
        };
        while let Ok(e) = rx.try_recv() {
            let _ = events.send(Event::Snap(e, clock.now_us()));
        }
        if events.send(Event::SnapDown(error.to_string())).is_err() {
            return;
        }
        let wait = backoff.after(started);
        debug!(
            "snapcast server {}: {error}; next try in {wait:?}",
            config.server
        );
        tokio::time::sleep(wait).await;
    }
}

/// The clock-sync connection: says its hello, hands its write half to the node's task,
/// stamps every answer with its arrival time; reconnects every 2 s while it cannot
/// connect (clock sync then runs on the stream connection).
/// Who the clock connection logs in as.
struct ClockLogin {
    auth: StreamAuth,
    device: String,
    instance: u64,
}

/// Headers of every request to the transmitter's HTTP API (source windows): its token.
fn api_headers(key: &syncstream_protocol::auth::PairingKey) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.api_token())) {
        h.insert(reqwest::header::AUTHORIZATION, v);
    }
    h
}

/// Writes one length-prefixed frame.
async fn write_frame(w: &mut tokio::net::tcp::OwnedWriteHalf, f: &Frame) -> bool {
    use tokio::io::AsyncWriteExt;
    let Ok(b) = f.encode() else { return false };
    let mut bytes = (b.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&b);
    w.write_all(&bytes).await.is_ok()
}

/// The clock connection's hello and handshake; `Err` says why it failed.
async fn clock_handshake(
    login: &ClockLogin,
    frames: &mut tokio_util::codec::FramedRead<
        tokio::net::tcp::OwnedReadHalf,
        LengthDelimitedCodec,
    >,
    write_half: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Result<(), String> {
    let client_nonce = syncstream_protocol::auth::nonce();
    let hello = Frame::ClockHello {
        protocol_version: syncstream_protocol::wire::PROTOCOL_VERSION,
        device: login.device.clone(),
        instance: login.instance,
        client_nonce,
    };
    if !write_frame(write_half, &hello).await {
        return Err("cannot send the hello".into());
    }
    let first = match tokio::time::timeout(STREAM_READ_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(b))) => b,
        _ => return Err("no answer to the hello".into()),
    };
    match Frame::decode(&first) {
        Ok(Frame::AuthChallenge {
            server_nonce,
            server_proof,
        }) => {
            let answer = login.auth.respond(
                &client_nonce,
                &server_nonce,
                &server_proof,
                &login.device,
                login.instance,
            )?;
            if write_frame(write_half, &answer).await {
                Ok(())
            } else {
                Err("cannot send the handshake answer".into())
            }
        }
        Ok(Frame::Refused { reason }) => Err(format!(
            "refused: {}",
            reason.chars().take(500).collect::<String>()
        )),
        Ok(_) => Err("the transmitter did not answer with a challenge".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn clock_transport(
    addr: String,
    login: ClockLogin,
    events: mpsc::UnboundedSender<Event>,
    clock: Arc<dyn Clock>,
) {
    loop {
        if let Ok(Ok(sock)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await
        {
            let _ = sock.set_nodelay(true);
            let (read_half, mut write_half) = sock.into_split();
            let codec = LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME_BYTES)
                .new_codec();
            let mut stream = tokio_util::codec::FramedRead::new(read_half, codec);
            match clock_handshake(&login, &mut stream, &mut write_half).await {
                Ok(()) => {
                    if events.send(Event::ClockUp(write_half)).is_err() {
                        return;
                    }
                    while let Ok(Some(Ok(bytes))) =
                        tokio::time::timeout(STREAM_READ_TIMEOUT, stream.next()).await
                    {
                        let at = clock.now_us();
                        if events.send(Event::ClockFrame(bytes.freeze(), at)).is_err() {
                            return;
                        }
                    }
                    if events.send(Event::ClockDown).is_err() {
                        return;
                    }
                }
                Err(why) => warn!(device = login.device, "clock connection: {why}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One connection; returns why it ended and how long the node asked to wait.
async fn session(
    addr: &str,
    events: &mpsc::UnboundedSender<Event>,
    ctl: &mut mpsc::UnboundedReceiver<StreamCtl>,
    clock: &dyn Clock,
) -> (String, Option<Duration>) {
    let sock = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return (format!("cannot connect to {addr}: {e}"), None),
        Err(_) => return (format!("connecting to {addr} timed out"), None),
    };
    let _ = sock.set_nodelay(true);
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec();
    let (mut sink, mut stream) = Framed::new(sock, codec).split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(256);
    while ctl.try_recv().is_ok() {} // a reset meant for the previous connection
    if events.send(Event::StreamUp(out_tx)).is_err() {
        return ("receiver stopped".into(), None);
    }
    loop {
        tokio::select! {
            frame = tokio::time::timeout(STREAM_READ_TIMEOUT, stream.next()) => match frame {
                Ok(Some(Ok(bytes))) => {
                    let at = clock.now_us();
                    if events.send(Event::StreamFrame(bytes.freeze(), at)).is_err() {
                        return ("receiver stopped".into(), None);
                    }
                }
                Ok(Some(Err(e))) => return (format!("stream from {addr}: {e}"), None),
                Ok(None) => return ("the transmitter closed the stream".into(), None),
                Err(_) => return (format!("nothing from {addr} for {STREAM_READ_TIMEOUT:?}"), None),
            },
            out = out_rx.recv() => match out {
                Some(bytes) => {
                    if let Err(e) = sink.send(bytes).await {
                        return (format!("stream to {addr}: {e}"), None);
                    }
                }
                None => return ("receiver stopped".into(), None),
            },
            c = ctl.recv() => match c {
                Some(StreamCtl::Reset { retry_after }) => {
                    return ("reset by the receiver".into(), Some(retry_after))
                }
                None => return ("receiver stopped".into(), None),
            },
        }
    }
}
