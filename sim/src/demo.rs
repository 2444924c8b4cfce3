//! `syncstream demo`: the embedded broker (or an external one), a transmitter and
//! receivers in one process, talking over the real TCP, HTTP and MQTT paths, with the
//! virtual room as their audio hardware, in real time.
//!
//! By default three receivers (analog speaker, HDMI TV, Chromecast-like) whose true
//! latencies are deliberately tens of ms away from their profiles and whose crystals
//! run +60, −45 and +110 ppm off. With `--scenario S.json` any simulator scenario runs
//! instead, with its clocks, wander, rooms and network: each receiver runs on its own
//! [`ModelClock`], and its stream, HTTP and MQTT connections go through a
//! [`NetProxy`] that delays them by the scenario's model.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use syncstream_protocol::auth::PairingKey;
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_protocol::wire::Codec;
use syncstream_receiver::drift::DriftConfig;
use syncstream_receiver::{Receiver, ReceiverConfig};
use syncstream_room::{ClockModel, Hearing, ModelClock, RealtimeRoom, Room, VirtualDevice};
use syncstream_shared::limits::{DEFAULT_PLAYOUT_DELAY_MS, MAX_PLAYOUT_DELAY_MS};
use syncstream_shared::profile::{DeviceProfile, OutputType};
use syncstream_shared::time::{Clock, MonotonicClock};
use syncstream_transmitter::{MqttMode, TransmitterConfig};

use crate::events::EventAction;
use crate::net_proxy::NetProxy;
use crate::report::{build_report, DeviceFacts, Report, TruthLog};
use crate::scenario::{NetworkSpec, Scenario};
use crate::source::{looping_clip, SilenceSwitch};

mod events;

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Audio file to play.
    pub audio: PathBuf,
    /// Stop after this many seconds (`None`: run until Ctrl-C).
    pub duration_s: Option<f64>,
    /// External broker; `None` starts the embedded one.
    pub broker: Option<BrokerUrl>,
    /// Stream codec.
    pub codec: Codec,
    /// Seed of the room's noise and reverberation.
    pub seed: u64,
    /// Print the live table to stdout.
    pub live_table: bool,
    /// Port of the dashboard and API (and source windows) on every address; 0: any
    /// free port on 127.0.0.1.
    pub http_port: u16,
    /// The control plane's state folder (groups, volumes, adjustments persist);
    /// `None`: nothing persists.
    pub state_dir: Option<PathBuf>,
    /// More streams (Snapcast-style URIs) beside `default` (the audio file); empty:
    /// [`DEMO_EXTRA_STREAM`].
    pub streams: Vec<String>,
    /// The system's pairing key (`None`: a fresh random one for this run). The
    /// `syncstream demo` command uses the transmitter's (so real receivers can join).
    pub key: Option<PairingKey>,
}

impl DemoConfig {
    /// A demo of `audio` on the embedded broker: Opus, seed 1, no table, any free
    /// port, nothing persisted, the default extra stream.
    pub fn new(audio: PathBuf) -> Self {
        Self {
            audio,
            duration_s: None,
            broker: None,
            codec: Codec::Opus,
            seed: 1,
            live_table: false,
            http_port: 0,
            state_dir: None,
            streams: Vec::new(),
            key: None,
        }
    }
}

/// The demo's second stream when none is given: a 440 Hz tone, to move groups to.
pub const DEMO_EXTRA_STREAM: &str = "tone:///?name=tone&freq=440";

/// One demo device: its profile and its hidden truth.
#[derive(Debug, Clone)]
pub struct DemoDevice {
    /// Device name.
    pub name: String,
    /// Profile the receiver starts from.
    pub profile: DeviceProfile,
    /// Its simulated hardware (latency, room, clock).
    pub room: VirtualDevice,
}

/// The world the demo devices live in.
#[derive(Debug, Clone)]
pub struct DemoWorld {
    /// The devices.
    pub devices: Vec<DemoDevice>,
    /// The network between the transmitter and the receivers.
    pub network: NetworkSpec,
    /// Playout delay at the start, ms.
    pub playout_delay_ms: u32,
    /// Largest playout delay the transmitter may grow to, ms.
    pub max_playout_delay_ms: u32,
    /// What happens during the run (at s, device index, action), in time order.
    pub events: Vec<(f64, Option<usize>, EventAction)>,
}

