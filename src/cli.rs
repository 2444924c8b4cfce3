//! Subcommands of the `syncstream` tool.

#[cfg(feature = "transmitter")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use syncstream_audio::{find_microphone, find_sink, BackendConfig, StreamFormat};
use syncstream_protocol::mqtt::BrokerUrl;
#[cfg(feature = "transmitter")]
use syncstream_protocol::wire::Codec;
use syncstream_shared::profile::DeviceProfile;
use syncstream_shared::time::{Clock, MonotonicClock, STREAM_CHANNELS, STREAM_SAMPLE_RATE};

/// Multi-room audio sync that listens.
#[derive(Parser, Debug)]
#[command(name = "syncstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream a source to the receivers, run the sync controller and (by default) the MQTT broker.
    #[cfg(feature = "transmitter")]
    Transmitter(TransmitterArgs),
    /// Play the stream on this device's output and keep it in sync by listening.
    Receiver(ReceiverArgs),
    /// Transmitter, three receivers and a virtual room in one process.
    #[cfg(feature = "simulator")]
    Demo(DemoArgs),
    /// Run a scenario on virtual time, faster than real time, and report sync accuracy.
    #[cfg(feature = "simulator")]
    Sim(SimArgs),
    /// Delay of a recording against a reference (both start at the same instant),
    /// printed as JSON: {"delay_ms": 37.291, "confidence": 0.93, ...} or
    /// {"delay_ms": null, "reason": ...}.
    Delay(DelayArgs),
    /// Measure each device's output latency with a test signal (in a scenario's virtual
    /// room, or against a live system over MQTT) and print one JSON object.
    #[cfg(feature = "transmitter")]
    Calibrate(CalibrateArgs),
    /// Run the receiver or the transmitter as a system service, configured by a TOML
    /// file (/etc/syncstream/*.toml), with systemd readiness, watchdog and signed updates.
    Service(crate::service::ServiceArgs),
    /// Release keys and signed update bundles.
    Release(crate::release::ReleaseArgs),
    /// The pairing key's credentials: the API token, an MQTT user's password, or the
    /// key itself (to pair a receiver).
    Key(KeyArgs),
    /// List the transmitters and receivers on the network (mDNS / DNS-SD): addresses,
    /// ports, versions, and each receiver's output and state (docs/discovery.md).
    Discover(crate::discover::DiscoverArgs),
}

#[derive(Args, Debug)]
struct KeyArgs {
    /// What to print: `token` (the HTTP API token), `mqtt-password` (the MQTT password
    /// of --user, for a mosquitto password file) or `show` (the key, 64 hex digits).
    #[arg(value_parser = ["token", "mqtt-password", "show"])]
    what: String,
    /// The MQTT user name (a receiver's device name, or syncstream-transmitter).
    #[arg(long, required_if_eq("what", "mqtt-password"))]
    user: Option<String>,
    /// The key file (default: $SYNCSTREAM_KEY_FILE, else ~/.config/syncstream/pairing.key).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[cfg(feature = "transmitter")]
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["scenario", "mqtt"])))]
struct CalibrateArgs {
    /// Calibrate this simulator scenario's virtual room (JSON; see scenarios/).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Calibrate the live system on this broker (mqtt://host:port); it logs in with the
    /// pairing key of --key-file when there is one.
    #[arg(long)]
    mqtt: Option<BrokerUrl>,
    /// The pairing key file (live; default: $SYNCSTREAM_KEY_FILE, else
    /// ~/.config/syncstream/pairing.key).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The CA (PEM) that an `mqtts://` broker's certificate must chain to.
    #[arg(long)]
    mqtt_ca: Option<PathBuf>,
    /// Devices to calibrate, comma-separated (live; default: every device with a status).
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<String>>,
    /// Test signal: sweep or mls (default: sweep, or mls with --simultaneous).
    #[arg(long)]
    signal: Option<String>,
    /// Calibrate all devices at once with orthogonal MLS sequences.
    #[arg(long)]
    simultaneous: bool,
    /// Folder of device profiles (<device>.json) to update with the measured latencies (live).
    #[arg(long)]
    profiles_dir: Option<PathBuf>,
    /// Seconds to wait for each device's answer (live), 0.1 to 3600.
    #[arg(long, default_value_t = 20.0, value_parser = number_in(0.1, 3600.0, "s"))]
    timeout_s: f64,
    /// Write plots and summary.json into this folder.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[cfg(feature = "simulator")]
#[derive(Args, Debug)]
struct SimArgs {
    /// Scenario file (JSON; see scenarios/).
    #[arg(long)]
    scenario: PathBuf,
    /// Write the JSON report here (default: stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Stream codec instead of the scenario's: opus or pcm.
    #[arg(long)]
    codec: Option<Codec>,
}

#[derive(Args, Debug)]
struct DelayArgs {
    /// The reference audio file (what was played).
    #[arg(long)]
    reference: PathBuf,
    /// The recording (what the microphone heard), starting at the same instant.
    #[arg(long)]
    recording: PathBuf,
    /// Largest delay searched either way, ms (0 to 60000).
    #[arg(
        long,
        default_value_t = 1000.0,
        value_parser = number_in(0.0, crate::delay_command::MAX_LAG_MS, "ms")
    )]
    max_lag_ms: f64,
}

