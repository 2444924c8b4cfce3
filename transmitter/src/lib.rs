//! The SyncStream transmitter: takes audio from its sources (named streams), keeps
//! the last seconds of each in a rolling buffer, streams them to receivers over TCP,
//! serves source windows over HTTP, and runs the sync controller, the control plane
//! (groups, REST API, WebSocket, dashboard) and (by default) an embedded MQTT broker.

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod control;
/// The sync controller (its own crate, `syncstream-controller`, since a receiver playing
/// from a Snapcast server runs one for itself).
pub use syncstream_controller as controller;
pub mod controller_store;
pub mod dashboard;
pub mod discovery;
pub mod history;
pub mod http;
pub mod http_auth;
#[cfg(feature = "https")]
pub mod https;
pub mod mqtt;
pub mod pacer;
pub mod playout_delay;
pub mod rolling_buffer;
pub mod source;
pub mod stream_server;
pub mod streams;
pub mod sync_service;
pub mod updates;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_protocol::wire::Codec;
use syncstream_shared::limits::{check_playout_delay_ms, OffsetLimits, MAX_PLAYOUT_DELAY_MS};
use syncstream_shared::time::Clock;

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

/// A TLS listener of the embedded broker: where, and the broker's certificate chain
/// and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTls {
    /// Listen address (MQTT over TLS, conventionally port 8883).
    pub listen: SocketAddr,
    /// The certificate chain, PEM (the server's first).
    pub cert: std::path::PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// The HTTPS listener of the API and dashboard: where, and the server's certificate
/// chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsConfig {
    /// Listen address (e.g. `0.0.0.0:4955`).
    pub listen: SocketAddr,
    /// The certificate chain, PEM (the server's first).
    pub cert: std::path::PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
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
    /// Playout delay announced to receivers at start, ms.
    pub playout_delay_ms: u32,
    /// Largest playout delay it may grow to when a device's output latency needs more,
    /// ms (at most [`MAX_PLAYOUT_DELAY_MS`], and at most the rolling buffer less 3 s;
    /// not above `playout_delay_ms`: fixed). See [`playout_delay`].
    pub max_playout_delay_ms: u32,
    /// Controller tuning (its offset limits are set from `playout_delay_ms`).
    pub controller: ControllerConfig,
    /// Device profiles (`<device>.json`) that the offset history may update; `None`:
    /// no auto-calibration.
    pub profiles_dir: Option<std::path::PathBuf>,
    /// When the offset history updates a profile.
    pub history: history::HistoryConfig,
    /// Folder of signed update bundles to serve and announce (`updates`); `None`: none.
    pub updates_dir: Option<std::path::PathBuf>,
    /// The transmitter's state folder: the control plane's `state.json` (groups,
    /// volumes, adjustments) and the controller's `controller.json` ([`controller_store`]);
    /// `None`: nothing persists.
    pub state_dir: Option<std::path::PathBuf>,
    /// Options for streams added through the control API.
    pub source_options: source::SourceOptions,
    /// The pairing key: receivers must prove it on the stream port, MQTT clients log
    /// in with passwords derived from it (the embedded broker checks them; the
    /// transmitter's own clients log in as
    /// [`syncstream_protocol::auth::TRANSMITTER_MQTT_USER`] unless the external
    /// broker's URL names a user), and the HTTP API takes its token
    /// ([`http_auth`]). The default is a fresh random key.
    pub key: syncstream_protocol::auth::PairingKey,
    /// Whether the HTTP API's reads (not the source windows) are open without the
    /// token.
    pub open_read: bool,
    /// A TLS listener of the embedded broker besides its plain one (needs the feature
    /// `broker-tls`); ignored with an external broker.
    pub broker_tls: Option<BrokerTls>,
    /// An HTTPS listener of the API and dashboard besides the plain one (needs the
    /// feature `https`).
    pub https: Option<HttpsConfig>,
    /// Advertise the transmitter over mDNS / DNS-SD under this instance name
    /// ([`discovery`]; at most 63 bytes); `None` (the default): not advertised.
    pub mdns_name: Option<String>,
    /// Home Assistant MQTT discovery (on by default, prefix `homeassistant`; `None`:
    /// off). Without a dashboard URL, `http://<host name>.local:<HTTP port>/`.
    pub homeassistant: Option<control::homeassistant::DiscoveryOptions>,
}

/// `http://<host name>.local:<port>/`: how devices on the network reach the dashboard
/// by mDNS name (the host name from `/proc/sys/kernel/hostname`, else `localhost`).
pub fn default_dashboard_url(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map_or_else(|| "localhost".to_string(), |h| format!("{h}.local"));
    format!("http://{host}:{port}/")
}

/// A source for one named stream.
pub struct NamedSource {
    /// Stream name (letters, digits, `-`, `_`).
    pub name: String,
    /// The URI or spec it was opened from (shown by the API).
    pub uri: String,
    /// The source, in words.
    pub description: String,
    /// Its audio.
    pub pull: PullAudio,
}