/// The three default demo devices.
pub fn demo_devices() -> Vec<DemoDevice> {
    let mk = |name: &str,
              kind: OutputType,
              target: &str,
              true_latency_ms: f64,
              ppm: f64,
              hears: [(&str, f64); 2]| {
        let mut profile = DeviceProfile::default_for(kind);
        profile.target = target.to_string();
        let mut room = VirtualDevice::new(name, true_latency_ms);
        room.mic_distance_m = profile.mic_distance_m;
        room.snr_db = 25.0;
        room.rt60_s = 0.4;
        room.clock = ClockModel {
            offset_us: 0.0,
            ppm,
        };
        room.hears = hears
            .iter()
            .map(|&(d, dist)| Hearing {
                device: d.to_string(),
                gain_db: -15.0,
                distance_m: dist,
            })
            .collect();
        DemoDevice {
            name: name.to_string(),
            profile,
            room,
        }
    };
    vec![
        // Profile 5 ms; the amplifier behind it adds a DSP stage: 31.5 ms.
        mk(
            "kitchen",
            OutputType::Analog,
            "kitchen-amp",
            31.5,
            60.0,
            [("tv", 4.0), ("cast", 5.0)],
        ),
        // Profile 70 ms; this TV's "cinema" mode: 112 ms.
        mk(
            "tv",
            OutputType::Hdmi,
            "LivingRoom-TV",
            112.0,
            -45.0,
            [("kitchen", 4.0), ("cast", 3.0)],
        ),
        // Profile 300 ms; this speaker: 262.5 ms.
        mk(
            "cast",
            OutputType::Chromecast,
            "NestAudio-LR",
            262.5,
            110.0,
            [("kitchen", 5.0), ("tv", 3.0)],
        ),
    ]
}

/// The default demo's world: its three devices on a quiet local network.
pub fn default_world() -> DemoWorld {
    DemoWorld {
        devices: demo_devices(),
        network: NetworkSpec {
            delay_ms: 0.0,
            jitter_ms: 0.0,
        },
        playout_delay_ms: DEFAULT_PLAYOUT_DELAY_MS,
        max_playout_delay_ms: MAX_PLAYOUT_DELAY_MS,
        events: Vec::new(),
    }
}