#[cfg(feature = "transmitter")]
#[derive(Args, Debug)]
struct TransmitterArgs {
    /// Audio source of the stream `default`: an audio file (any format symphonia
    /// reads), `-` for raw s16le PCM on stdin, `alsa` or `alsa:DEVICE` for an ALSA
    /// capture device, `tone` or `tone:HZ`, or a stream URI.
    #[arg(long)]
    source: Option<String>,
    /// A named stream, as a Snapcast-style URI (repeatable):
    /// `pipe:///tmp/snapfifo?name=radio`, `file:///srv/music/a.flac?name=music`,
    /// `alsa:///?device=hw:1&name=tv`, `process:///usr/bin/librespot?name=spotify&params=...`,
    /// `tone:///?name=beep&freq=440`.
    #[arg(long = "stream")]
    streams: Vec<String>,
    /// The control plane's state folder: groups, volumes, mutes and manual adjustments
    /// persist in state.json there (default: nothing persists).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Loop a file source.
    #[arg(long = "loop")]
    loop_file: bool,
    /// Sample rate of raw PCM on stdin, Hz (1000 to 768000).
    #[arg(long, default_value_t = 48_000, value_parser = clap::value_parser!(u32).range(
        syncstream_transmitter::source::MIN_SOURCE_RATE_HZ as i64
            ..=syncstream_transmitter::source::MAX_SOURCE_RATE_HZ as i64
    ))]
    stdin_rate: u32,
    /// Channels of raw PCM on stdin (1 to 32).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=32))]
    stdin_channels: u16,
    /// Audio stream listen address.
    #[arg(long, default_value = "0.0.0.0:4953")]
    stream_listen: SocketAddr,
    /// HTTP API listen address.
    #[arg(long, default_value = "0.0.0.0:4954")]
    http_listen: SocketAddr,
    /// Use this external MQTT broker instead of the embedded one (mqtt://host:port).
    #[arg(long)]
    mqtt: Option<BrokerUrl>,
    /// Listen address of the embedded broker.
    #[arg(long, default_value = "0.0.0.0:1883")]
    broker_listen: SocketAddr,
    /// Stream codec: opus or pcm.
    #[arg(long, default_value = "opus")]
    codec: Codec,
    /// Playout delay announced to receivers at start, ms (100 to 10000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(
        syncstream_shared::limits::MIN_PLAYOUT_DELAY_MS as i64
            ..=syncstream_shared::limits::MAX_PLAYOUT_DELAY_MS as i64
    ))]
    playout_delay_ms: u32,
    /// Largest playout delay, ms, the transmitter may grow to by itself when a device's
    /// output latency needs more (a Chromecast buffers seconds); at most 10000, and the
    /// rolling buffer less 3 s. Give the same value as --playout-delay-ms to keep the
    /// delay fixed.
    #[arg(long, default_value_t = syncstream_shared::limits::MAX_PLAYOUT_DELAY_MS,
          value_parser = clap::value_parser!(u32).range(
        0..=syncstream_shared::limits::MAX_PLAYOUT_DELAY_MS as i64
    ))]
    max_playout_delay_ms: u32,
    /// Seconds of source audio kept for source windows (1 to 600).
    #[arg(long, default_value_t = 30.0, value_parser = number_in(
        syncstream_transmitter::MIN_BUFFER_SECONDS,
        syncstream_transmitter::MAX_BUFFER_SECONDS,
        "s"
    ))]
    buffer_seconds: f64,
    /// Folder of device profiles (<device>.json): a device whose settled offset stays
    /// more than 2 ms from its profile for 10 minutes gets its base_latency_ms updated.
    #[arg(long)]
    profiles_dir: Option<PathBuf>,
    /// Folder of signed update bundles (`syncstream release sign`) to serve on
    /// /api/v1/updates/ and announce on syncstream/update.
    #[arg(long)]
    updates_dir: Option<PathBuf>,
    /// The pairing key file, created on the first start (default: pairing.key in
    /// --state-dir, else $SYNCSTREAM_KEY_FILE, else ~/.config/syncstream/pairing.key).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Let anyone on the network read the HTTP API (status, devices, the dashboard's
    /// live view) without the token; changes and the source windows still need it.
    #[arg(long)]
    open_read: bool,
    /// Home Assistant MQTT discovery prefix: receivers and the transmitter appear in
    /// Home Assistant as devices (docs/homeassistant.md).
    #[arg(long, default_value = "homeassistant", value_parser = ha_prefix)]
    ha_discovery_prefix: String,
    /// Do not publish Home Assistant discovery configs.
    #[arg(long)]
    no_ha_discovery: bool,
    /// The dashboard's URL as Home Assistant links to it (default
    /// http://<host name>.local:<HTTP port>/).
    #[arg(long)]
    dashboard_url: Option<String>,
    /// The CA (PEM) that an `mqtts://` broker's certificate must chain to (default:
    /// the system's roots).
    #[arg(long)]
    mqtt_ca: Option<PathBuf>,
    /// Also listen for MQTT over TLS on this address (embedded broker; e.g.
    /// 0.0.0.0:8883), with --broker-tls-cert and --broker-tls-key.
    #[arg(long, requires_all = ["broker_tls_cert", "broker_tls_key"])]
    broker_tls_listen: Option<SocketAddr>,
    /// The embedded broker's TLS certificate chain (PEM).
    #[arg(long, requires = "broker_tls_listen")]
    broker_tls_cert: Option<PathBuf>,
    /// The embedded broker's TLS private key (PEM).
    #[arg(long, requires = "broker_tls_listen")]
    broker_tls_key: Option<PathBuf>,
    /// Also serve the API and dashboard over HTTPS on this address (e.g.
    /// 0.0.0.0:4955), with --https-cert and --https-key.
    #[arg(long, requires_all = ["https_cert", "https_key"])]
    https_listen: Option<SocketAddr>,
    /// The HTTPS certificate chain (PEM).
    #[arg(long, requires = "https_listen")]
    https_cert: Option<PathBuf>,
    /// The HTTPS private key (PEM).
    #[arg(long, requires = "https_listen")]
    https_key: Option<PathBuf>,
    /// Do not advertise this transmitter over mDNS / DNS-SD (receivers then need
    /// --transmitter; docs/discovery.md).
    #[arg(long)]
    no_mdns: bool,
    /// The name this transmitter is advertised under over mDNS, what a receiver's
    /// --transmitter-name picks (default: the host name; at most 63 bytes).
    #[arg(long, conflicts_with = "no_mdns", value_parser = instance_name)]
    mdns_name: Option<String>,
}