impl NamedSource {
    /// `pull` as the stream [`stream_server::DEFAULT_STREAM`].
    pub fn default_stream(pull: PullAudio, uri: &str, description: &str) -> Self {
        Self {
            name: stream_server::DEFAULT_STREAM.into(),
            uri: uri.into(),
            description: description.into(),
            pull,
        }
    }
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
            max_playout_delay_ms: MAX_PLAYOUT_DELAY_MS,
            controller: ControllerConfig::default(),
            profiles_dir: None,
            history: history::HistoryConfig::default(),
            updates_dir: None,
            state_dir: None,
            source_options: source::SourceOptions::default(),
            // Only if the operating system's random source fails, which nothing can
            // run without.
            key: syncstream_protocol::auth::PairingKey::generate()
                .expect("the system's random source works"),
            open_read: false,
            broker_tls: None,
            https: None,
            homeassistant: Some(control::homeassistant::DiscoveryOptions {
                prefix: control::homeassistant::DEFAULT_PREFIX.into(),
                dashboard_url: None,
            }),
            mdns_name: None,
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
    /// The broker in use (with the transmitter's login).
    pub broker: BrokerUrl,
    /// The pairing key (receivers need it; the API token derives from it).
    pub key: syncstream_protocol::auth::PairingKey,
    /// Controller state.
    pub controller: Arc<Mutex<SyncController>>,
    /// The rolling buffer of the first stream.
    pub buffer: Arc<Mutex<RollingBuffer>>,
    /// PTS of source sample 0 of every stream, µs.
    pub epoch_us: i64,
    /// The streams.
    pub streams: Arc<streams::StreamSet>,
    /// The control plane (groups, settings, API).
    pub control: Arc<control::ControlPlane>,
    hub: Arc<stream_server::Directory>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The mDNS record, withdrawn when the transmitter is dropped.
    _mdns: Option<syncstream_protocol::discovery::Advertiser>,
}

impl Transmitter {
    /// Names of the receivers streaming now.
    pub fn hub_clients(&self) -> Vec<String> {
        self.hub.clients()
    }

    /// The playout delay every stream announces (it grows to fit a device; see
    /// [`playout_delay`]).
    pub fn playout_delay(&self) -> &Arc<playout_delay::PlayoutDelay> {
        self.hub.playout()
    }
}

