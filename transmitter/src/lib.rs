//! The SyncStream transmitter: takes audio from a source, keeps the last seconds in a
//! rolling buffer, streams it to receivers over TCP, serves source windows over HTTP,
//! and runs the sync controller and (by default) an embedded MQTT broker.

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod controller;
pub mod controller_store;
pub mod history;
pub mod http;
pub mod mqtt;
pub mod pacer;
pub mod rolling_buffer;
pub mod source;
pub mod stream_server;
pub mod sync_service;
pub mod updates;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use syncstream_protocol::codec::{AudioEncoder, CHUNK_FRAMES};
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_protocol::wire::Codec;
use syncstream_shared::limits::{check_playout_delay_ms, OffsetLimits};
use syncstream_shared::time::{Clock, STREAM_CHANNELS, STREAM_SAMPLE_RATE};

pub use controller::{ControllerConfig, SyncController};
pub use pacer::PullAudio;
pub use rolling_buffer::RollingBuffer;

/// Default TCP port of the audio stream.
pub const DEFAULT_STREAM_PORT: u16 = 4953;
/// Default TCP port of the HTTP API.
pub const DEFAULT_HTTP_PORT: u16 = 4954;

/// Which MQTT broker to use.
#[derive(Debug, Clone)]
pub enum MqttMode {
    /// Start rumqttd in this process, listening here.
    Embedded(SocketAddr),
    /// Use an external broker (e.g. mosquitto).
    External(BrokerUrl),
}

/// Transmitter settings.
#[derive(Debug, Clone)]
pub struct TransmitterConfig {
    /// Audio stream listen address.
    pub stream_addr: SocketAddr,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// MQTT broker.
    pub mqtt: MqttMode,
    /// Stream codec.
    pub codec: Codec,
    /// Seconds of source audio kept for windows.
    pub buffer_seconds: f64,
    /// Playout delay announced to receivers, ms.
    pub playout_delay_ms: u32,
    /// Controller tuning (its offset limits are set from `playout_delay_ms`).
    pub controller: ControllerConfig,
    /// Device profiles (`<device>.json`) that the offset history may update; `None`:
    /// no auto-calibration.
    pub profiles_dir: Option<std::path::PathBuf>,
    /// When the offset history updates a profile.
    pub history: history::HistoryConfig,
    /// Folder of signed update bundles to serve and announce (`updates`); `None`: none.
    pub updates_dir: Option<std::path::PathBuf>,
    /// Folder where the transmitter keeps its state across restarts (the controller's
    /// offsets, [`controller_store`]); `None`: nothing is kept.
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for TransmitterConfig {
    fn default() -> Self {
        Self {
            stream_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_STREAM_PORT)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)),
            mqtt: MqttMode::Embedded(SocketAddr::from(([0, 0, 0, 0], 1883))),
            codec: Codec::Opus,
            buffer_seconds: 30.0,
            playout_delay_ms: 1000,
            controller: ControllerConfig::default(),
            profiles_dir: None,
            history: history::HistoryConfig::default(),
            updates_dir: None,
            state_dir: None,
        }
    }
}

/// A running transmitter. Dropping it stops the pacer; the servers live as long as
/// the tokio runtime.
pub struct Transmitter {
    /// Where the stream server listens.
    pub stream_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The broker in use.
    pub broker: BrokerUrl,
    /// Controller state.
    pub controller: Arc<Mutex<SyncController>>,
    /// The rolling buffer.
    pub buffer: Arc<Mutex<RollingBuffer>>,
    /// PTS of source sample 0, µs.
    pub epoch_us: i64,
    hub: Arc<stream_server::StreamHub>,
    stop: Arc<AtomicBool>,
    pacer: Option<std::thread::JoinHandle<()>>,
}

impl Transmitter {
    /// Names of the receivers streaming now.
    pub fn hub_clients(&self) -> Vec<String> {
        self.hub.clients()
    }
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.pacer.take() {
            let _ = h.join();
        }
    }
}

/// Shortest rolling buffer, s.
pub const MIN_BUFFER_SECONDS: f64 = 1.0;
/// Longest rolling buffer, s.
pub const MAX_BUFFER_SECONDS: f64 = 600.0;

