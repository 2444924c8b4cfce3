//! The SyncStream receiver: plays the transmitter's stream on its output at the right
//! time, listens to it with its microphone, reports the drift and applies the
//! corrective buffer offsets.
//!
//! Modules: [`clock_sync`] (transmitter clock estimate), [`jitter_buffer`],
//! [`playout`] (scheduling), [`drift`] (measurement), [`stream_client`] (TCP),
//! [`agent`] (MQTT), [`core`] (shared state).

pub mod agent;
pub mod clock_sync;
pub mod core;
pub mod drift;
pub mod jitter_buffer;
pub mod playout;
pub mod resampler;
pub mod stream_client;
pub mod test_tone;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use syncstream_audio::{Microphone, Sink};
use syncstream_dsp::DelayEstimator;
use syncstream_protocol::messages::Command;
use syncstream_protocol::mqtt::{self, BrokerUrl};
use syncstream_shared::profile::DeviceProfile;
use syncstream_shared::time::Clock;
use tracing::{debug, info};

use crate::core::{Core, SharedCore};
use crate::drift::DriftConfig;

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
    /// MQTT broker.
    pub broker: BrokerUrl,
    /// Device profile (initial offset = its base latency).
    pub profile: DeviceProfile,
    /// Drift detector settings.
    pub drift: DriftConfig,
}

/// A running receiver; dropping it stops the audio devices (the tasks end with the runtime).
pub struct Receiver {
    /// Shared state.
    pub core: SharedCore,
    sink: Box<dyn Sink>,
    mic: Box<dyn Microphone>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Stops audio and background tasks.
    pub fn stop(&mut self) {
        let _ = self.sink.stop();
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

/// Starts a receiver on the current tokio runtime with `sink` as output and `mic` as
/// microphone; all times are on `clock`.
///
/// Errors: the sink or the microphone cannot be started.
pub async fn start(
    cfg: ReceiverConfig,
    mut sink: Box<dyn Sink>,
    mut mic: Box<dyn Microphone>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Receiver> {
    let core: SharedCore = Arc::new(Mutex::new(Core::new(
        &cfg.device,
        cfg.profile.clone(),
        mic.sample_rate(),
    )));
    sink.start(core::render_fn(core.clone()))
        .context("starting the output")?;
    mic.start(core::capture_fn(core.clone()))
        .context("starting the microphone")?;
    let mut tasks = Vec::new();
    let addr = format!("{}:{}", cfg.transmitter_host, cfg.stream_port);
    tasks.push(tokio::spawn(stream_client::run(
        addr,
        core.clone(),
        clock.clone(),
    )));

    let (client, eventloop) = mqtt::connect(
        &cfg.broker,
        &format!("syncstream-rx-{}", cfg.device),
        Some(agent::last_will(&cfg.device)),
    );
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
    {
        let core = core.clone();
        let clock = clock.clone();
        let subs = agent::subscriptions(&cfg.device);
        let client2 = client.clone();
        tasks.push(tokio::spawn(async move {
            mqtt::drive(
                client2,
                eventloop,
                subs,
                |c| agent::publish_status(c, &core, clock.now_us()),
                |p| {
                    if let Some(cmd) = agent::handle_publish(&core, p) {
                        let _ = cmd_tx.send(cmd);
                    }
                },
            )
            .await
        }));
    }
    // Status every 5 s.
    {
        let (core, client, clock) = (core.clone(), client.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                agent::publish_status(&client, &core, clock.now_us());
            }
        }));
    }
    // Drift detector.
    {
        let http = format!("http://{}:{}", cfg.transmitter_host, cfg.http_port);
        let (core, client, drift_cfg) = (core.clone(), client.clone(), cfg.drift.clone());
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let estimator = Arc::new(Mutex::new(DelayEstimator::new(syncstream_shared::time::STREAM_SAMPLE_RATE)));
            let http_client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
            let mut tick = tokio::time::interval(Duration::from_millis(drift_cfg.interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    Some(cmd) = cmd_rx.recv() => {
                        match cmd {
                            Command::Resync => { tick.reset_immediately(); }
                            Command::TestTone(req) => {
                                tokio::spawn(test_tone::run(core.clone(), client.clone(), clock.clone(), req));
                            }
                            _ => {}
                        }
                        continue;
                    }
                }
                if core.lock().unwrap().test_tone.blocks_drift(clock.now_us()) {
                    continue;
                }
                if let Err(e) = measure_once(&http, &core, &client, &drift_cfg, &estimator, &http_client).await {
                    debug!("no drift measurement: {e:#}");
                }
            }
        }));
    }
    info!(device = cfg.device, "receiver running");
    Ok(Receiver {
        core,
        sink,
        mic,
        tasks,
    })
}

async fn measure_once(
    http: &str,
    core: &SharedCore,
    client: &rumqttc::AsyncClient,
    cfg: &DriftConfig,
    estimator: &Arc<Mutex<DelayEstimator>>,
    http_client: &reqwest::Client,
) -> anyhow::Result<()> {
    let (device, m) = {
        let c = core.lock().unwrap();
        let m = drift::plan(
            cfg,
            &c.mic,
            &c.playout,
            &c.clock,
            c.profile.mic_delay_ms(),
            c.tracking,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        (c.device.clone(), m)
    };
    let url = format!(
        "{http}/api/v1/window?start_us={}&duration_ms={}",
        m.ref_start_us, m.ref_duration_ms
    );
    let resp = http_client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        anyhow::bail!(
            "GET {url}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let first_pts: i64 = resp
        .headers()
        .get("x-syncstream-start-us")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("window without x-syncstream-start-us")?;
    let body = resp.bytes().await?;
    if body.len() % 4 != 0 {
        anyhow::bail!("window body of {} bytes is not f32 samples", body.len());
    }
    let reference: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let estimator = estimator.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut est = estimator.lock().unwrap();
        drift::analyze(&mut est, &device, &m, &reference, first_pts)
    })
    .await?;
    core.lock()
        .unwrap()
        .note_report(&report, cfg.track_below_ms);
    debug!(?report, "drift");
    agent::publish_drift(client, &report);
    Ok(())
}