impl Drop for Transmitter {
    /// Stops the servers and the control plane's tasks; the pacers stop when the
    /// last reference to the streams goes.
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
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
        if self.max_playout_delay_ms > MAX_PLAYOUT_DELAY_MS {
            anyhow::bail!(
                "--max-playout-delay-ms: {} ms is more than {MAX_PLAYOUT_DELAY_MS} ms",
                self.max_playout_delay_ms
            );
        }
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
        if let Some(name) = &self.mdns_name {
            syncstream_protocol::discovery::check_instance_name(name)
                .map_err(|e| anyhow::anyhow!("--mdns-name {name:?}: {e}"))?;
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

/// Starts a transmitter on the current tokio runtime with one stream,
/// [`stream_server::DEFAULT_STREAM`], pulling audio from `source`.
///
/// Errors: as [`start_streams`].
pub async fn start(
    cfg: TransmitterConfig,
    source: PullAudio,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Transmitter> {
    start_streams(
        cfg,
        vec![NamedSource::default_stream(source, "", "")],
        clock,
    )
    .await
}

/// Starts a transmitter on the current tokio runtime with the streams `sources` (on
/// one timeline; receivers play [`stream_server::DEFAULT_STREAM`] unless their group
/// says otherwise, or the first stream when there is no default).
///
/// Errors: an invalid setting ([`TransmitterConfig::validate`]), no source, a bad or
/// repeated stream name, a port that cannot be bound, a codec that cannot be created,
/// a state directory that cannot be created.
pub async fn start_streams(
    cfg: TransmitterConfig,
    sources: Vec<NamedSource>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Transmitter> {
    cfg.validate()?;
    if sources.is_empty() {
        anyhow::bail!("no stream: give --source or --stream");
    }
    let broker = match &cfg.mqtt {
        #[cfg(not(feature = "embedded-broker"))]
        MqttMode::Embedded(addr) => anyhow::bail!(
            "this build has no embedded MQTT broker (feature embedded-broker): give an external \
             broker instead of listening on {addr}"
        ),
        #[cfg(feature = "embedded-broker")]
        MqttMode::Embedded(addr) => {
            broker::start_embedded_broker_tls(
                *addr,
                Some(cfg.key.clone()),
                cfg.broker_tls.as_ref(),
            )?;
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                addr.ip().to_string()
            };
            BrokerUrl::new(host, addr.port())
        }
        MqttMode::External(url) => url.clone(),
    }
    .with_key(&cfg.key, syncstream_protocol::auth::TRANSMITTER_MQTT_USER);
    // Every stream's sample 0 is now: one timeline.
    let epoch_us = clock.now_us();
    // The delay may grow as far as the rolling buffer still serves the drift
    // measurements' windows (the delay plus 3 s).
    let buffer_cap_ms = ((cfg.buffer_seconds - 3.0) * 1000.0).max(0.0) as u32;
    let playout = Arc::new(playout_delay::PlayoutDelay::new(
        cfg.playout_delay_ms,
        cfg.max_playout_delay_ms.min(buffer_cap_ms),
    ));
    let hub = stream_server::Directory::new(playout.clone());
    let stream_set = Arc::new(streams::StreamSet::new(
        hub.clone(),
        clock.clone(),
        epoch_us,
        cfg.codec,
        cfg.buffer_seconds,
    ));
    let first = sources[0].name.clone();
    for s in sources {
        stream_set
            .add(&s.name, &s.uri, &s.description, s.pull, false)
            .map_err(|e| anyhow::anyhow!("--stream {}: {e}", s.uri))?;
    }
    let buffer = stream_set
        .buffer(&first)
        .context("the first stream is missing")?;
    let controller = Arc::new(Mutex::new(SyncController::new(ControllerConfig {
        limits: OffsetLimits::for_playout_delay_ms(cfg.playout_delay_ms as f64),
        ..cfg.controller.clone()
    })));

    let stream_listener = tokio::net::TcpListener::bind(cfg.stream_addr)
        .await
        .with_context(|| format!("cannot listen for receivers on {}", cfg.stream_addr))?;
    let stream_addr = stream_listener.local_addr()?;
    let stream_task = tokio::spawn(stream_server::serve(
        stream_listener,
        hub.clone(),
        Arc::new(syncstream_protocol::auth::StreamAuth::new(cfg.key.clone())),
        clock.clone(),
    ));

    let http_listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_addr))?;
    let http_addr = http_listener.local_addr()?;
    let mut tasks = Vec::new();
    if let Some(dir) = &cfg.state_dir {
        controller_store::restore(&controller, dir);
        tasks.push(tokio::spawn(controller_store::keep(
            controller.clone(),
            dir.clone(),
        )));
    }
    let keeper = cfg
        .profiles_dir
        .clone()
        .map(|dir| history::ProfileKeeper::new(dir, cfg.history.clone()));
    let (link, link_events) = mqtt::controller_link(&broker);
    tasks.push(tokio::spawn(mqtt::run_controller(
        broker.clone(),
        link.clone(),
        link_events,
        sync_service::SyncService::new(controller.clone(), keeper)
            .with_playout_delay(playout.clone()),
        clock.clone(),
    )));
    let (control_client, control_events) = control::mqtt::client(&broker);
    let plane = control::ControlPlane::new(
        control::ControlConfig {
            broker: broker.clone(),
            state_dir: cfg.state_dir.clone(),
            profiles_dir: cfg.profiles_dir.clone(),
            source_options: cfg.source_options.clone(),
            homeassistant: cfg.homeassistant.clone().map(|mut h| {
                if h.dashboard_url.is_none() {
                    h.dashboard_url = Some(default_dashboard_url(cfg.http_addr.port()));
                }
                h
            }),
        },
        controller.clone(),
        link,
        stream_set.clone(),
        hub.clone(),
        control_client.clone(),
        clock.clone(),
    )?;
    tasks.push(tokio::spawn(control::mqtt::run(
        broker.clone(),
        control_client,
        control_events,
        plane.clone(),
    )));
    {
        let plane = plane.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                plane.tick();
            }
        }));
    }
    let mut app = http::router(http::HttpState {
        streams: stream_set.clone(),
        hub: hub.clone(),
        controller: controller.clone(),
    })
    .merge(control::api::router(plane.clone()))
    .fallback(dashboard::serve);
    if let Some(dir) = &cfg.updates_dir {
        app = app.merge(updates::router(dir.clone())); // signed updates (issue 13)
        tokio::spawn(updates::announce(broker.clone(), dir.clone()));
    }
    tasks.push(stream_task);
    let app = http::with_limits(http_auth::protect(
        app,
        http_auth::ApiAccess::new(cfg.key.clone(), cfg.open_read),
    ));
    if let Some(h) = &cfg.https {
        #[cfg(feature = "https")]
        {
            let acceptor = https::acceptor(&h.cert, &h.key)?;
            let listener = tokio::net::TcpListener::bind(h.listen)
                .await
                .with_context(|| format!("cannot listen for HTTPS on {}", h.listen))?;
            tracing::info!(addr = %h.listen, "HTTPS listening");
            tasks.push(tokio::spawn(https::serve(listener, app.clone(), acceptor)));
        }
        #[cfg(not(feature = "https"))]
        anyhow::bail!(
            "this build has no HTTPS (feature https): cannot listen on {}",
            h.listen
        );
    }
    tasks.push(tokio::spawn(http::serve(http_listener, app)));

    tracing::info!(%stream_addr, %http_addr, %broker, "transmitter running");
    let mdns = cfg
        .mdns_name
        .as_deref()
        .and_then(|name| discovery::advertise(&cfg, name, stream_addr, http_addr));
    Ok(Transmitter {
        stream_addr,
        http_addr,
        broker,
        key: cfg.key.clone(),
        controller,
        buffer,
        epoch_us,
        streams: stream_set,
        control: plane,
        hub,
        tasks,
        _mdns: mdns,
    })
}
