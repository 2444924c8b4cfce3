//! The device's update agent: its own MQTT connection, subscribed to
//! [`crate::UPDATE_TOPIC`]; takes announced bundles through the [`Updater`],
//! downloads, verifies and installs them; confirms a freshly started update once the
//! device is healthy; publishes the retained update status on
//! [`crate::status_topic`]:
//!
//! `{"device":"kitchen","version":"0.2.0","target":"arm-unknown-linux-musleabihf","state":"refused","available":"0.3.0","code":"bad_signature","reason":"...","ts_unix_s":1764620000}`
//!
//! `state` is `idle` (up to date), `downloading`, `restarting` (installed, exiting so
//! systemd starts the new binary), `confirming` (a new binary waiting to be healthy),
//! `installed` (confirmed), `refused` (`code` and `reason` say why) or `rolled_back`.
//! `available` is the newest version announced for this target, when newer than
//! the running one (a dashboard's "update available"); `installed_version` and
//! `latest_version` repeat the running and the newest version for Home Assistant,
//! whose MQTT `update` entity the agent announces by discovery
//! ([`home_assistant_discovery`]).
//!
//! [`run`] returns only when the process must exit: [`AgentExit::Restart`] after an
//! install, [`AgentExit::Unhealthy`] when a new binary did not become healthy in time
//! (the launcher then rolls it back on the next start).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use serde::{Deserialize, Serialize};
use syncstream_protocol::mqtt::{self, BrokerUrl};
use tracing::{error, info, warn};

use crate::install::unix_now_s;
use crate::updater::{Plan, Updater, UpdaterConfig};
use crate::Refusal;

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Device name (status topic, MQTT client id).
    pub device: String,
    /// The MQTT broker.
    pub broker: BrokerUrl,
    /// The updater's settings.
    pub updater: UpdaterConfig,
    /// How long a new binary may take to become healthy (60 s by default).
    pub health_timeout: Duration,
}

/// Whether the device is healthy: connected to the transmitter and playing.
pub type Health = Arc<dyn Fn() -> bool + Send + Sync>;

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentExit {
    /// A new version was installed: exit so systemd restarts the service.
    Restart {
        /// The installed version.
        version: String,
    },
    /// This (new) version was not healthy within the health timeout: exit non-zero;
    /// the launcher rolls it back on the next start.
    Unhealthy {
        /// This version.
        version: String,
    },
}

/// The retained update status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Device name.
    pub device: String,
    /// The running version.
    pub version: String,
    /// This device's target.
    pub target: String,
    /// See the module docs.
    pub state: String,
    /// Newest announced version for this target, when newer than the running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
    /// [`Refusal::code`] of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why (refusal, rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When, Unix seconds.
    pub ts_unix_s: u64,
    /// Home Assistant's MQTT `update` platform reads these two from the state topic:
    /// the running version.
    pub installed_version: String,
    /// The newest version on offer (`available`, else the running one).
    pub latest_version: String,
}

/// Home Assistant MQTT discovery of the device's `update` entity (retained on
/// `homeassistant/update/syncstream_<device>/config`): it shows the running version
/// and "update available" from the update status.
pub fn home_assistant_discovery(device: &str) -> (String, Vec<u8>) {
    let id = format!(
        "syncstream_{}",
        device.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let config = serde_json::json!({
        "name": "SyncStream firmware",
        "unique_id": format!("{id}_update"),
        "state_topic": crate::status_topic(device),
        "device": {"identifiers": [id], "name": format!("SyncStream {device}"), "manufacturer": "SyncStream"},
    });
    (
        format!("homeassistant/update/{id}/config"),
        config.to_string().into_bytes(),
    )
}

struct Shared {
    client: AsyncClient,
    topic: String,
    status: Mutex<UpdateStatus>,
}

impl Shared {
    fn set(&self, f: impl FnOnce(&mut UpdateStatus)) {
        let payload = {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s);
            s.ts_unix_s = unix_now_s();
            s.latest_version = s.available.clone().unwrap_or_else(|| s.version.clone());
            serde_json::to_vec(&*s).unwrap_or_default()
        };
        self.publish(payload);
    }

    fn republish(&self) {
        let payload = {
            let s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::to_vec(&*s).unwrap_or_default()
        };
        self.publish(payload);
    }

    fn publish(&self, payload: Vec<u8>) {
        if let Err(e) = self
            .client
            .try_publish(self.topic.clone(), QoS::AtLeastOnce, true, payload)
        {
            warn!("cannot publish the update status: {e}");
        }
    }

    fn refuse(&self, r: &Refusal, available: Option<String>) {
        warn!("update refused ({}): {r}", r.code());
        self.set(|s| {
            s.state = "refused".into();
            s.code = Some(r.code().into());
            s.reason = Some(r.to_string());
            if available.is_some() {
                s.available = available;
            }
        });
    }
}