#[derive(Args, Debug)]
struct ReceiverArgs {
    /// Device name (MQTT topics use it): letters, digits, '-' and '_', 1 to 64.
    #[arg(long, required_unless_present_any = ["list_devices", "list_microphones", "check_mic"])]
    name: Option<String>,
    /// Print the outputs there are (ALSA devices, sound-server sinks for Bluetooth and
    /// AirPlay) with the names to put in a profile's `target` or `--output-device`,
    /// and exit.
    #[arg(long)]
    list_devices: bool,
    /// Print the ALSA capture devices (microphones) with the names for
    /// `--mic-device`, and exit.
    #[arg(long)]
    list_microphones: bool,
    /// Check the microphone and exit: record a few seconds while the output plays a
    /// 1 kHz test tone, print level (dBFS), DC offset, clipping, mains hum, the channel
    /// that carries signal and whether the tone is heard, with a verdict (exit code 1
    /// when something is wrong).
    #[arg(long)]
    check_mic: bool,
    /// Seconds the microphone check analyses (1 to 60).
    #[arg(long, default_value_t = 5.0, value_parser = number_in(1.0, 60.0, "s"))]
    check_seconds: f64,
    /// The microphone check plays no test tone.
    #[arg(long)]
    no_tone: bool,
    /// Print the microphone check as JSON.
    #[arg(long)]
    json: bool,
    /// Folder where the receiver keeps its state across restarts (its last offset), so
    /// it starts where it was instead of from its profile.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The pairing key, 64 hex digits (the transmitter's; see docs/security.md); also
    /// from the environment variable SYNCSTREAM_KEY.
    #[arg(long)]
    key: Option<String>,
    /// The pairing key's file (default: $SYNCSTREAM_KEY_FILE, else
    /// ~/.config/syncstream/pairing.key).
    #[arg(long, conflicts_with = "key")]
    key_file: Option<PathBuf>,
    /// The CA (PEM) that an `mqtts://` broker's certificate must chain to (default:
    /// the system's roots).
    #[arg(long)]
    mqtt_ca: Option<PathBuf>,
    /// Transmitter host name or address (default: the first transmitter found over
    /// mDNS, or --transmitter-name's; docs/discovery.md).
    #[arg(long)]
    transmitter: Option<String>,
    /// Without --transmitter: use the transmitter advertised under this name over
    /// mDNS (`syncstream discover` lists them), waiting until it answers.
    #[arg(long, conflicts_with_all = ["transmitter", "snapserver", "no_mdns"],
          value_parser = instance_name)]
    transmitter_name: Option<String>,
    /// No mDNS: do not look for the transmitter (give --transmitter) and do not
    /// advertise this receiver.
    #[arg(long)]
    no_mdns: bool,
    /// Transmitter stream port (default: the one the transmitter advertises, else 4953).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    stream_port: Option<u16>,
    /// Transmitter HTTP port (default: the one the transmitter advertises, else 4954).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    http_port: Option<u16>,
    /// MQTT broker (default: the transmitter's broker, as it advertises it, else port
    /// 1883 on the transmitter's host; with --snapserver, none).
    #[arg(long)]
    mqtt: Option<BrokerUrl>,
    /// Play from a Snapcast server instead of a SyncStream transmitter: its host, and
    /// its stream port if not 1704 (`HOST[:PORT]`). The receiver joins as a client
    /// named --name, follows the server's volume, mute and latency, and corrects its
    /// own output latency from its microphone (docs/snapcast.md).
    #[arg(long, value_parser = snapserver_addr)]
    snapserver: Option<String>,
    /// Device profile (JSON); default: an analog profile.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Output backend: alsa, bluetooth, airplay, cast, pulse, command, wav or null
    /// (default: the one the profile's `type` plays through: alsa for analog and hdmi).
    #[arg(long)]
    output: Option<String>,
    /// Output device (default: the profile's `target`): an ALSA device name, a
    /// Bluetooth address or name, an AirPlay or Cast device's name, a sound-server
    /// sink, a player command line (`command`), or a WAV path.
    #[arg(long)]
    output_device: Option<String>,
    /// Microphone backend: alsa, wav or null.
    #[arg(long, default_value = "alsa")]
    mic: String,
    /// Microphone device (ALSA device name, or WAV path).
    #[arg(long)]
    mic_device: Option<String>,
    /// Status LED on this GPIO pin (BCM number, 0 to 27, not an I2S pin 18 to 21;
    /// docs/gpio.md). Needs a build with the `gpio` feature.
    #[arg(long)]
    led_pin: Option<u8>,
    /// Push button on this GPIO pin (BCM number), wired to GND (internal pull-up):
    /// short press resync, long press calibrate, double press announce.
    #[arg(long)]
    button_pin: Option<u8>,
    /// The LED lights when its pin is low (wired from 3.3 V to the pin).
    #[arg(long, requires = "led_pin")]
    led_active_low: bool,
    /// Say the device's name, state, drift and offset through its output when it
    /// first plays (as the `announce` MQTT command does; needs espeak-ng; docs/voice.md).
    #[arg(long)]
    announce_at_start: bool,
}