/// A scenario's world (its devices, clocks, rooms, network, playout delay and events).
///
/// Errors: a profile or impulse response of the scenario cannot be loaded, or an
/// event is not valid.
pub fn scenario_world(sc: &Scenario) -> anyhow::Result<DemoWorld> {
    let (vdevs, profiles) = crate::room_setup::virtual_devices(sc)?;
    Ok(DemoWorld {
        devices: vdevs
            .into_iter()
            .zip(profiles)
            .map(|(room, profile)| DemoDevice {
                name: room.name.clone(),
                profile,
                room,
            })
            .collect(),
        network: sc.network.clone(),
        playout_delay_ms: sc.playout_delay_ms,
        max_playout_delay_ms: sc.growth_limit_ms(),
        events: sc.event_actions().map_err(anyhow::Error::msg)?,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running demo system: broker, transmitter, receivers and the real-time virtual
/// room. Dropping it stops everything.
pub struct DemoSystem {
    /// The transmitter (`None` while a `transmitter_restart` event has it down).
    pub tx: Option<syncstream_transmitter::Transmitter>,
    /// The MQTT broker (reached directly, not through the modelled network), with a
    /// login of its own (user `demo`, the key's password for it) for observers.
    pub broker: BrokerUrl,
    /// The system's pairing key.
    pub key: PairingKey,
    /// The transmitter's HTTP address (dashboard, API, source windows).
    pub http_addr: SocketAddr,
    /// One receiver per device, in `devices` order (`None` while it restarts).
    pub receivers: Vec<Option<Receiver>>,
    /// The virtual room (true latencies, ground truth).
    pub room: Room,
    /// The devices started.
    pub devices: Vec<DemoDevice>,
    /// The clock the transmitter and the room run on.
    pub clock: Arc<dyn Clock>,
    /// Local time at which the room started, µs.
    pub start_us: i64,
    /// Playout delay the transmitter starts with, ms (see
    /// [`DemoSystem::playout_delay_now_ms`]).
    pub playout_delay_ms: f64,
    /// What restarts need: the settings and the parts that outlive a process.
    parts: Parts,
    _room_thread: RealtimeRoom,
}

/// The parts of a demo that events act on or restarts reuse.
struct Parts {
    cfg: DemoConfig,
    /// The transmitter's settings, with the ports it got at the first start.
    tx_cfg: TransmitterConfig,
    /// Makes the default stream's source play silence (`silence_s` events).
    silence: SilenceSwitch,
    /// Each device's crystal (`clock_ppm` events change it).
    clocks: Vec<ModelClock>,
    /// Each receiver's settings.
    rx_cfgs: Vec<ReceiverConfig>,
    /// Per device: the proxies of its stream, HTTP and MQTT connections (empty on a
    /// quiet network without events).
    proxies: Vec<Vec<NetProxy>>,
    /// Counters of receiver processes that ended (restart events), per device.
    past: Vec<crate::evening::Totals>,
    /// Holds the state folders when the demo made them.
    _state: Option<tempfile::TempDir>,
}

/// The demo's sources: the looped audio file as `default` (through `silence`), and the
/// extra streams.
fn demo_sources(
    cfg: &DemoConfig,
    silence: &SilenceSwitch,
) -> anyhow::Result<Vec<syncstream_transmitter::NamedSource>> {
    let mut sources = vec![syncstream_transmitter::NamedSource::default_stream(
        silence.wrap(looping_clip(&cfg.audio)?),
        &cfg.audio.display().to_string(),
        &format!("file {} (looped)", cfg.audio.display()),
    )];
    let extra = if cfg.streams.is_empty() {
        vec![DEMO_EXTRA_STREAM.to_string()]
    } else {
        cfg.streams.clone()
    };
    let opts = syncstream_transmitter::source::SourceOptions {
        loop_file: true,
        ..Default::default()
    };
    for uri in extra {
        let (parsed, mut src) = syncstream_transmitter::source::open_uri(&uri, &opts)?;
        let name = parsed
            .name
            .with_context(|| format!("stream {uri}: give it a name (?name=...)"))?;
        sources.push(syncstream_transmitter::NamedSource {
            name,
            uri: uri.clone(),
            description: src.describe(),
            pull: Box::new(move |buf: &mut [f32]| src.read(buf)),
        });
    }
    Ok(sources)
}

/// Starts the broker (unless `cfg.broker` names one), the transmitter playing
/// `cfg.audio`, the real-time virtual room of `world` and one receiver per device, each
/// on its own clock and behind the world's network.
///
/// The embedded broker runs beside the transmitter rather than inside it, so that a
/// `transmitter_restart` event restarts the transmitter alone (as with mosquitto).
/// With events, every device's connections go through proxies of its own (a
/// `network_outage_s` event holds them), and the transmitter and receivers keep their
/// state in folders (`cfg.state_dir`, or temporary ones) so restarts resume from it.
///
/// Errors: the audio file cannot be read, or a server or receiver cannot start.
pub async fn start_system(cfg: &DemoConfig, world: DemoWorld) -> anyhow::Result<DemoSystem> {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let silence = SilenceSwitch::default();
    let sources = demo_sources(cfg, &silence)?;
    let key = match &cfg.key {
        Some(k) => k.clone(),
        None => PairingKey::generate()?,
    };
    let broker = match &cfg.broker {
        Some(url) => url.clone(),
        None => {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            syncstream_transmitter::broker::start_embedded_broker(addr, Some(key.clone()))?;
            BrokerUrl::new("127.0.0.1", addr.port())
        }
    };
    let has_events = !world.events.is_empty();
    let state = if has_events {
        Some(tempfile::tempdir().context("making the demo's state folders")?)
    } else {
        None
    };
    let tx_state = cfg
        .state_dir
        .clone()
        .or_else(|| state.as_ref().map(|d| d.path().join("transmitter")));
    let mut tx_cfg = TransmitterConfig {
        stream_addr: "127.0.0.1:0".parse()?,
        http_addr: if cfg.http_port == 0 {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], cfg.http_port))
        },
        mqtt: MqttMode::External(broker.clone()),
        state_dir: tx_state,
        key: key.clone(),
        codec: cfg.codec,
        playout_delay_ms: world.playout_delay_ms,
        max_playout_delay_ms: world.max_playout_delay_ms,
        buffer_seconds: (world.max_playout_delay_ms as f64 / 1000.0 + 29.0).max(30.0),
        ..Default::default()
    };
    let playout_delay_ms = tx_cfg.playout_delay_ms as f64;
    let tx = syncstream_transmitter::start_streams(tx_cfg.clone(), sources, clock.clone()).await?;
    // A restart binds the same ports again.
    tx_cfg.stream_addr = tx.stream_addr;
    tx_cfg.http_addr = SocketAddr::new(tx_cfg.http_addr.ip(), tx.http_addr.port());
    // The network: real connections through proxies that delay them as modelled.
    let quiet = world.network.delay_ms == 0.0 && world.network.jitter_ms == 0.0;
    let broker_addr: SocketAddr = format!("{}:{}", broker.host, broker.port)
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], broker.port)));
    let mut proxies: Vec<Vec<NetProxy>> = Vec::new();
    for (i, _) in world.devices.iter().enumerate() {
        let mut mine = Vec::new();
        if !quiet || has_events {
            for (k, target) in [tx.stream_addr, tx.http_addr, broker_addr]
                .into_iter()
                .enumerate()
            {
                let seed = cfg.seed ^ ((3 * i + k) as u64 + 1) << 32;
                mine.push(
                    NetProxy::start(target, &world.network, seed)
                        .context("starting the network proxy")?,
                );
            }
        }
        proxies.push(mine);
    }
    let start_us = clock.now_us();
    let room = Room::new(
        world.devices.iter().map(|d| d.room.clone()).collect(),
        start_us,
        cfg.seed,
    )?;
    let room_thread = RealtimeRoom::start(room.clone(), clock.clone());
    let mut receivers = Vec::new();
    let mut clocks = Vec::new();
    let mut rx_cfgs = Vec::new();
    for (i, d) in world.devices.iter().enumerate() {
        let (stream_port, http_port, broker) = match proxies[i].as_slice() {
            [s, h, b] => (
                s.addr().port(),
                h.addr().port(),
                BrokerUrl {
                    host: "127.0.0.1".into(),
                    port: b.addr().port(),
                    ..broker.clone()
                },
            ),
            _ => (tx.stream_addr.port(), tx.http_addr.port(), broker.clone()),
        };
        let rcfg = ReceiverConfig {
            device: d.name.to_string(),
            transmitter_host: "127.0.0.1".into(),
            stream_port,
            http_port,
            broker: Some(broker),
            snapserver: None,
            profile: d.profile.clone(),
            drift: DriftConfig::default(),
            state_dir: state.as_ref().map(|s| s.path().join("receivers")),
            key: key.clone(),
            voice: Default::default(),
        };
        // The device's own crystal, as the room models it.
        let device_clock = ModelClock::new(clock.clone(), d.room.clock);
        receivers.push(Some(
            start_receiver(&rcfg, &room, device_clock.clone()).await?,
        ));
        clocks.push(device_clock);
        rx_cfgs.push(rcfg);
    }
    let http_addr = tx.http_addr;
    let n = world.devices.len();
    Ok(DemoSystem {
        tx: Some(tx),
        broker: broker.with_key(&key, "demo"),
        key,
        http_addr,
        receivers,
        room,
        devices: world.devices,
        clock,
        start_us,
        playout_delay_ms,
        parts: Parts {
            cfg: cfg.clone(),
            tx_cfg,
            silence,
            clocks,
            rx_cfgs,
            proxies,
            past: vec![(0, 0, 0, 0); n],
            _state: state,
        },
        _room_thread: room_thread,
    })
}

