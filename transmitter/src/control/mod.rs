//! The control plane: groups (zones) and the stream each plays, device volumes, mutes
//! and manual adjustments, calibration runs, and the live picture of every device,
//! behind two doors that lead to the same state: the REST API and WebSocket
//! ([`api`], [`ws`]) and MQTT ([`mqtt`]). A change through either is applied here
//! once (checked whole first: a refused request changes nothing), persisted
//! ([`persist`]), published on MQTT (retained `syncstream/settings/<device>`,
//! `syncstream/groups`, `syncstream/streams`, offsets) and sent to WebSocket clients.
//!
//! The same state is published for Home Assistant ([`homeassistant`]: discovery
//! configs, `syncstream/state/<device>`, `syncstream/summary`), and the profiles of
//! `--profiles-dir` are pushed retained on `syncstream/config` ([`profile_push`]).
//!
//! Modules: [`state`] (the state, without I/O), [`persist`] (the state file),
//! [`sync_stats`] (the sync summary), [`calibrate`] (calibration progress), [`api`],
//! [`ws`], [`mqtt`], [`homeassistant`], [`profile_push`], [`error`].

pub mod api;
pub mod calibrate;
pub mod error;
pub mod homeassistant;
pub mod mqtt;
pub mod persist;
pub mod profile_push;
pub mod state;
pub mod sync_stats;
pub mod ws;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rumqttc::QoS;
use serde_json::{json, Value};
use syncstream_protocol::messages::{
    parse, topics, BufferOffset, CalibrationResult, Command, ConfigPush, DriftReport, GroupRequest,
    Status, TestToneRequest,
};
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_shared::names::{check_device_name, is_valid_device_name};
use syncstream_shared::time::Clock;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::controller::{LockState, SyncController};
use crate::source::SourceOptions;
use crate::stream_server::Directory;
use crate::streams::{StreamError, StreamSet};
use calibrate::{CalibrateRequest, Calibration};
use error::ApiError;
use persist::Persister;
use state::{ControlState, StoredStream};

/// Largest MQTT payload handled, bytes.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Events buffered per WebSocket client before it is sent a new snapshot.
pub const EVENT_BUFFER: usize = 1024;

/// What the control plane needs to start.
pub struct ControlConfig {
    /// The broker (for the calibrator's own connection).
    pub broker: BrokerUrl,
    /// Where the state file lives (`None`: nothing persists).
    pub state_dir: Option<PathBuf>,
    /// Device profiles a calibration updates.
    pub profiles_dir: Option<PathBuf>,
    /// Options for streams added at runtime.
    pub source_options: SourceOptions,
    /// Home Assistant MQTT discovery (`None`: off).
    pub homeassistant: Option<homeassistant::DiscoveryOptions>,
}

/// What the control plane last published for Home Assistant and the config push,
/// so that only changes are sent.
#[derive(Default)]
struct Published {
    discovery: homeassistant::Published,
    /// The facts the discovery configs were made from.
    facts: Option<DiscoveryFacts>,
    /// `syncstream/state/<device>` payloads.
    states: BTreeMap<String, Vec<u8>>,
    summary: Option<Vec<u8>>,
    profiles: Option<profile_push::ProfilePush>,
}

/// Everything the discovery configs depend on.
#[derive(PartialEq)]
struct DiscoveryFacts {
    receivers: Vec<homeassistant::ReceiverFacts>,
    groups: BTreeMap<String, String>,
    streams: Vec<String>,
}