#[cfg(feature = "simulator")]
#[derive(Args, Debug)]
struct DemoArgs {
    /// Audio file to play (default: the clip shipped in assets/audio).
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Stop after this many seconds, 0.1 to 86400 (default: run until Ctrl-C).
    #[arg(long, value_parser = number_in(0.1, 86_400.0, "s"))]
    duration: Option<f64>,
    /// Write the JSON report here at the end.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Use this external MQTT broker instead of the embedded one.
    #[arg(long)]
    mqtt: Option<BrokerUrl>,
    /// Stream codec: opus or pcm.
    #[arg(long, default_value = "opus")]
    codec: Codec,
    /// Seed of the virtual room's noise and reverberation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not print the live table.
    #[arg(long)]
    quiet: bool,
    /// Run this simulator scenario (JSON; see scenarios/) in real time instead of the
    /// three default devices: its devices, clocks, rooms, network and playout delay, its
    /// audio and its duration unless --audio or --duration say otherwise.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Port of the dashboard and the control API (on every address; 0: any free port
    /// on 127.0.0.1).
    #[arg(long, default_value_t = 4954)]
    http_port: u16,
    /// Keep groups, volumes, mutes and manual adjustments in state.json in this
    /// folder, across runs (default: nothing persists).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Streams beside `default` (the audio), as Snapcast-style URIs, repeatable
    /// (default: a 440 Hz tone named `tone`).
    #[arg(long = "stream")]
    streams: Vec<String>,
}

/// A command-line parser for a finite number in `lo..=hi` (in `unit`): `inf`, `NaN`
/// and numbers out of range are refused with the range in the message.
pub(crate) fn number_in(
    lo: f64,
    hi: f64,
    unit: &'static str,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|e| format!("'{text}' is not a number: {e}"))?;
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is outside {lo} to {hi} {unit}"))
        }
    }
}

/// Runs the tool; prints errors with their causes and returns a non-zero exit code.
pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Service(a) = &cli.command {
        // The service's file becomes the command's flags (see service.rs).
        init_logging("warn,syncstream=info");
        match crate::service::command_line(a) {
            Ok(argv) => cli = Cli::parse_from(argv),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Daemons log what they do; the interactive commands only warnings (the demo's live
    // table and the JSON outputs stay readable). RUST_LOG overrides both. The embedded
    // broker's per-connection errors are off: it logs every client that goes away (the
    // receivers at the demo's end, the start-up probe of its port) as an ERROR, while
    // the clients log their own connection trouble and the broker's login check says
    // who was refused.
    let default_filter = match cli.command {
        #[cfg(feature = "transmitter")]
        Command::Transmitter(_) => "warn,syncstream=info,rumqttd=error,rumqttd::server::broker=off",
        Command::Receiver(_) => "warn,syncstream=info",
        _ => "warn,rumqttd=error,rumqttd::server::broker=off",
    };
    init_logging(default_filter);

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            #[cfg(feature = "transmitter")]
            Command::Transmitter(a) => transmitter(a).await,
            Command::Receiver(a) => receiver(a).await,
            #[cfg(feature = "simulator")]
            Command::Demo(a) => demo(a).await,
            #[cfg(feature = "simulator")]
            Command::Sim(a) => tokio::task::spawn_blocking(move || sim(a)).await?,
            Command::Delay(a) => delay(a),
            #[cfg(feature = "transmitter")]
            Command::Calibrate(a) => calibrate(a).await,
            Command::Service(_) => anyhow::bail!("service: nested service command"),
            Command::Release(a) => crate::release::run(a),
            Command::Key(a) => key(a),
            Command::Discover(a) => crate::discover::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "transmitter")]
/// `syncstream calibrate`: one JSON object on standard output, failures on standard
/// error; fails only when no device was calibrated.
async fn calibrate(a: CalibrateArgs) -> anyhow::Result<()> {
    use syncstream_calibration::live::{calibrate_live, LiveOptions};
    use syncstream_calibration::SignalKind;
    let signal: SignalKind = match &a.signal {
        Some(s) => s.parse()?,
        None if a.simultaneous => SignalKind::Mls,
        None => SignalKind::Sweep,
    };
    let run = if let Some(path) = &a.scenario {
        #[cfg(feature = "simulator")]
        {
            use syncstream_sim::calibrate::{calibrate_scenario, ScenarioOptions};
            let scenario = syncstream_sim::Scenario::load(path)?;
            let opts = ScenarioOptions {
                signal,
                simultaneous: a.simultaneous,
                report_dir: a.report_dir.clone(),
            };
            tokio::task::spawn_blocking(move || calibrate_scenario(&scenario, &opts)).await??
        }
        #[cfg(not(feature = "simulator"))]
        anyhow::bail!(
            "calibrating scenario {} needs the virtual room: this build has no feature simulator",
            path.display()
        )
    } else if let Some(broker) = a.mqtt.clone() {
        let broker = match crate::pairing::receiver_key(None, a.key_file.as_deref()) {
            Ok(key) => broker.with_key(&key, "syncstream-calibrate"),
            Err(e) if a.key_file.is_some() => return Err(e),
            Err(_) => broker,
        };
        let broker = match &a.mqtt_ca {
            Some(ca) => broker.with_ca_file(ca).map_err(anyhow::Error::msg)?,
            None => broker,
        };
        if !(a.timeout_s.is_finite() && a.timeout_s > 0.0 && a.timeout_s <= 3600.0) {
            anyhow::bail!(
                "--timeout-s must be between 0 and 3600 s, got {}",
                a.timeout_s
            );
        }
        calibrate_live(&LiveOptions {
            broker,
            devices: a.devices.clone(),
            signal,
            simultaneous: a.simultaneous,
            profiles_dir: a.profiles_dir.clone(),
            timeout: std::time::Duration::from_secs_f64(a.timeout_s),
            discovery: std::time::Duration::from_millis(1500),
            report_dir: a.report_dir.clone(),
            progress: !a.quiet,
        })
        .await?
    } else {
        anyhow::bail!("give --scenario FILE or --mqtt mqtt://host:port");
    };
    println!("{}", serde_json::to_string_pretty(&run)?);
    for d in &run.devices {
        if let Some(f) = &d.failure {
            eprintln!("{f}");
        }
    }
    if run.succeeded == 0 {
        anyhow::bail!("no device was calibrated ({} failed)", run.failed);
    }
    Ok(())
}

/// `syncstream key`: prints one credential derived from the key file.
fn key(a: KeyArgs) -> anyhow::Result<()> {
    let key = crate::pairing::receiver_key(None, a.key_file.as_deref())?;
    match a.what.as_str() {
        "token" => println!("{}", key.api_token()),
        "show" => println!("{}", key.to_text()),
        _ => {
            let user = a.user.context("--user is required")?;
            syncstream_shared::names::check_device_name(&user)
                .map_err(|e| anyhow::anyhow!("--user: {e}"))?;
            println!("{}", key.mqtt_password(&user));
        }
    }
    Ok(())
}

/// `syncstream delay`: one JSON object on standard output.
fn delay(a: DelayArgs) -> anyhow::Result<()> {
    let v = crate::delay_command::run_delay(&a.reference, &a.recording, a.max_lag_ms)?;
    println!("{v}");
    Ok(())
}

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(feature = "transmitter")]
fn ha_prefix(s: &str) -> Result<String, String> {
    syncstream_transmitter::control::homeassistant::check_prefix(s)?;
    Ok(s.to_string())
}

