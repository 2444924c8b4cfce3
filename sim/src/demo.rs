//! `syncstream demo`: the embedded broker (or an external one), a transmitter and three
//! receivers (analog speaker, HDMI TV, Chromecast-like) in one process, talking over the
//! real TCP, HTTP and MQTT paths, with the virtual room as their audio hardware. The
//! devices' true latencies are deliberately tens of ms away from their profiles.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_protocol::wire::Codec;
use syncstream_receiver::drift::DriftConfig;
use syncstream_receiver::{Receiver, ReceiverConfig};
use syncstream_room::{Hearing, RealtimeRoom, Room, VirtualDevice};
use syncstream_shared::profile::{DeviceProfile, OutputType};
use syncstream_shared::time::{Clock, MonotonicClock, STREAM_SAMPLE_RATE};
use syncstream_transmitter::{MqttMode, TransmitterConfig};

use crate::report::{build_report, DeviceFacts, Report, TruthLog};
use crate::source::looping_clip;

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
}

/// One demo device: its profile and its hidden truth.
#[derive(Debug, Clone)]
pub struct DemoDevice {
    /// Device name.
    pub name: &'static str,
    /// Profile the receiver starts from.
    pub profile: DeviceProfile,
    /// Its simulated hardware.
    pub room: VirtualDevice,
}

/// The three demo devices.
pub fn demo_devices() -> Vec<DemoDevice> {
    let mk = |name: &'static str,
              kind: OutputType,
              target: &str,
              true_latency_ms: f64,
              hears: [(&str, f64); 2]| {
        let mut profile = DeviceProfile::default_for(kind);
        profile.target = target.to_string();
        let mut room = VirtualDevice::new(name, true_latency_ms);
        room.mic_distance_m = profile.mic_distance_m;
        room.snr_db = 25.0;
        room.rt60_s = 0.4;
        room.hears = hears
            .iter()
            .map(|&(d, dist)| Hearing {
                device: d.to_string(),
                gain_db: -15.0,
                distance_m: dist,
            })
            .collect();
        DemoDevice {
            name,
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
            [("tv", 4.0), ("cast", 5.0)],
        ),
        // Profile 70 ms; this TV's "cinema" mode: 112 ms.
        mk(
            "tv",
            OutputType::Hdmi,
            "LivingRoom-TV",
            112.0,
            [("kitchen", 4.0), ("cast", 3.0)],
        ),
        // Profile 300 ms; this speaker: 262.5 ms.
        mk(
            "cast",
            OutputType::Chromecast,
            "NestAudio-LR",
            262.5,
            [("kitchen", 5.0), ("tv", 3.0)],
        ),
    ]
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running demo system: broker, transmitter, receivers and the real-time virtual
/// room. Dropping it stops everything.
pub struct DemoSystem {
    /// The transmitter (its broker URL, ports and controller).
    pub tx: syncstream_transmitter::Transmitter,
    /// One receiver per device, in `devices` order.
    pub receivers: Vec<Receiver>,
    /// The virtual room (true latencies, ground truth).
    pub room: Room,
    /// The devices started.
    pub devices: Vec<DemoDevice>,
    /// The clock every component runs on.
    pub clock: Arc<dyn Clock>,
    /// Local time at which the room started, µs.
    pub start_us: i64,
    /// Playout delay announced by the transmitter, ms.
    pub playout_delay_ms: f64,
    _room_thread: RealtimeRoom,
}

/// Starts the broker (unless `cfg.broker` names one), the transmitter playing
/// `cfg.audio`, the real-time virtual room of `devices` and one receiver per device.
///
/// Errors: the audio file cannot be read, or a server or receiver cannot start.
pub async fn start_system(
    cfg: &DemoConfig,
    devices: Vec<DemoDevice>,
) -> anyhow::Result<DemoSystem> {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let source = looping_clip(&cfg.audio)?;
    let mqtt = match &cfg.broker {
        Some(url) => MqttMode::External(url.clone()),
        None => MqttMode::Embedded(SocketAddr::from(([127, 0, 0, 1], free_port()?))),
    };
    let tx_cfg = TransmitterConfig {
        stream_addr: "127.0.0.1:0".parse()?,
        http_addr: "127.0.0.1:0".parse()?,
        mqtt,
        codec: cfg.codec,
        ..Default::default()
    };
    let playout_delay_ms = tx_cfg.playout_delay_ms as f64;
    let tx = syncstream_transmitter::start(tx_cfg, source, clock.clone()).await?;
    let start_us = clock.now_us();
    let room = Room::new(
        devices.iter().map(|d| d.room.clone()).collect(),
        start_us,
        cfg.seed,
    )?;
    let room_thread = RealtimeRoom::start(room.clone(), clock.clone());
    let mut receivers: Vec<Receiver> = Vec::new();
    for d in &devices {
        let rcfg = ReceiverConfig {
            device: d.name.to_string(),
            transmitter_host: "127.0.0.1".into(),
            stream_port: tx.stream_addr.port(),
            http_port: tx.http_addr.port(),
            broker: tx.broker.clone(),
            profile: d.profile.clone(),
            drift: DriftConfig::default(),
        };
        let r = syncstream_receiver::start(
            rcfg,
            room.sink(d.name)?,
            room.microphone(d.name)?,
            clock.clone(),
        )
        .await
        .with_context(|| format!("starting receiver {}", d.name))?;
        receivers.push(r);
    }
    Ok(DemoSystem {
        tx,
        receivers,
        room,
        devices,
        clock,
        start_us,
        playout_delay_ms,
        _room_thread: room_thread,
    })
}

/// Runs the demo and returns its report.
///
/// Errors: the audio file cannot be read, or a server cannot start.
pub async fn run_demo(cfg: DemoConfig) -> anyhow::Result<Report> {
    let sys = start_system(&cfg, demo_devices()).await?;
    let (clock, room, devices, receivers, start_us, playout_delay_ms) = (
        sys.clock.clone(),
        sys.room.clone(),
        &sys.devices,
        &sys.receivers,
        sys.start_us,
        sys.playout_delay_ms,
    );
    let mut log = TruthLog::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut printed = 0u32;
    let deadline_us = cfg.duration_s.map(|s| start_us + (s * 1e6) as i64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        log.add(
            &room.drain_truth(),
            start_us as f64,
            playout_delay_ms * 1000.0,
        );
        if cfg.live_table && printed.is_multiple_of(4) {
            print_table(
                devices,
                receivers,
                &room,
                &log,
                (clock.now_us() - start_us) as f64 / 1e6,
            );
        }
        printed += 1;
        if deadline_us.is_some_and(|d| clock.now_us() >= d) {
            break;
        }
    }
    log.add(
        &room.drain_truth(),
        start_us as f64,
        playout_delay_ms * 1000.0,
    );
    let facts: Vec<DeviceFacts> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let c = receivers[i].core.lock().unwrap();
            DeviceFacts {
                name: d.name.to_string(),
                output: d.profile.output_type.as_str().to_string(),
                profile_latency_ms: d.profile.base_latency_ms,
                true_latency_ms: room.true_latency_ms(i),
                final_offset_ms: c.playout.offset_ms(),
                underruns: c.playout.stats().underruns,
                jumps: c.playout.stats().jumps,
                offsets_applied: 0,
                clock_errors_us: Vec::new(),
            }
        })
        .collect();
    let duration_s = (clock.now_us() - start_us) as f64 / 1e6;
    drop(sys);
    Ok(build_report(
        &log,
        &facts,
        &cfg.audio.display().to_string(),
        duration_s,
        playout_delay_ms,
    ))
}