impl DemoSystem {
    /// The playout delay in effect, ms: the transmitter's (it grows to fit a device),
    /// or the start value while a restart has it down.
    pub fn playout_delay_now_ms(&self) -> f64 {
        self.tx.as_ref().map_or(self.playout_delay_ms, |t| {
            t.playout_delay().current_ms() as f64
        })
    }
}

/// Starts one receiver on the room's sink and microphone of its device.
async fn start_receiver(
    rcfg: &ReceiverConfig,
    room: &Room,
    device_clock: ModelClock,
) -> anyhow::Result<Receiver> {
    syncstream_receiver::start(
        rcfg.clone(),
        room.sink(&rcfg.device)?,
        room.microphone(&rcfg.device)?,
        Arc::new(device_clock),
    )
    .await
    .with_context(|| format!("starting receiver {}", rcfg.device))
}

/// Runs the default demo and returns its report.
///
/// Errors: the audio file cannot be read, or a server cannot start.
pub async fn run_demo(cfg: DemoConfig) -> anyhow::Result<Report> {
    run_world(cfg, default_world()).await
}

/// Runs `world` in real time, with its events, and returns its report (with the
/// event figures when there were events).
///
/// Errors: the audio file cannot be read, a server cannot start, or a restart event
/// cannot start the transmitter or a receiver again.
pub async fn run_world(cfg: DemoConfig, world: DemoWorld) -> anyhow::Result<Report> {
    let events = world.events.clone();
    let mut sys = start_system(&cfg, world).await?;
    eprintln!(
        "dashboard: http://127.0.0.1:{}/#token={} (API token {}; MQTT broker mqtt://{}:{})",
        sys.http_addr.port(),
        sys.key.api_token(),
        sys.key.api_token(),
        sys.broker.host,
        sys.broker.port
    );
    let (clock, room, start_us) = (sys.clock.clone(), sys.room.clone(), sys.start_us);
    let mut driver = events::EventDriver::new(events.clone(), sys.devices.len(), start_us);
    let mut log = TruthLog::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut printed = 0u32;
    let deadline_us = cfg.duration_s.map(|s| start_us + (s * 1e6) as i64);
    let mut table = LiveTable::new(std::io::stdout().is_terminal());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let now_us = clock.now_us();
        driver.run_due(&mut sys, now_us).await?;
        let truth = room.drain_truth();
        log.add(&truth, start_us as f64, sys.playout_delay_now_ms() * 1000.0);
        driver.record(&sys, &truth, now_us);
        if cfg.live_table && printed.is_multiple_of(4) {
            table.print(
                &sys.devices,
                &sys.receivers,
                &room,
                &log,
                (now_us - start_us) as f64 / 1e6,
            );
        }
        printed += 1;
        if deadline_us.is_some_and(|d| now_us >= d) {
            break;
        }
    }
    let truth = room.drain_truth();
    log.add(&truth, start_us as f64, sys.playout_delay_now_ms() * 1000.0);
    let end_us = clock.now_us();
    driver.record(&sys, &truth, end_us);
    let totals: Vec<_> = (0..sys.devices.len()).map(|i| sys.totals(i)).collect();
    let facts: Vec<DeviceFacts> = sys
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (_, underruns, jumps, offsets_applied) = totals[i];
            DeviceFacts {
                name: d.name.to_string(),
                output: d.profile.output_type.as_str().to_string(),
                profile_latency_ms: d.profile.base_latency_ms,
                true_latency_ms: room.true_latency_ms(i),
                final_offset_ms: sys.receivers[i]
                    .as_ref()
                    .map_or(f64::NAN, |r| r.snapshot().offset_ms),
                underruns,
                jumps,
                offsets_applied,
                clock_errors_us: Vec::new(),
            }
        })
        .collect();
    let duration_s = (end_us - start_us) as f64 / 1e6;
    let mut report = build_report(
        &log,
        &facts,
        &cfg.audio.display().to_string(),
        duration_s,
        sys.playout_delay_now_ms(),
    );
    driver.attach(&mut sys, &mut report, end_us, totals);
    drop(sys);
    Ok(report)
}