#[cfg(feature = "transmitter")]
async fn transmitter(a: TransmitterArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let opts = syncstream_transmitter::source::SourceOptions {
        loop_file: a.loop_file,
        stdin_rate_hz: a.stdin_rate,
        stdin_channels: a.stdin_channels,
    };
    let sources = open_streams(a.source.as_deref(), &a.streams, &opts)?;
    let cfg = syncstream_transmitter::TransmitterConfig {
        stream_addr: a.stream_listen,
        http_addr: a.http_listen,
        mqtt: match a.mqtt {
            Some(url) => syncstream_transmitter::MqttMode::External(match &a.mqtt_ca {
                Some(ca) => url.with_ca_file(ca).map_err(anyhow::Error::msg)?,
                None => url,
            }),
            None => syncstream_transmitter::MqttMode::Embedded(a.broker_listen),
        },
        broker_tls: match (a.broker_tls_listen, a.broker_tls_cert, a.broker_tls_key) {
            (Some(listen), Some(cert), Some(key)) => {
                Some(syncstream_transmitter::BrokerTls { listen, cert, key })
            }
            _ => None,
        },
        https: match (a.https_listen, a.https_cert, a.https_key) {
            (Some(listen), Some(cert), Some(key)) => {
                Some(syncstream_transmitter::HttpsConfig { listen, cert, key })
            }
            _ => None,
        },
        codec: a.codec,
        buffer_seconds: a.buffer_seconds,
        playout_delay_ms: a.playout_delay_ms,
        max_playout_delay_ms: a.max_playout_delay_ms,
        profiles_dir: a.profiles_dir,
        updates_dir: a.updates_dir,
        key: {
            let path =
                crate::pairing::transmitter_key_file(a.key_file.as_deref(), a.state_dir.as_deref());
            crate::pairing::transmitter_key(&path)?
        },
        open_read: a.open_read,
        homeassistant: (!a.no_ha_discovery).then_some(
            syncstream_transmitter::control::homeassistant::DiscoveryOptions {
                prefix: a.ha_discovery_prefix,
                dashboard_url: a.dashboard_url,
            },
        ),
        state_dir: a.state_dir,
        source_options: opts,
        mdns_name: (!a.no_mdns).then(|| {
            a.mdns_name
                .unwrap_or_else(syncstream_protocol::discovery::host_name)
        }),
        ..Default::default()
    };
    let token = cfg.key.api_token();
    let tx = syncstream_transmitter::start_streams(cfg, sources, clock).await?;
    tracing::info!(
        "dashboard: http://<this host>:{}/#token={token} (the API token; `syncstream key token` prints it)",
        tx.http_addr.port()
    );
    crate::service::transmitter_running().await // systemd readiness (issue 13); waits for Ctrl-C/SIGTERM
}

/// The streams of `--source` (named `default`) and `--stream` URIs, opened.
///
/// Errors: neither given, a source that cannot open, a URI without a name (but the
/// first), two streams with one name.
#[cfg(feature = "transmitter")]
fn open_streams(
    source: Option<&str>,
    uris: &[String],
    opts: &syncstream_transmitter::source::SourceOptions,
) -> anyhow::Result<Vec<syncstream_transmitter::NamedSource>> {
    use syncstream_transmitter::source::{open_source, open_uri};
    use syncstream_transmitter::NamedSource;
    let mut out = Vec::new();
    if let Some(spec) = source {
        let mut src = open_source(spec, opts)?;
        let description = src.describe();
        tracing::info!("stream default: {description}");
        out.push(NamedSource::default_stream(
            Box::new(move |buf: &mut [f32]| src.read(buf)),
            spec,
            &description,
        ));
    }
    for uri in uris {
        let (parsed, mut src) = open_uri(uri, opts)?;
        let name = match parsed.name {
            Some(n) => n,
            None if out.is_empty() => "default".to_string(),
            None => anyhow::bail!("--stream {uri}: give it a name (?name=...)"),
        };
        if out.iter().any(|s: &NamedSource| s.name == name) {
            anyhow::bail!("--stream {uri}: a stream named '{name}' is already given");
        }
        let description = src.describe();
        tracing::info!("stream {name}: {description}");
        out.push(NamedSource {
            name,
            uri: uri.clone(),
            description,
            pull: Box::new(move |buf: &mut [f32]| src.read(buf)),
        });
    }
    if out.is_empty() {
        anyhow::bail!("give --source (the stream `default`) or --stream URI");
    }
    Ok(out)
}