/// Runs the agent until the process must exit (see [`AgentExit`]).
pub async fn run(cfg: AgentConfig, health: Health) -> AgentExit {
    let updater = Updater::new(cfg.updater.clone());
    let layout = cfg.updater.layout.clone();
    let running = cfg.updater.running.to_string();
    let (client, eventloop) = mqtt::connect(
        &cfg.broker,
        &format!("syncstream-update-{}", cfg.device),
        None,
    );
    let state = layout.load().unwrap_or_else(|e| {
        warn!("{e:#}; starting from an empty update state");
        Default::default()
    });
    let confirming = crate::launcher::is_update_child()
        && state.pending.as_ref().is_some_and(|p| p.version == running);
    let (initial, reason) = match (&state.last, confirming) {
        (_, true) => ("confirming", None),
        (Some(o), false) if o.state == "rolled_back" => ("rolled_back", o.reason.clone()),
        _ => ("idle", None),
    };
    let shared = Arc::new(Shared {
        client: client.clone(),
        topic: crate::status_topic(&cfg.device),
        status: Mutex::new(UpdateStatus {
            device: cfg.device.clone(),
            version: running.clone(),
            target: cfg.updater.target.clone(),
            state: initial.into(),
            available: None,
            code: None,
            reason,
            ts_unix_s: unix_now_s(),
            installed_version: running.clone(),
            latest_version: running.clone(),
        }),
    });
    let online = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    {
        let (shared, online, device) = (shared.clone(), online.clone(), cfg.device.clone());
        tokio::spawn(mqtt::drive(
            client,
            eventloop,
            vec![crate::UPDATE_TOPIC.to_string()],
            move |c| {
                online.store(true, Ordering::SeqCst);
                let (topic, config) = home_assistant_discovery(&device);
                if let Err(e) = c.try_publish(topic, QoS::AtLeastOnce, true, config) {
                    warn!("cannot publish the Home Assistant discovery: {e}");
                }
                shared.republish();
            },
            move |p| {
                if p.topic == crate::UPDATE_TOPIC && tx.try_send(p.payload.to_vec()).is_err() {
                    warn!("update announcement dropped: the previous ones are still being handled");
                }
            },
        ));
    }
    let deadline = state
        .pending
        .as_ref()
        .map(|p| p.installed_at_unix_s + cfg.health_timeout.as_secs());
    let mut confirming = confirming;
    // A version rolled back on this device is not installed again (a newer one is).
    let mut rolled_back = state
        .last
        .as_ref()
        .filter(|o| o.state == "rolled_back")
        .map(|o| o.version.clone());
    // The last announcement that arrived while confirming, handled once confirmed.
    let mut deferred: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let payload = tokio::select! {
            _ = tick.tick(), if confirming => {
                if online.load(Ordering::SeqCst) && health() {
                    match layout.confirm(unix_now_s()) {
                        Ok(()) => {
                            info!("update {running} is healthy (online, playing): confirmed");
                            shared.set(|s| { s.state = "installed".into(); s.code = None; s.reason = None; });
                            confirming = false;
                            rolled_back = None;
                            match deferred.take() {
                                Some(p) => p,
                                None => continue,
                            }
                        }
                        Err(e) => {
                            error!("cannot confirm update {running}: {e:#}");
                            continue;
                        }
                    }
                } else if deadline.is_some_and(|d| unix_now_s() > d) {
                    error!(
                        "update {running} not healthy (online, playing) within {} s: exiting to roll back",
                        cfg.health_timeout.as_secs()
                    );
                    return AgentExit::Unhealthy { version: running };
                } else {
                    continue;
                }
            }
            Some(payload) = rx.recv() => {
                if confirming {
                    info!("announcement kept until update {running} has passed its health check");
                    deferred = Some(payload);
                    continue;
                }
                payload
            }
        };
        match updater.on_announcement(&payload) {
            Err(r) => shared.refuse(&r, None),
            Ok(None) => shared.set(|s| {
                if s.state != "installed" && s.state != "rolled_back" {
                    s.state = "idle".into();
                }
                s.available = None;
            }),
            Ok(Some(plan)) if rolled_back.as_deref() == Some(plan.bundle.version.as_str()) => {
                warn!(
                            "update {} was rolled back on this device: not installing it again (announce a newer one)",
                            plan.bundle.version
                        );
                shared.set(|s| {
                    s.state = "rolled_back".into();
                    s.available = Some(plan.bundle.version.clone());
                });
            }
            Ok(Some(plan)) => {
                if let Some(version) = fetch_and_install(&updater, &plan, &shared).await {
                    // Give the status a moment to leave before the process exits
                    // (the new process publishes its own status anyway).
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return AgentExit::Restart { version };
                }
            }
        }
    }
}

/// Downloads, verifies and installs `plan`; the installed version, or `None` after a
/// refusal (logged and published).
async fn fetch_and_install(updater: &Updater, plan: &Plan, shared: &Shared) -> Option<String> {
    let version = plan.bundle.version.clone();
    info!(
        "update {version} announced for this device: downloading {}",
        plan.url
    );
    shared.set(|s| {
        s.state = "downloading".into();
        s.available = Some(version.clone());
        s.code = None;
        s.reason = None;
    });
    let bytes = match download(&plan.url, Updater::download_limit(plan)).await {
        Ok(b) => b,
        Err(r) => {
            shared.refuse(&r, Some(version));
            return None;
        }
    };
    let result = updater
        .verify(plan, &bytes)
        .and_then(|(m, bin)| updater.install(&m, bin));
    match result {
        Ok(()) => {
            info!("update {version} verified and installed: restarting into it");
            shared.set(|s| {
                s.state = "restarting".into();
                s.code = None;
                s.reason = None;
            });
            Some(version)
        }
        Err(r) => {
            shared.refuse(&r, Some(version));
            None
        }
    }
}

/// GETs `url`, at most `limit` bytes.
///
/// Errors: [`Refusal::Download`] for a connection failure, a non-2xx status or a body
/// longer than `limit`.
pub async fn download(url: &str, limit: u64) -> Result<Vec<u8>, Refusal> {
    let fail = |reason: String| Refusal::Download {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(fail(format!("more than the announced {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