impl TransmitterConfig {
    /// Checks the settings; the error names the setting, its value and the range.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_playout_delay_ms(self.playout_delay_ms)
            .map_err(|e| anyhow::anyhow!("--playout-delay-ms: {e}"))?;
        if !(self.buffer_seconds.is_finite()
            && (MIN_BUFFER_SECONDS..=MAX_BUFFER_SECONDS).contains(&self.buffer_seconds))
        {
            anyhow::bail!(
                "--buffer-seconds: {} is outside {MIN_BUFFER_SECONDS} to {MAX_BUFFER_SECONDS} s",
                self.buffer_seconds
            );
        }
        let needed = self.playout_delay_ms as f64 / 1000.0 + 3.0;
        if self.buffer_seconds < needed {
            tracing::warn!(
                "--buffer-seconds {} is less than the {needed} s drift measurements need (the \
                 playout delay plus a 2 s window and its search margin): receivers will not \
                 find their source windows",
                self.buffer_seconds
            );
        }
        if let Some(dir) = &self.profiles_dir {
            let meta = std::fs::metadata(dir)
                .map_err(|e| anyhow::anyhow!("--profiles-dir {}: {e}", dir.display()))?;
            if !meta.is_dir() {
                anyhow::bail!("--profiles-dir {}: not a folder", dir.display());
            }
            tempfile::tempfile_in(dir).map_err(|e| {
                anyhow::anyhow!("--profiles-dir {}: not writable: {e}", dir.display())
            })?;
        }
        Ok(())
    }
}

/// Starts a transmitter on the current tokio runtime, pulling audio from `source`.
///
/// Errors: an invalid setting ([`TransmitterConfig::validate`]), a port that cannot be
/// bound, a codec that cannot be created.
pub async fn start(
    cfg: TransmitterConfig,
    source: PullAudio,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Transmitter> {
    cfg.validate()?;
    let broker = match &cfg.mqtt {
        #[cfg(not(feature = "embedded-broker"))]
        MqttMode::Embedded(addr) => anyhow::bail!(
            "this build has no embedded MQTT broker (feature embedded-broker): give an external \
             broker instead of listening on {addr}"
        ),
        #[cfg(feature = "embedded-broker")]
        MqttMode::Embedded(addr) => {
            broker::start_embedded_broker(*addr)?;
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            BrokerUrl {
                host,
                port: addr.port(),
            }
        }
        MqttMode::External(url) => url.clone(),
    };
    let mut encoder = AudioEncoder::new(cfg.codec, STREAM_SAMPLE_RATE, STREAM_CHANNELS)?;
    let codec_delay_samples = encoder.delay_samples()?;
    // Start the timeline a little in the past so the first chunk is due at once.
    let epoch_us = clock.now_us();
    let hello = stream_server::server_hello(
        cfg.codec,
        codec_delay_samples,
        epoch_us,
        cfg.playout_delay_ms,
    );
    let history_chunks =
        (cfg.playout_delay_ms as usize * STREAM_SAMPLE_RATE as usize / 1000) / CHUNK_FRAMES + 2;
    let hub = stream_server::StreamHub::new(hello, history_chunks);
    let buffer = Arc::new(Mutex::new(RollingBuffer::new(
        STREAM_SAMPLE_RATE,
        cfg.buffer_seconds,
        epoch_us,
    )));
    let controller = Arc::new(Mutex::new(SyncController::new(ControllerConfig {
        limits: OffsetLimits::for_playout_delay_ms(cfg.playout_delay_ms as f64),
        ..cfg.controller.clone()
    })));

    let stream_listener = tokio::net::TcpListener::bind(cfg.stream_addr)
        .await
        .with_context(|| format!("cannot listen for receivers on {}", cfg.stream_addr))?;
    let stream_addr = stream_listener.local_addr()?;
    tokio::spawn(stream_server::serve(
        stream_listener,
        hub.clone(),
        clock.clone(),
    ));

    let http_listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_addr))?;
    let http_addr = http_listener.local_addr()?;
    let mut app = http::router(http::HttpState {
        buffer: buffer.clone(),
        hub: hub.clone(),
        controller: controller.clone(),
    });
    if let Some(dir) = &cfg.updates_dir {
        app = app.merge(updates::router(dir.clone())); // signed updates (issue 13)
        tokio::spawn(updates::announce(broker.clone(), dir.clone()));
    }
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, app).await {
            tracing::error!("HTTP server stopped: {e}");
        }
    });

    if let Some(dir) = &cfg.state_dir {
        controller_store::restore(&controller, dir);
        tokio::spawn(controller_store::keep(controller.clone(), dir.clone()));
    }
    let keeper = cfg
        .profiles_dir
        .clone()
        .map(|dir| history::ProfileKeeper::new(dir, cfg.history.clone()));
    tokio::spawn(mqtt::run_controller(
        broker.clone(),
        sync_service::SyncService::new(controller.clone(), keeper),
        clock.clone(),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let pacer = {
        let (clock, buffer, hub, stop) = (clock.clone(), buffer.clone(), hub.clone(), stop.clone());
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                pacer::run(
                    pacer::ChunkProducer::new(source, encoder),
                    epoch_us,
                    clock,
                    buffer,
                    hub,
                    stop,
                )
            })?
    };
    tracing::info!(%stream_addr, %http_addr, %broker, "transmitter running");
    Ok(Transmitter {
        stream_addr,
        http_addr,
        broker,
        controller,
        buffer,
        epoch_us,
        hub,
        stop,
        pacer: Some(pacer),
    })
}