/// `--list-devices` / `--list-microphones`: what there is, with the names to use.
fn list_devices(outputs: bool) -> anyhow::Result<()> {
    let infos = syncstream_audio::alsa::list_device_infos()?;
    println!(
        "ALSA {} (profile type analog or hdmi: `target` or --output-device):",
        if outputs {
            "outputs"
        } else {
            "microphones (--mic-device)"
        }
    );
    for d in infos
        .iter()
        .filter(|d| if outputs { d.output } else { d.input })
    {
        if d.description.is_empty() || d.description == d.name {
            println!("  {}", d.name);
        } else {
            println!("  {:<40} {}", d.name, d.description);
        }
    }
    if !outputs {
        return Ok(());
    }
    use syncstream_audio::pulse::{list_sinks, SinkKind};
    match list_sinks() {
        Ok(sinks) => {
            println!("Sound-server sinks (PulseAudio/PipeWire):");
            for s in &sinks {
                let backend = if SinkKind::Bluetooth.admits(s) {
                    "bluetooth"
                } else if SinkKind::Airplay.admits(s) {
                    "airplay"
                } else {
                    "pulse"
                };
                println!(
                    "  {:<40} {:<28} (type/--output {backend})",
                    s.name, s.description
                );
            }
        }
        Err(e) => println!("No sound-server sinks: {e}"),
    }
    Ok(())
}

/// `--mdns-name`, `--transmitter-name`: an mDNS instance name (1 to 63 bytes, no
/// control character).
fn instance_name(s: &str) -> Result<String, String> {
    syncstream_protocol::discovery::check_instance_name(s)?;
    Ok(s.to_string())
}

/// `--snapserver`: `HOST` or `HOST:PORT` (port 1..=65535, default 1704); an IPv6
/// address goes in brackets with a port (`[::1]:1704`).
fn snapserver_addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty: give the Snapcast server's host, e.g. snapserver.local".into());
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{s}]:1704"));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => Ok(s.to_string()),
                _ => Err(format!("port '{port}' is not a number from 1 to 65535")),
            }
        }
        Some(_) => Err(format!("'{s}' has no host before the port")),
        None => Ok(format!("{s}:1704")),
    }
}

/// The profile of `--profile`, or an analog one.
fn load_local_profile(path: Option<&std::path::Path>) -> anyhow::Result<DeviceProfile> {
    Ok(match path {
        Some(p) => DeviceProfile::load(p)?,
        None => DeviceProfile::default_for(syncstream_shared::profile::OutputType::Analog),
    })
}