/// The control plane (see the module docs).
pub struct ControlPlane {
    state: Mutex<ControlState>,
    controller: Arc<Mutex<SyncController>>,
    link: Arc<crate::mqtt::ControllerLink>,
    streams: Arc<StreamSet>,
    dir: Arc<Directory>,
    mqtt: rumqttc::AsyncClient,
    events: broadcast::Sender<Arc<str>>,
    persister: Persister,
    clock: Arc<dyn Clock>,
    calibration: Mutex<Calibration>,
    cfg: ControlConfig,
    published: Mutex<Published>,
    /// Retained messages for Home Assistant and the config push, published in order
    /// by one task (thousands at once after Home Assistant restarts).
    retained: tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>,
    ticks: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ControlPlane {
    /// A control plane publishing through `mqtt`, with the state loaded from
    /// `cfg.state_dir` (streams added at runtime are reopened; groups whose stream is
    /// gone play the default stream), the controller's manual adjustments restored
    /// and the stream routes set.
    ///
    /// Errors: the state directory cannot be created.
    pub fn new(
        cfg: ControlConfig,
        controller: Arc<Mutex<SyncController>>,
        link: Arc<crate::mqtt::ControllerLink>,
        streams: Arc<StreamSet>,
        dir: Arc<Directory>,
        mqtt: rumqttc::AsyncClient,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Self>> {
        let persister = Persister::new(cfg.state_dir.as_deref())?;
        let mut settings = persister.load();
        for s in settings.streams.clone() {
            if let Err(e) = open_stream(&streams, &s.name, &s.uri, &cfg.source_options) {
                warn!("stream {} from the state file: {}", s.name, e.message);
                settings.streams.retain(|x| x.name != s.name);
            }
        }
        for (name, g) in settings.groups.iter_mut() {
            if !streams.contains(&g.stream) {
                warn!(
                    "group {name} played stream {}, which is gone; it plays the default",
                    g.stream
                );
                g.stream = crate::stream_server::DEFAULT_STREAM.into();
            }
        }
        {
            let mut c = lock(&controller);
            for (d, s) in &settings.devices {
                if s.manual_adjust_ms != 0.0 {
                    let _ = c.set_manual_adjust(d, s.manual_adjust_ms);
                }
            }
        }
        let state = ControlState::new(settings);
        dir.set_routes(state.routes());
        if let Some(p) = persister.path() {
            info!("control state in {}", p.display());
        }
        let (retained, mut queue) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = mqtt.clone();
            rt.spawn(async move {
                while let Some((topic, payload)) = queue.recv().await {
                    if let Err(e) = client
                        .publish(topic.clone(), QoS::AtLeastOnce, true, payload)
                        .await
                    {
                        warn!("cannot publish on {topic}: {e}");
                    }
                }
            });
        }
        let published = Published {
            profiles: cfg.profiles_dir.clone().map(profile_push::ProfilePush::new),
            ..Default::default()
        };
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            controller,
            link,
            streams,
            dir,
            mqtt,
            events: broadcast::channel(EVENT_BUFFER).0,
            persister,
            clock,
            calibration: Mutex::new(Calibration::default()),
            cfg,
            published: Mutex::new(published),
            retained,
            ticks: AtomicU64::new(0),
        }))
    }

    /// Transmitter time now, µs.
    pub fn now_us(&self) -> i64 {
        self.clock.now_us()
    }

    /// Events for a WebSocket client (JSON texts).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }

    fn emit(&self, event: Value) {
        let _ = self.events.send(Arc::from(event.to_string()));
    }

    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) {
        if let Err(e) = self
            .mqtt
            .try_publish(topic.clone(), QoS::AtLeastOnce, retain, payload)
        {
            warn!("cannot publish on {topic}: {e}");
        }
    }

    fn publish_json(&self, topic: String, v: &impl serde::Serialize, retain: bool) {
        match serde_json::to_vec(v) {
            Ok(p) => self.publish(topic, p, retain),
            Err(e) => warn!("cannot encode for {topic}: {e}"),
        }
    }

    fn save(&self, state: &ControlState) {
        if let Err(e) = self.persister.save(&state.settings) {
            warn!("cannot save the control state: {e:#}");
        }
    }

    fn locked(&self, device: &str) -> bool {
        lock(&self.controller)
            .device(device)
            .is_some_and(|d| d.state == LockState::Tracking)
    }

    fn device_value(&self, state: &ControlState, device: &str) -> Value {
        state.device_json(device, self.now_us(), self.locked(device))
    }

    fn emit_device(&self, state: &ControlState, device: &str) {
        self.emit(json!({ "type": "device", "device": self.device_value(state, device) }));
    }

    fn known(&self, state: &ControlState, device: &str) -> Result<(), ApiError> {
        if state.knows(device) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!(
                "no device named '{}'",
                device.chars().take(64).collect::<String>()
            )))
        }
    }

    // ---- reading ---------------------------------------------------------------

    /// `GET /api/v1/devices`.
    pub fn devices_json(&self) -> Value {
        let state = lock(&self.state);
        let devices: Vec<Value> = state
            .devices()
            .iter()
            .map(|d| self.device_value(&state, d))
            .collect();
        json!({ "devices": devices })
    }

    /// `GET /api/v1/devices/{name}`. Errors: 404.
    pub fn device_json(&self, device: &str) -> Result<Value, ApiError> {
        let state = lock(&self.state);
        self.known(&state, device)?;
        Ok(self.device_value(&state, device))
    }

    /// `GET /api/v1/groups`.
    pub fn groups_json(&self) -> Value {
        lock(&self.state).groups_json()
    }

    /// `GET /api/v1/streams`.
    pub fn streams_json(&self) -> Value {
        let state = lock(&self.state);
        let streams: Vec<Value> = self
            .streams
            .list()
            .into_iter()
            .map(|s| {
                let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
                v["groups"] = json!(state.groups_playing(&s.name));
                v
            })
            .collect();
        json!({ "streams": streams })
    }

    /// `GET /api/v1/sync`.
    pub fn sync_json(&self) -> Value {
        sync_stats::sync_summary(&lock(&self.state), self.now_us())
    }

    /// `GET /api/v1/calibrate`.
    pub fn calibration_json(&self) -> Value {
        serde_json::to_value(&*lock(&self.calibration)).unwrap_or(Value::Null)
    }

    /// The WebSocket's first message: everything, plus the last minutes of reports
    /// per device (for the heatmap and drift plots).
    pub fn snapshot_json(&self) -> Value {
        let history: serde_json::Map<String, Value> = {
            let state = lock(&self.state);
            let since = self.now_us() - HEATMAP_SPAN_US;
            state
                .live
                .iter()
                .map(|(d, l)| {
                    let pts: Vec<_> = l.history.iter().filter(|p| p.ts_us >= since).collect();
                    (d.clone(), json!(pts))
                })
                .collect()
        };
        json!({
            "type": "snapshot",
            "now_us": self.now_us(),
            "devices": self.devices_json()["devices"],
            "groups": self.groups_json()["groups"],
            "streams": self.streams_json()["streams"],
            "history": history,
            "calibration": self.calibration_json(),
        })
    }

    // ---- changing --------------------------------------------------------------

    /// `PUT /api/v1/devices/{name}/adjust`. Errors: 404, 422 out of range.
    pub fn set_adjust(&self, device: &str, ms: f64) -> Result<Value, ApiError> {
        let mut state = lock(&self.state);
        self.known(&state, device)?;
        // Decided and queued through the controller's own link, so no offset decided
        // before this one reaches the receiver after it.
        let offset =
            self.link.publish_with(
                || match lock(&self.controller).set_manual_adjust(device, ms) {
                    Ok(Some(o)) => {
                        let out =
                            serde_json::to_vec(&o).map(|payload| crate::sync_service::Outgoing {
                                topic: topics::buffer_offset(device),
                                payload,
                                retain: true,
                            });
                        (Ok(Some(o)), out.into_iter().collect())
                    }
                    other => (other, Vec::new()),
                },
            );
        let offset = offset.map_err(ApiError::unprocessable)?;
        state.set_manual_adjust(device, ms)?;
        if let Some(o) = offset {
            state.on_offset(o);
        }
        self.save(&state);
        self.emit_device(&state, device);
        Ok(self.device_value(&state, device))
    }

    /// `PUT /api/v1/devices/{name}/volume`. Errors: 404, 422.
    pub fn set_volume(&self, device: &str, volume: f64) -> Result<Value, ApiError> {
        let mut state = lock(&self.state);
        self.known(&state, device)?;
        state.set_volume(device, volume)?;
        self.after_settings_change(&state, &BTreeSet::from([device.to_string()]));
        Ok(self.device_value(&state, device))
    }

    /// `PUT /api/v1/devices/{name}/mute`. Errors: 404.
    pub fn set_muted(&self, device: &str, muted: bool) -> Result<Value, ApiError> {
        let mut state = lock(&self.state);
        self.known(&state, device)?;
        state.set_muted(device, muted)?;
        self.after_settings_change(&state, &BTreeSet::from([device.to_string()]));
        Ok(self.device_value(&state, device))
    }

    /// `POST /api/v1/devices/{name}/resync`: the `resync` command (the controller
    /// forgets the device's lock, the receiver measures again). Errors: 404.
    pub fn resync(&self, device: &str) -> Result<Value, ApiError> {
        self.known(&lock(&self.state), device)?;
        self.publish_json(topics::command(device), &Command::Resync, false);
        Ok(json!({ "device": device, "resync": true }))
    }

    /// `POST /api/v1/devices/{name}/announce`: the `announce` command (the receiver
    /// says its name, state, drift and offset through its output; docs/voice.md).
    /// Errors: 404.
    pub fn announce(&self, device: &str) -> Result<Value, ApiError> {
        self.known(&lock(&self.state), device)?;
        self.publish_json(topics::command(device), &Command::Announce, false);
        Ok(json!({ "device": device, "announce": true }))
    }

    /// `POST /api/v1/devices/{name}/test_tone`: the `test_tone` command with `req`.
    /// Errors: 404; 422 for a signal other than sweep or mls.
    pub fn test_tone(&self, device: &str, req: TestToneRequest) -> Result<Value, ApiError> {
        self.known(&lock(&self.state), device)?;
        if let Some(s) = &req.signal {
            if s != "sweep" && s != "mls" {
                return Err(ApiError::unprocessable(format!(
                    "signal: '{}' is not sweep or mls",
                    s.chars().take(32).collect::<String>()
                )));
            }
        }
        self.publish_json(topics::command(device), &Command::TestTone(req), false);
        Ok(json!({ "device": device, "test_tone": true }))
    }

    /// `PUT /api/v1/groups/{name}`. Errors: see [`ControlState::put_group`].
    pub fn put_group(&self, name: &str, req: &GroupRequest) -> Result<Value, ApiError> {
        let mut state = lock(&self.state);
        let streams = self.streams.clone();
        let changed = state.put_group(name, req, &|s| streams.contains(s))?;
        self.after_group_change(&state, &changed);
        let group = req.rename.clone().unwrap_or_else(|| name.to_string());
        Ok(state.groups_json()["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["name"] == group.as_str()).cloned())
            .unwrap_or(Value::Null))
    }

    /// `DELETE /api/v1/groups/{name}`. Errors: 404, 409 for the default group.
    pub fn delete_group(&self, name: &str) -> Result<Value, ApiError> {
        let mut state = lock(&self.state);
        let changed = state.delete_group(name)?;
        self.after_group_change(&state, &changed);
        Ok(json!({ "deleted": name }))
    }

    /// `PUT /api/v1/streams/{name}` `{"uri": ...}`: opens a stream at runtime (not a
    /// `process://` one: only the command line may start programs).
    /// Errors: 409 the name is taken; 422 a bad name or URI, or one that cannot open.
    pub async fn put_stream(self: &Arc<Self>, name: &str, uri: &str) -> Result<Value, ApiError> {
        check_device_name(name).map_err(|e| {
            ApiError::unprocessable(e.to_string().replace("device name", "stream name"))
        })?;
        if self.streams.contains(name) {
            return Err(ApiError::conflict(format!(
                "a stream named '{name}' exists"
            )));
        }
        let parsed = crate::source::StreamUri::parse(uri)
            .map_err(|e| ApiError::unprocessable(format!("uri: {e:#}")))?;
        if parsed.kind == "process" {
            return Err(ApiError::unprocessable(
                "uri: process streams can only be given on the command line",
            ));
        }
        if parsed.name.as_deref().is_some_and(|n| n != name) {
            return Err(ApiError::unprocessable(
                "uri: its name= differs from the stream's name",
            ));
        }
        let me = self.clone();
        let (name2, uri2) = (name.to_string(), uri.to_string());
        tokio::task::spawn_blocking(move || {
            open_stream(&me.streams, &name2, &uri2, &me.cfg.source_options)
        })
        .await
        .map_err(|e| ApiError::unprocessable(format!("uri: {e}")))??;
        let mut state = lock(&self.state);
        state.settings.streams.push(StoredStream {
            name: name.to_string(),
            uri: uri.to_string(),
        });
        self.save(&state);
        drop(state);
        self.publish_streams();
        Ok(json!({ "name": name, "uri": uri }))
    }

    /// `DELETE /api/v1/streams/{name}`. Errors: 404; 409 a command-line stream or one
    /// a group plays.
    pub fn delete_stream(&self, name: &str) -> Result<Value, ApiError> {
        let mut state = lock(&self.state);
        if !self.streams.contains(name) {
            return Err(ApiError::not_found(format!("no stream named '{name}'")));
        }
        let playing = state.groups_playing(name);
        if !playing.is_empty() {
            return Err(ApiError::conflict(format!(
                "stream '{name}' is played by {}: give them another stream first",
                playing.join(", ")
            )));
        }
        self.streams.remove(name).map_err(|e| match e {
            StreamError::Unknown(_) => ApiError::not_found(e.to_string()),
            _ => ApiError::conflict(e.to_string()),
        })?;
        state.settings.streams.retain(|s| s.name != name);
        self.save(&state);
        drop(state);
        self.publish_streams();
        Ok(json!({ "deleted": name }))
    }

    /// `POST /api/v1/calibrate`: starts a calibration run in the background.
    /// Errors: 409 a run is going on; 422 a bad device name, an unknown or offline
    /// device, no online device, a bad signal or a sweep with `simultaneous`.
    pub fn calibrate(self: &Arc<Self>, req: CalibrateRequest) -> Result<Value, ApiError> {
        use syncstream_calibration::SignalKind;
        let signal = match req.signal.as_deref() {
            None if req.simultaneous => SignalKind::Mls,
            None | Some("sweep") => SignalKind::Sweep,
            Some("mls") => SignalKind::Mls,
            Some(s) => {
                return Err(ApiError::unprocessable(format!(
                    "signal: '{}' is not sweep or mls",
                    s.chars().take(32).collect::<String>()
                )))
            }
        };
        if req.simultaneous && signal != SignalKind::Mls {
            return Err(ApiError::unprocessable(
                "signal: a simultaneous calibration needs mls (one orthogonal sequence per device)",
            ));
        }
        let devices: Vec<String> = {
            let state = lock(&self.state);
            let now = self.now_us();
            match &req.devices {
                Some(list) => {
                    if list.is_empty() {
                        return Err(ApiError::unprocessable("devices: empty"));
                    }
                    for (i, d) in list.iter().enumerate() {
                        if !state.knows(d) {
                            return Err(ApiError::unprocessable(format!(
                                "devices[{i}]: no device named '{}'",
                                d.chars().take(64).collect::<String>()
                            )));
                        }
                        if !state.online(d, now) {
                            return Err(ApiError::unprocessable(format!(
                                "devices[{i}]: '{d}' is offline"
                            )));
                        }
                    }
                    let mut seen = BTreeSet::new();
                    list.iter().filter(|d| seen.insert(*d)).cloned().collect()
                }
                None => state
                    .devices()
                    .into_iter()
                    .filter(|d| state.online(d, now))
                    .collect(),
            }
        };
        if devices.is_empty() {
            return Err(ApiError::unprocessable("devices: no device is online"));
        }
        {
            let mut cal = lock(&self.calibration);
            if cal.running {
                return Err(ApiError::conflict("a calibration is running"));
            }
            cal.start(&devices);
        }
        self.emit_calibration();
        let opts = syncstream_calibration::live::LiveOptions {
            broker: self.cfg.broker.clone(),
            devices: Some(devices.clone()),
            signal,
            simultaneous: req.simultaneous,
            profiles_dir: self.cfg.profiles_dir.clone(),
            timeout: std::time::Duration::from_secs(20),
            discovery: std::time::Duration::from_millis(500),
            // A report folder makes the receivers send their impulse responses.
            report_dir: Some(
                self.cfg
                    .state_dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("calibration"),
            ),
            progress: false,
        };
        let me = self.clone();
        tokio::spawn(async move {
            let result = syncstream_calibration::live::calibrate_live(&opts)
                .await
                .map_err(|e| format!("{e:#}"))
                .and_then(|run| serde_json::to_value(&run).map_err(|e| e.to_string()));
            lock(&me.calibration).finish(result);
            me.emit_calibration();
        });
        Ok(json!({ "started": true, "devices": devices }))
    }

    fn emit_calibration(&self) {
        self.emit(json!({ "type": "calibration", "calibration": self.calibration_json() }));
    }

    fn after_settings_change(&self, state: &ControlState, devices: &BTreeSet<String>) {
        for d in devices {
            self.publish_json(topics::settings(d), &state.settings_message(d), true);
            self.emit_device(state, d);
        }
        self.save(state);
    }

    fn after_group_change(&self, state: &ControlState, changed: &BTreeSet<String>) {
        self.dir.set_routes(state.routes());
        self.after_settings_change(state, changed);
        let groups = state.groups_json();
        self.publish_json(topics::GROUPS.to_string(), &groups, true);
        self.emit(json!({ "type": "group", "groups": groups["groups"] }));
    }

    fn publish_streams(&self) {
        let streams = self.streams_json();
        self.publish_json(topics::STREAMS.to_string(), &streams, true);
        self.emit(json!({ "type": "streams", "streams": streams["streams"] }));
    }

    /// Every second: a `device` event per known device (the dashboard's liveness);
    /// devices not heard from for a day are forgotten ([`state::LIVE_EXPIRY_US`]);
    /// the retained state for Home Assistant and the config push are brought up to
    /// date ([`ControlPlane::publish_retained`]).
    pub fn tick(&self) {
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = lock(&self.state);
            let gone = state.expire(self.now_us());
            if !gone.is_empty() {
                tracing::info!("forgot {} device(s) not heard from for a day", gone.len());
            }
            for d in state.devices() {
                self.emit_device(&state, &d);
            }
        }
        if tick.is_multiple_of(profile_push::SCAN_INTERVAL_TICKS) {
            self.push_profiles();
        }
        self.publish_retained(false);
    }

    fn send_retained(&self, topic: String, payload: Vec<u8>) {
        if self.retained.send((topic, payload)).is_err() {
            warn!("the retained publisher has stopped");
        }
    }

    /// Reads the profiles folder and publishes `syncstream/config` when it changed.
    fn push_profiles(&self) {
        let mut p = lock(&self.published);
        let Some(push) = p.profiles.as_mut().and_then(|pp| pp.scan()) else {
            return;
        };
        match serde_json::to_vec(push) {
            Ok(bytes) => {
                info!(
                    "pushing {} profile(s) on {}",
                    push.devices.len(),
                    topics::CONFIG
                );
                self.send_retained(topics::CONFIG.to_string(), bytes);
            }
            Err(e) => warn!("cannot encode the config push: {e}"),
        }
    }

    /// Publishes what changed of the retained state other systems read: the config
    /// push (again), and with Home Assistant discovery on, every device's
    /// `syncstream/state/<device>`, `syncstream/summary` and the discovery configs
    /// (cleared for devices that are gone). With `all`, everything is published again
    /// (after a reconnect, or when Home Assistant announces itself).
    pub fn publish_retained(&self, all: bool) {
        let mut p = lock(&self.published);
        if all {
            if let Some(push) = p.profiles.as_ref().and_then(|pp| pp.current()) {
                if let Ok(bytes) = serde_json::to_vec(push) {
                    self.send_retained(topics::CONFIG.to_string(), bytes);
                }
            }
        }
        let Some(ha) = self.cfg.homeassistant.as_ref() else {
            return;
        };
        let now = self.now_us();
        let state = lock(&self.state);
        let devices = state.devices();
        // States.
        let mut states = BTreeMap::new();
        for d in &devices {
            let mut v = self.device_value(&state, d);
            if let Some(o) = v.as_object_mut() {
                o.remove("last_seen_us");
            }
            states.insert(d.clone(), v.to_string().into_bytes());
        }
        for (d, payload) in &states {
            if all || p.states.get(d) != Some(payload) {
                self.send_retained(homeassistant::state_topic(d), payload.clone());
            }
        }
        for d in p.states.keys().filter(|d| !states.contains_key(*d)) {
            self.send_retained(homeassistant::state_topic(d), Vec::new());
        }
        p.states = states;
        // The summary.
        let groups: BTreeMap<String, String> = state
            .settings
            .groups
            .iter()
            .map(|(n, g)| (n.clone(), g.stream.clone()))
            .collect();
        let worst = sync_stats::worst_spread_now_ms(&state, now);
        let summary = json!({
            "devices": devices.len(),
            "devices_online": devices.iter().filter(|d| state.online(d, now)).count(),
            "worst_spread_ms": worst,
            "groups": groups,
        })
        .to_string()
        .into_bytes();
        if all || p.summary.as_ref() != Some(&summary) {
            self.send_retained(homeassistant::SUMMARY_TOPIC.to_string(), summary.clone());
            p.summary = Some(summary);
        }
        // Discovery configs, when what they are made from changed.
        let areas = p.profiles.as_ref().and_then(|pp| pp.current());
        let facts = DiscoveryFacts {
            receivers: devices
                .iter()
                .map(|d| {
                    let status = state
                        .live
                        .get(d)
                        .and_then(|l| l.status.as_ref())
                        .map(|(s, _)| s);
                    homeassistant::ReceiverFacts {
                        name: d.clone(),
                        output: status.map(|s| s.output.clone()).unwrap_or_default(),
                        version: status.and_then(|s| s.version.clone()),
                        area: areas
                            .and_then(|a| a.devices.get(d))
                            .map(|pr| pr.area.clone())
                            .unwrap_or_default(),
                    }
                })
                .collect(),
            groups,
            streams: self.streams.list().into_iter().map(|s| s.name).collect(),
        };
        drop(state);
        if !all && p.facts.as_ref() == Some(&facts) {
            return;
        }
        let group_names: Vec<String> = facts.groups.keys().cloned().collect();
        let mut wanted = homeassistant::transmitter_configs(ha, &facts.groups, &facts.streams);
        for r in &facts.receivers {
            wanted.extend(homeassistant::receiver_configs(ha, r, &group_names));
        }
        let out = p.discovery.update(wanted, all);
        if !out.is_empty() {
            debug!("{} Home Assistant discovery config(s) published", out.len());
        }
        for (topic, payload) in out {
            self.send_retained(topic, payload);
        }
        p.facts = Some(facts);
    }

    /// `DELETE /api/v1/devices/{name}`: forgets a device that is gone for good: its
    /// settings, its group membership, what was heard from it, and its retained
    /// messages (status, settings, offset, state, Home Assistant configs).
    /// Errors: 404; 409 while it is online.
    pub fn forget_device(&self, device: &str) -> Result<Value, ApiError> {
        let mut state = lock(&self.state);
        self.known(&state, device)?;
        if state.online(device, self.now_us()) {
            return Err(ApiError::conflict(format!(
                "'{device}' is online: stop its receiver first"
            )));
        }
        state.forget(device);
        self.save(&state);
        self.dir.set_routes(state.routes());
        let groups = state.groups_json();
        drop(state);
        {
            let mut c = lock(&self.controller);
            c.reset(device);
            let _ = c.set_manual_adjust(device, 0.0);
        }
        for t in [
            topics::status(device),
            topics::settings(device),
            topics::buffer_offset(device),
        ] {
            self.send_retained(t, Vec::new());
        }
        self.publish_json(topics::GROUPS.to_string(), &groups, true);
        self.emit(json!({ "type": "forgotten", "device": device }));
        self.publish_retained(false);
        info!("forgot device {device}");
        Ok(json!({ "forgotten": device }))
    }

    /// Moves `device` into `group` (Home Assistant's group select,
    /// `syncstream/group_of/<device>`): the same change as `PUT /api/v1/groups/<group>`
    /// with the device added to its devices. Errors: 404 unknown device; 422 unknown
    /// group.
    pub fn set_group(&self, device: &str, group: &str) -> Result<Value, ApiError> {
        let members: Vec<String> = {
            let state = lock(&self.state);
            self.known(&state, device)?;
            if !state.settings.groups.contains_key(group) {
                return Err(ApiError::unprocessable(format!(
                    "group: no group named '{}'",
                    group.chars().take(64).collect::<String>()
                )));
            }
            state
                .devices()
                .into_iter()
                .filter(|d| d == device || state.group_of(d) == group)
                .collect()
        };
        self.put_group(
            group,
            &GroupRequest {
                devices: Some(members),
                ..Default::default()
            },
        )
    }

    // ---- the MQTT door -----------------------------------------------------------

    /// The bridge (re)connected: republishes the retained state (an embedded broker
    /// starts empty).
    pub fn on_mqtt_connected(&self) {
        let state = lock(&self.state);
        for d in state.devices() {
            self.publish_json(topics::settings(&d), &state.settings_message(&d), true);
        }
        self.publish_json(topics::GROUPS.to_string(), &state.groups_json(), true);
        drop(state);
        self.publish_streams();
        self.publish(
            homeassistant::TRANSMITTER_STATUS_TOPIC.to_string(),
            b"online".to_vec(),
            true,
        );
        self.publish_retained(true);
    }

    /// Home Assistant's status topic (`<prefix>/status`), when discovery is on.
    fn ha_status_topic(&self) -> Option<String> {
        self.cfg
            .homeassistant
            .as_ref()
            .map(|h| format!("{}/status", h.prefix))
    }

    /// Topics the bridge subscribes to.
    pub fn subscriptions(&self) -> Vec<String> {
        [
            "status",
            "drift",
            "buffer_offset",
            "command",
            "calibration",
            "group",
            "group_of",
            "stream",
        ]
        .iter()
        .map(|k| format!("syncstream/{k}/+"))
        .chain([topics::CONFIG.to_string(), CALIBRATE_TOPIC.to_string()])
        .chain(self.ha_status_topic())
        .collect()
    }

    /// One MQTT message (see the module docs of [`mqtt`]). Malformed payloads are
    /// logged and dropped.
    pub fn on_mqtt(self: &Arc<Self>, topic: &str, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD_BYTES {
            warn!(
                "{} byte payload on {topic} is over {MAX_PAYLOAD_BYTES}; ignored",
                payload.len()
            );
            return;
        }
        let now = self.now_us();
        if topic == CALIBRATE_TOPIC {
            let body: &[u8] = if payload.is_empty() { b"{}" } else { payload };
            if let Err(e) =
                error::parse_body::<CalibrateRequest>(body).and_then(|r| self.calibrate(r))
            {
                warn!("{topic}: {}", e.message);
            }
            return;
        }
        if Some(topic) == self.ha_status_topic().as_deref() {
            if payload == b"online" {
                info!("Home Assistant is online: publishing its discovery configs again");
                self.publish_retained(true);
            }
            return;
        }
        if topic == topics::CONFIG {
            if let Ok(c) = parse::<ConfigPush>(topic, payload) {
                lock(&self.state).on_config(
                    c.devices
                        .into_iter()
                        .filter(|(d, _)| is_valid_device_name(d))
                        .map(|(d, p)| (d, p.target))
                        .collect(),
                );
            }
            return;
        }
        let Some((kind, device)) = topic
            .strip_prefix("syncstream/")
            .and_then(|r| r.split_once('/'))
        else {
            return;
        };
        if !is_valid_device_name(device) {
            debug!("{topic}: not a valid name; ignored");
            return;
        }
        let result = match kind {
            "status" => parse::<Status>(topic, payload).map(|s| self.mqtt_status(s, now)),
            "drift" => parse::<DriftReport>(topic, payload).map(|r| self.mqtt_report(r, now)),
            "buffer_offset" if !payload.is_empty() => {
                parse::<BufferOffset>(topic, payload).map(|o| self.mqtt_offset(o))
            }
            "command" => parse::<Command>(topic, payload).map(|c| self.mqtt_command(device, c)),
            "calibration" if device != "summary" => {
                parse::<CalibrationResult>(topic, payload).map(|r| {
                    if lock(&self.calibration).on_result(&r) {
                        self.emit_calibration();
                    }
                })
            }
            "group" => parse::<GroupRequest>(topic, payload).map(|r| {
                let res = if r.delete {
                    self.delete_group(device)
                } else {
                    self.put_group(device, &r)
                };
                if let Err(e) = res {
                    warn!("{topic}: {}", e.message);
                }
            }),
            "group_of" => {
                let group = String::from_utf8_lossy(payload);
                let group = group.trim().trim_matches('"');
                if let Err(e) = self.set_group(device, group) {
                    warn!("{topic}: {}", e.message);
                }
                Ok(())
            }
            "stream" => parse::<StreamRequest>(topic, payload).map(|r| {
                let me = self.clone();
                let name = device.to_string();
                tokio::spawn(async move {
                    let res = match (r.delete, r.uri) {
                        (true, _) => me.delete_stream(&name),
                        (false, Some(uri)) => me.put_stream(&name, &uri).await,
                        (false, None) => Err(ApiError::bad_request("uri: missing")),
                    };
                    if let Err(e) = res {
                        warn!("syncstream/stream/{name}: {}", e.message);
                    }
                });
            }),
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn!("{e}");
        }
    }

    fn mqtt_status(&self, s: Status, now: i64) {
        if !is_valid_device_name(&s.device) {
            return;
        }
        let device = s.device.clone();
        let mut state = lock(&self.state);
        let new = state.on_status(s, now);
        if new {
            // A device seen for the first time gets its settings (and its group's stream).
            self.dir.set_routes(state.routes());
            self.publish_json(
                topics::settings(&device),
                &state.settings_message(&device),
                true,
            );
            let groups = state.groups_json();
            self.publish_json(topics::GROUPS.to_string(), &groups, true);
            self.emit(json!({ "type": "group", "groups": groups["groups"] }));
        }
        self.emit_device(&state, &device);
    }

    fn mqtt_report(&self, r: DriftReport, now: i64) {
        if !is_valid_device_name(&r.device) {
            return;
        }
        let adjust = lock(&self.controller).manual_adjust_ms(&r.device);
        let event = json!({
            "type": "drift",
            "device": r.device,
            "ts_us": r.ts_us,
            "drift_ms": r.drift_ms,
            "residual_ms": r.drift_ms.filter(|_| r.confidence >= 0.6).map(|d| d - adjust),
            "confidence": r.confidence,
            "signal_strength_db": r.signal_strength_db,
            "applied_offset_ms": r.applied_offset_ms,
        });
        lock(&self.state).on_report(r, now, adjust);
        self.emit(event);
    }

    fn mqtt_offset(&self, o: BufferOffset) {
        if !is_valid_device_name(&o.device) || !o.offset_ms.is_finite() {
            return;
        }
        self.emit(
            json!({ "type": "offset", "device": o.device, "offset_ms": o.offset_ms, "seq": o.seq }),
        );
        lock(&self.state).on_offset(o);
    }

    /// Commands other doors sent: volume, mute and adjust become state (republished
    /// as settings); a test tone marks a calibration's progress.
    fn mqtt_command(&self, device: &str, c: Command) {
        let r = match c {
            Command::Volume { value } => self.set_volume(device, value).map(|_| ()),
            Command::Mute => self.set_muted(device, true).map(|_| ()),
            Command::Unmute => self.set_muted(device, false).map(|_| ()),
            Command::Adjust { manual_adjust_ms } => {
                self.set_adjust(device, manual_adjust_ms).map(|_| ())
            }
            Command::TestTone(_) => {
                if lock(&self.calibration).on_test_tone(device) {
                    self.emit_calibration();
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            warn!("command for {device}: {}", e.message);
        }
    }
}

/// Anyone → transmitter: starts a calibration (the body of `POST /api/v1/calibrate`).
pub const CALIBRATE_TOPIC: &str = "syncstream/calibrate";

/// A request on `syncstream/stream/<name>`: `{"uri":"pipe:///tmp/radio"}` adds a
/// stream as `PUT /api/v1/streams/<name>` does, `{"delete":true}` removes it.
/// A request on `syncstream/stream/<name>` (the MQTT door of `PUT` and `DELETE
/// /api/v1/streams/<name>`): `{"uri":"pipe:///tmp/radio"}` or `{"delete":true}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    /// The stream's URI, to add or replace it.
    #[serde(default)]
    pub uri: Option<String>,
    /// Remove the stream.
    #[serde(default)]
    pub delete: bool,
}

/// Span of report history in the WebSocket snapshot, µs.
pub const HEATMAP_SPAN_US: i64 = 300_000_000;

/// Opens stream `name` from `uri` and adds it (at runtime).
fn open_stream(
    streams: &StreamSet,
    name: &str,
    uri: &str,
    opts: &SourceOptions,
) -> Result<(), ApiError> {
    let (_, mut src) = crate::source::open_uri(uri, opts)
        .map_err(|e| ApiError::unprocessable(format!("uri: {e:#}")))?;
    let describe = src.describe();
    let pull: crate::PullAudio = Box::new(move |buf: &mut [f32]| src.read(buf));
    streams
        .add(name, uri, &describe, pull, true)
        .map_err(|e| match e {
            StreamError::Exists(_) | StreamError::TooMany => ApiError::conflict(e.to_string()),
            _ => ApiError::unprocessable(e.to_string()),
        })
}