/// The demo's live table: redrawn in place on a terminal, printed block by block when
/// the output is a pipe or a file.
struct LiveTable {
    terminal: bool,
    lines: usize,
}

impl LiveTable {
    fn new(terminal: bool) -> Self {
        Self { terminal, lines: 0 }
    }

    fn print(
        &mut self,
        devices: &[DemoDevice],
        receivers: &[Option<Receiver>],
        room: &Room,
        log: &TruthLog,
        t_s: f64,
    ) {
        let residuals = log.latest_residuals();
        let mut rows = vec![
            format!(
                " t = {t_s:5.1} s   (true latency is hidden from the system; residual = how far the sound is from where it should be)"
            ),
            format!(
                " {:<10} {:<11} {:>9} {:>10} {:>10} {:>9} {:>6} {:>12} {:>9}",
                "device",
                "output",
                "profile",
                "true lat",
                "offset",
                "drift",
                "conf",
                "residual",
                "underruns"
            ),
        ];
        for (i, d) in devices.iter().enumerate() {
            let Some(s) = receivers
                .get(i)
                .and_then(|r| r.as_ref())
                .map(Receiver::snapshot)
            else {
                rows.push(format!(" {:<10} (restarting)", d.name));
                continue;
            };
            let (drift, conf) = s
                .last_report
                .as_ref()
                .map_or((None, 0.0), |r| (r.drift_ms, r.confidence));
            rows.push(format!(
                " {:<10} {:<11} {:>6.1} ms {:>7.2} ms {:>7.2} ms {:>9} {:>6.2} {:>12} {:>9}",
                d.name,
                d.profile.output_type.as_str(),
                d.profile.base_latency_ms,
                room.true_latency_ms(i),
                s.offset_ms,
                drift.map_or("—".to_string(), |v| format!("{v:+.2} ms")),
                conf,
                residuals
                    .get(&i)
                    .map_or("—".to_string(), |v| format!("{v:+.3} ms")),
                s.audio.underruns,
            ));
        }
        let mut out = String::new();
        if self.terminal && self.lines > 0 {
            // Back to the table's first line, and redraw it (each line cleared).
            out.push_str(&format!("\x1b[{}A", self.lines));
        } else {
            out.push('\n');
        }
        for r in &rows {
            if self.terminal {
                out.push_str("\x1b[2K");
            }
            out.push_str(r);
            out.push('\n');
        }
        self.lines = rows.len();
        let _ = std::io::stdout().write_all(out.as_bytes());
        let _ = std::io::stdout().flush();
    }
}