async fn receiver(a: ReceiverArgs) -> anyhow::Result<()> {
    if a.list_devices || a.list_microphones {
        return list_devices(a.list_devices);
    }
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let pushed = a
        .state_dir
        .as_deref()
        .zip(a.name.as_deref())
        .map(|(d, n)| syncstream_receiver::runtime::pushed_profile_path(d, n))
        .filter(|p| p.exists());
    let profile = match (&pushed, &a.profile) {
        // The transmitter's push, kept from the last run, wins over the local file.
        (Some(p), _) => match DeviceProfile::load(p) {
            Ok(profile) => {
                tracing::info!("profile: the one last pushed, kept in {}", p.display());
                profile
            }
            Err(e) => {
                tracing::warn!("{e}; using the local profile");
                load_local_profile(a.profile.as_deref())?
            }
        },
        (None, local) => load_local_profile(local.as_deref())?,
    };
    let by_profile = syncstream_audio::backend_for(profile.output_type);
    let output = a.output.clone().unwrap_or_else(|| by_profile.to_string());
    let sink_builder = find_sink(&output).with_context(|| {
        if output == "cast" {
            format!(
                "the {} output needs a build with the `cast` feature (the Pi Zero package has none; see docs/outputs/chromecast.md)",
                profile.output_type.as_str()
            )
        } else {
            format!(
                "unknown output backend '{}' (expected one of {:?})",
                output,
                syncstream_audio::backend_names()
            )
        }
    })?;
    // The profile's target names the device of the backend its type chooses.
    let output_device = a.output_device.clone().or_else(|| {
        (output == by_profile && !profile.target.trim().is_empty()).then(|| profile.target.clone())
    });
    let sink_cfg = BackendConfig {
        device: output_device.clone(),
        format: StreamFormat {
            sample_rate: STREAM_SAMPLE_RATE,
            channels: STREAM_CHANNELS,
        },
        clock: clock.clone(),
    };
    if a.check_mic {
        let report = crate::check_mic::run(crate::check_mic::CheckMic {
            seconds: a.check_seconds,
            mic: a.mic.clone(),
            mic_device: a.mic_device.clone(),
            output: (!a.no_tone).then(|| (sink_builder, sink_cfg.clone())),
        })?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            crate::check_mic::print(&report);
        }
        if !report.ok {
            anyhow::bail!("the microphone check found a problem: {}", report.summary);
        }
        return Ok(());
    }
    let name = a.name.clone().context("--name is required")?;
    let gpio = syncstream_receiver::gpio::GpioConfig {
        led_pin: a.led_pin,
        button_pin: a.button_pin,
        led_active_low: a.led_active_low,
    };
    gpio.check()
        .map_err(|e| anyhow::anyhow!("--led-pin/--button-pin: {e}"))?;
    if a.no_mdns && a.transmitter.is_none() && a.snapserver.is_none() {
        anyhow::bail!("--no-mdns: give the transmitter's address with --transmitter HOST");
    }
    let mic_builder = find_microphone(&a.mic).with_context(|| {
        format!(
            "unknown microphone backend '{}' (expected one of {:?})",
            a.mic,
            syncstream_audio::backend_names()
        )
    })?;
    let output_label = format!(
        "{output} ({})",
        output_device.as_deref().unwrap_or("default")
    );
    let mic_cfg = BackendConfig {
        device: a.mic_device.clone(),
        format: StreamFormat {
            sample_rate: STREAM_SAMPLE_RATE,
            channels: 1,
        },
        clock: clock.clone(),
    };
    // Opened before the search for the transmitter, so that a bad microphone is said at
    // once; opened again when the receiver restarts at a transmitter's new place.
    let mut first_mic = Some(mic_builder(&mic_cfg)?);
    let key_text = a.key.clone().or_else(|| {
        std::env::var("SYNCSTREAM_KEY")
            .ok()
            .filter(|k| !k.is_empty())
    });
    // From a Snapcast server without a broker the key protects nothing.
    let key = if a.snapserver.is_some() && a.mqtt.is_none() && key_text.is_none() {
        syncstream_protocol::auth::PairingKey::generate()?
    } else {
        crate::pairing::receiver_key(key_text.as_deref(), a.key_file.as_deref())?
    };
    let with_ca = |b: BrokerUrl| match &a.mqtt_ca {
        Some(ca) => b.with_ca_file(ca).map_err(anyhow::Error::msg),
        None => Ok(b),
    };
    // A CA file is checked before the search for the transmitter, which may be long.
    let given_broker = a.mqtt.clone().map(with_ca).transpose()?;
    if let (Some(ca), None) = (&a.mqtt_ca, &given_broker) {
        with_ca(BrokerUrl::new("localhost", 8883))
            .with_context(|| format!("--mqtt-ca {}", ca.display()))?;
    }
    // The transmitter: given, or found over mDNS (docs/discovery.md).
    let mut found = match (&a.transmitter, &a.snapserver) {
        (None, None) => {
            // Browsing is running as a service should: systemd is told so at once.
            crate::service::notify_ready();
            let want = a.transmitter_name.clone();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let search = tokio::task::spawn_blocking({
                let stop = stop.clone();
                move || syncstream_receiver::discovery::find_transmitter(want.as_deref(), &stop)
            });
            // Stopped while it searches (no transmitter yet): a clean exit; the search
            // sees the flag within 200 ms, before the runtime ends.
            tokio::select! {
                found = search => match found?? {
                    Some(f) => Some(f),
                    None => return Ok(()),
                },
                r = crate::service::stopped() => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("stopped while looking for a transmitter");
                    return r;
                }
            }
        }
        _ => None,
    };
    // Runs until stopped; a transmitter found over mDNS that moves (docs/discovery.md,
    // "When the transmitter moves") restarts the receiver at its new place.
    loop {
        let transmitter_host = match (&a.transmitter, &found) {
            (Some(h), _) => h.clone(),
            (None, Some(f)) => f.host(),
            (None, None) => String::new(),
        };
        let stream_port = (a.stream_port)
            .or(found.as_ref().map(|f| f.ad.stream_port))
            .unwrap_or(4953);
        let http_port = (a.http_port)
            .or(found.as_ref().map(|f| f.ad.http_port))
            .unwrap_or(4954);
        let broker = match (given_broker.clone(), &a.snapserver, &found) {
            (Some(b), _, _) => Some(b),
            (None, Some(_), _) => None,
            (None, None, Some(f)) => Some(with_ca(f.broker().map_err(anyhow::Error::msg)?)?),
            (None, None, None) => Some(with_ca(BrokerUrl::new(transmitter_host.clone(), 1883))?),
        };
        let source = match &a.snapserver {
            Some(s) => format!("snapcast:{s}"),
            None => format!("{transmitter_host}:{stream_port}"),
        };
        let discovered = found.as_ref().map(|_| crate::service::Discovered {
            http_base: format!("http://{transmitter_host}:{http_port}"),
            broker: broker.clone(),
        });
        let cfg = syncstream_receiver::ReceiverConfig {
            device: name.clone(),
            transmitter_host,
            stream_port,
            http_port,
            broker,
            snapserver: a.snapserver.clone(),
            profile: profile.clone(),
            drift: Default::default(),
            state_dir: a.state_dir.clone(),
            key: key.clone(),
            voice: syncstream_receiver::voice::VoiceConfig {
                announce_at_start: a.announce_at_start,
                ..Default::default()
            },
        };
        let sink_cfg = sink_cfg.clone();
        let open_output: syncstream_receiver::output::OpenOutput =
            Box::new(move |_previous| sink_builder(&sink_cfg));
        let mic = match first_mic.take() {
            Some(m) => m,
            None => mic_builder(&mic_cfg)?,
        };
        let mut rx = syncstream_receiver::runtime::start_with_output(
            cfg,
            output_label.clone(),
            open_output,
            mic,
            clock.clone(),
        )
        .await?;
        if gpio.any() {
            // The audio matters more than the LED: a Pi whose pins cannot be opened plays on.
            match syncstream_receiver::gpio::open_backend(&gpio) {
                Ok(backend) => rx.start_gpio(backend)?,
                Err(e) => tracing::warn!("GPIO off: {e:#}"),
            }
        }
        let advertised = (!a.no_mdns)
            .then(|| syncstream_receiver::discovery::advertise(&rx, &output_label, &source))
            .flatten();
        let Some(current) = found.clone() else {
            return crate::service::receiver_running(&rx, discovered).await; // readiness, watchdog, updates (issue 13); waits for Ctrl-C/SIGTERM
        };
        let moved = async {
            let follow = syncstream_receiver::discovery::follow::follow(
                rx.watch(),
                current,
                a.transmitter_name.clone(),
                syncstream_receiver::discovery::follow::LOOK_AGAIN_AFTER,
            );
            match follow.await {
                Ok(new) => new,
                Err(e) => {
                    // Not following costs nothing else: the receiver plays on.
                    tracing::warn!("no longer following the transmitter over mDNS: {e}");
                    std::future::pending().await
                }
            }
        };
        tokio::select! {
            r = crate::service::receiver_running(&rx, discovered) => return r,
            new = moved => {
                drop(advertised);
                drop(rx);
                found = Some(new);
            }
        }
    }
}