fn print_table(
    devices: &[DemoDevice],
    receivers: &[Receiver],
    room: &Room,
    log: &TruthLog,
    t_s: f64,
) {
    let residuals = log.latest_residuals();
    let mut out = String::new();
    out.push_str(&format!(
        "\n t = {t_s:5.1} s   (true latency is hidden from the system; residual = how far the sound is from where it should be)\n"
    ));
    out.push_str(&format!(
        " {:<8} {:<11} {:>9} {:>10} {:>10} {:>9} {:>6} {:>12} {:>9}\n",
        "device",
        "output",
        "profile",
        "true lat",
        "offset",
        "drift",
        "conf",
        "residual",
        "underruns"
    ));
    for (i, d) in devices.iter().enumerate() {
        let c = receivers[i].core.lock().unwrap();
        let (drift, conf) = c
            .last_report
            .as_ref()
            .map_or((None, 0.0), |r| (r.drift_ms, r.confidence));
        out.push_str(&format!(
            " {:<8} {:<11} {:>6.1} ms {:>7.2} ms {:>7.2} ms {:>9} {:>6.2} {:>12} {:>9}\n",
            d.name,
            d.profile.output_type.as_str(),
            d.profile.base_latency_ms,
            room.true_latency_ms(i),
            c.playout.offset_ms(),
            drift.map_or("—".to_string(), |v| format!("{v:+.2} ms")),
            conf,
            residuals
                .get(&i)
                .map_or("—".to_string(), |v| format!("{v:+.3} ms")),
            c.playout.stats().underruns,
        ));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = STREAM_SAMPLE_RATE;
}