#[cfg(feature = "simulator")]
async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let scenario = a
        .scenario
        .as_deref()
        .map(syncstream_sim::Scenario::load)
        .transpose()?;
    let audio = match (a.audio, &scenario) {
        (Some(p), _) => p,
        (None, Some(sc)) => sc.audio.clone(),
        (None, None) => default_demo_audio()?,
    };
    if let Some(d) = a.duration {
        if !(d.is_finite() && d > 0.0 && d <= 86_400.0) {
            anyhow::bail!("--duration must be between 0 and 86400 s, got {d}");
        }
    }
    let cfg = syncstream_sim::DemoConfig {
        audio,
        duration_s: a.duration.or(scenario.as_ref().map(|s| s.duration_s)),
        broker: a.mqtt,
        codec: scenario.as_ref().map_or(a.codec, |s| s.codec),
        seed: scenario.as_ref().map_or(a.seed, |s| s.seed),
        live_table: !a.quiet,
        http_port: a.http_port,
        key: Some(crate::pairing::transmitter_key(
            &crate::pairing::transmitter_key_file(None, a.state_dir.as_deref()),
        )?),
        state_dir: a.state_dir,
        streams: a.streams,
    };
    let world = match &scenario {
        Some(sc) => syncstream_sim::demo::scenario_world(sc)?,
        None => syncstream_sim::demo::default_world(),
    };
    let report = syncstream_sim::run_world(cfg, world).await?;
    write_report(&report, a.report.as_deref())?;
    summarize(&report);
    Ok(())
}

#[cfg(feature = "simulator")]
fn sim(a: SimArgs) -> anyhow::Result<()> {
    let mut scenario = syncstream_sim::Scenario::load(&a.scenario)?;
    if let Some(c) = a.codec {
        scenario.codec = c;
    }
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(scenario.duration_s.ceil() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} s simulated ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let report = syncstream_sim::run_scenario(&scenario, &mut |t, _| bar.set_position(t as u64))?;
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    write_report(&report, a.report.as_deref())?;
    eprintln!(
        "simulated {:.0} s of audio with {} devices in {wall:.1} s ({:.1}× real time)",
        scenario.duration_s,
        scenario.devices.len(),
        scenario.duration_s / wall.max(1e-9)
    );
    summarize(&report);
    Ok(())
}

#[cfg(feature = "simulator")]
fn write_report(
    report: &syncstream_sim::Report,
    path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    match path {
        Some(path) => {
            syncstream_shared::fsutil::write_atomic(path, format!("{json}\n").as_bytes())?;
            eprintln!("report written to {}", path.display());
        }
        None => println!("{json}"),
    }
    Ok(())
}

#[cfg(feature = "simulator")]
fn summarize(r: &syncstream_sim::Report) {
    match (r.time_to_converge_s, &r.pairwise_ms) {
        (Some(t), Some(p)) => eprintln!(
            "converged after {t:.1} s; pairwise error after that: p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms",
            p.p50, p.p95, p.max
        ),
        _ => eprintln!("did not converge (all pairs within 1 ms) during the run"),
    }
    if !r.events.is_empty() {
        // With events, the lines above count from the last disturbance; these are the
        // evening's figures.
        for e in &r.events {
            eprintln!(
                "  event at {:6.1} s {:<20} {:<10} back within 1 ms after {}; worst pair {}{}",
                e.at_s,
                e.kind,
                e.device.as_deref().unwrap_or("(all)"),
                e.reconverge_s
                    .map_or("never".to_string(), |s| format!("{s:.1} s")),
                e.worst_pairwise_ms
                    .map_or("-".to_string(), |m| format!("{m:.3} ms")),
                if e.false_corrections == Some(true) {
                    "; FALSE CORRECTION"
                } else {
                    ""
                }
            );
        }
        if let (Some(s), Some(p)) = (r.seconds_above_1ms, &r.pairwise_evening_ms) {
            eprintln!(
                "evening: {s:.0} s with a pair above 1 ms; pairwise p50 {:.3} ms, p95 {:.3} ms",
                p.p50, p.p95
            );
        }
    }
}

#[cfg(feature = "simulator")]
/// The clip shipped in `assets/audio`, found next to the executable's workspace or the
/// current directory.
fn default_demo_audio() -> anyhow::Result<PathBuf> {
    let rel = "assets/audio/battle-orchestral-44k1.ogg";
    let candidates = [
        Some(PathBuf::from(rel)),
        option_env!("CARGO_MANIFEST_DIR").map(|d| PathBuf::from(d).join(rel)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .with_context(|| format!("the demo clip {rel} is missing; pass --audio FILE"))
}
