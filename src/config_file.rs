//! The service configuration files, `/etc/syncstream/receiver.toml` and
//! `/etc/syncstream/transmitter.toml` (commented examples in `packaging/`). Each
//! becomes the command line of `syncstream receiver` / `syncstream transmitter`
//! ([`ReceiverFile::to_args`], [`TransmitterFile::to_args`]), so both are checked by
//! the same parser as the flags. Unknown keys are refused, naming the key and line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Largest configuration file, bytes.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// `[update]`: signed updates over MQTT (off without `public_key`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    /// The release public key (64 hex digits) that bundles must be signed with;
    /// empty: updates off.
    #[serde(default)]
    pub public_key: String,
    /// State folder: installed updates and their state (`/var/lib/syncstream`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Seconds a new version may take to become healthy (online, playing) before it
    /// is rolled back; 10 to 3600.
    #[serde(default = "default_health_timeout_s")]
    pub health_timeout_s: u64,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/syncstream")
}

fn default_health_timeout_s() -> u64 {
    60
}

fn default_true() -> bool {
    true
}

/// `receiver.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiverFile {
    /// Device name (MQTT topics); default: the host name.
    pub name: Option<String>,
    /// Transmitter host name or address; empty: the first transmitter found over mDNS
    /// (or `transmitter_name`'s; docs/discovery.md).
    #[serde(default)]
    pub transmitter: String,
    /// Without `transmitter`: the mDNS instance name of the transmitter to use.
    pub transmitter_name: Option<String>,
    /// mDNS: look for the transmitter and advertise this receiver (default true).
    #[serde(default = "default_true")]
    pub mdns: bool,
    /// Play from this Snapcast server (`HOST[:PORT]`) instead of a transmitter
    /// (docs/snapcast.md).
    pub snapserver: Option<String>,
    /// Transmitter stream port (4953).
    pub stream_port: Option<u16>,
    /// Transmitter HTTP port (4954).
    pub http_port: Option<u16>,
    /// MQTT broker `mqtt://host:port` (default: the transmitter's, port 1883).
    pub mqtt: Option<String>,
    /// Device profile (JSON).
    pub profile: Option<PathBuf>,
    /// Output backend: alsa, wav or null.
    pub output: Option<String>,
    /// Output device (ALSA name, e.g. `hw:0` or `default`).
    pub output_device: Option<String>,
    /// Microphone backend: alsa, wav or null.
    pub mic: Option<String>,
    /// Microphone device (ALSA name, e.g. `hw:1`).
    pub mic_device: Option<String>,
    /// Where the receiver keeps its last offset across restarts
    /// (`<device>.state.json`); default: nothing kept.
    pub state_dir: Option<PathBuf>,
    /// The pairing key file (a copy of the transmitter's `pairing.key`).
    pub key_file: Option<PathBuf>,
    /// The pairing key itself, 64 hex digits (instead of `key_file`).
    pub key: Option<String>,
    /// The CA (PEM) an `mqtts://` broker's certificate must chain to.
    pub mqtt_ca: Option<PathBuf>,
    /// Status LED's GPIO pin (BCM; docs/gpio.md).
    pub led_pin: Option<u8>,
    /// Push button's GPIO pin (BCM), to GND.
    pub button_pin: Option<u8>,
    /// The LED lights when its pin is low.
    #[serde(default)]
    pub led_active_low: bool,
    /// Say the device's name, state, drift and offset through its output when it
    /// first plays (needs espeak-ng; docs/voice.md); default false.
    #[serde(default)]
    pub announce_at_start: bool,
    /// Signed updates.
    pub update: Option<UpdateSection>,
}

/// `transmitter.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransmitterFile {
    /// Audio source of the stream `default`: a file, `alsa`, `alsa:DEVICE`, `tone`,
    /// `tone:HZ`, or a stream URI.
    #[serde(default)]
    pub source: Option<String>,
    /// More named streams, Snapcast-style URIs (`pipe:///tmp/snapfifo?name=radio`).
    #[serde(default)]
    pub streams: Vec<String>,
    /// The control plane's state folder (groups, volumes, adjustments).
    pub state_dir: Option<PathBuf>,
    /// Loop a file source.
    #[serde(default, rename = "loop")]
    pub loop_file: bool,
    /// Audio stream listen address (`0.0.0.0:4953`).
    pub stream_listen: Option<String>,
    /// HTTP listen address (`0.0.0.0:4954`).
    pub http_listen: Option<String>,
    /// External MQTT broker `mqtt://host:port`; default: the embedded one.
    pub mqtt: Option<String>,
    /// Listen address of the embedded broker (`0.0.0.0:1883`).
    pub broker_listen: Option<String>,
    /// Stream codec: opus or pcm.
    pub codec: Option<String>,
    /// Playout delay at start, ms.
    pub playout_delay_ms: Option<u32>,
    /// Largest playout delay it may grow to, ms.
    pub max_playout_delay_ms: Option<u32>,
    /// Seconds of source audio kept for source windows.
    pub buffer_seconds: Option<f64>,
    /// Device profiles kept up to date by the sync loop.
    pub profiles_dir: Option<PathBuf>,
    /// Signed update bundles to serve and announce.
    pub updates_dir: Option<PathBuf>,
    /// The pairing key file (default: `pairing.key` in `state_dir`), created on the
    /// first start.
    pub key_file: Option<PathBuf>,
    /// Let anyone on the network read the HTTP API without the token.
    #[serde(default)]
    pub open_read: bool,
    /// The CA (PEM) an `mqtts://` broker's certificate must chain to.
    pub mqtt_ca: Option<PathBuf>,
    /// A TLS listener of the embedded broker (`0.0.0.0:8883`), with the two below.
    pub broker_tls_listen: Option<String>,
    /// The embedded broker's TLS certificate chain (PEM).
    pub broker_tls_cert: Option<PathBuf>,
    /// The embedded broker's TLS private key (PEM).
    pub broker_tls_key: Option<PathBuf>,
    /// Advertise the transmitter over mDNS (default true; docs/discovery.md).
    #[serde(default = "default_true")]
    pub mdns: bool,
    /// The name it is advertised under (default: the host name).
    pub mdns_name: Option<String>,
    /// An HTTPS listener of the API and dashboard (`0.0.0.0:4955`), with the two below.
    pub https_listen: Option<String>,
    /// The HTTPS certificate chain (PEM).
    pub https_cert: Option<PathBuf>,
    /// The HTTPS private key (PEM).
    pub https_key: Option<PathBuf>,
    /// Home Assistant MQTT discovery prefix (`homeassistant`).
    pub ha_discovery_prefix: Option<String>,
    /// Turn Home Assistant MQTT discovery off.
    #[serde(default)]
    pub no_ha_discovery: bool,
    /// The dashboard's URL as Home Assistant links to it (default
    /// `http://<host name>.local:<HTTP port>/`).
    pub dashboard_url: Option<String>,
}

/// Reads and parses a TOML file of type `T`.
///
/// Errors: missing or unreadable file, larger than 64 KiB, or invalid TOML / unknown
/// or ill-typed key (the message names the file, the key and the line).
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = syncstream_shared::fsutil::read_input_string(
        path,
        MAX_CONFIG_BYTES,
        "the configuration file",
    )?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn push(args: &mut Vec<String>, flag: &str, value: Option<impl ToString>) {
    if let Some(v) = value {
        args.push(flag.to_string());
        args.push(v.to_string());
    }
}

/// The host name (for a receiver without `name`).
pub fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the host name (/proc/sys/kernel/hostname)")?;
    Ok(name.trim().to_string())
}

impl ReceiverFile {
    /// The device name: `name`, or the host name.
    ///
    /// Errors: no name and the host name cannot be read.
    pub fn device_name(&self) -> anyhow::Result<String> {
        match &self.name {
            Some(n) if !n.trim().is_empty() => Ok(n.trim().to_string()),
            _ => host_name(),
        }
    }

    /// The arguments of `syncstream receiver` (after the subcommand name).
    ///
    /// Errors: see [`ReceiverFile::device_name`].
    pub fn to_args(&self) -> anyhow::Result<Vec<String>> {
        let mut a = Vec::new();
        push(&mut a, "--name", Some(self.device_name()?));
        if self.transmitter_name.is_some()
            && (self.snapserver.is_some() || !self.transmitter.trim().is_empty())
        {
            anyhow::bail!(
                "transmitter_name picks a transmitter found over mDNS: it goes with neither \
                 transmitter nor snapserver"
            );
        }
        match (&self.snapserver, self.transmitter.trim().is_empty()) {
            (Some(server), _) => push(&mut a, "--snapserver", Some(server)),
            (None, false) => push(&mut a, "--transmitter", Some(&self.transmitter)),
            (None, true) if !self.mdns => anyhow::bail!(
                "the receiver's configuration names neither a transmitter nor a snapserver, \
                 and with mdns = false it cannot look for one: set transmitter"
            ),
            // Found over mDNS.
            (None, true) => push(&mut a, "--transmitter-name", self.transmitter_name.as_ref()),
        }
        if !self.mdns {
            a.push("--no-mdns".into());
        }
        push(&mut a, "--stream-port", self.stream_port);
        push(&mut a, "--http-port", self.http_port);
        push(&mut a, "--mqtt", self.mqtt.as_ref());
        push(
            &mut a,
            "--profile",
            self.profile.as_ref().map(|p| p.display()),
        );
        push(&mut a, "--output", self.output.as_ref());
        push(&mut a, "--output-device", self.output_device.as_ref());
        push(&mut a, "--mic", self.mic.as_ref());
        push(&mut a, "--mic-device", self.mic_device.as_ref());
        push(
            &mut a,
            "--state-dir",
            self.state_dir.as_ref().map(|p| p.display()),
        );
        push(
            &mut a,
            "--key-file",
            self.key_file.as_ref().map(|p| p.display()),
        );
        push(&mut a, "--key", self.key.as_ref());
        push(
            &mut a,
            "--mqtt-ca",
            self.mqtt_ca.as_ref().map(|p| p.display()),
        );
        push(&mut a, "--led-pin", self.led_pin);
        push(&mut a, "--button-pin", self.button_pin);
        if self.led_active_low {
            a.push("--led-active-low".into());
        }
        if self.announce_at_start {
            a.push("--announce-at-start".into());
        }
        Ok(a)
    }

    /// The `[update]` section when updates are on (a public key is set).
    ///
    /// Errors: a health timeout outside 10 to 3600 s.
    pub fn updates(&self) -> anyhow::Result<Option<&UpdateSection>> {
        match &self.update {
            Some(u) if !u.public_key.trim().is_empty() => {
                if !(10..=3600).contains(&u.health_timeout_s) {
                    anyhow::bail!(
                        "update.health_timeout_s must be between 10 and 3600 s, got {}",
                        u.health_timeout_s
                    );
                }
                Ok(Some(u))
            }
            _ => Ok(None),
        }
    }
}

impl TransmitterFile {
    /// The arguments of `syncstream transmitter` (after the subcommand name).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        push(&mut a, "--source", self.source.as_ref());
        for s in &self.streams {
            push(&mut a, "--stream", Some(s));
        }
        push(
            &mut a,
            "--state-dir",
            self.state_dir.as_ref().map(|p| p.display()),
        );
        if self.loop_file {
            a.push("--loop".into());
        }
        push(&mut a, "--stream-listen", self.stream_listen.as_ref());
        push(&mut a, "--http-listen", self.http_listen.as_ref());
        push(&mut a, "--mqtt", self.mqtt.as_ref());
        push(&mut a, "--broker-listen", self.broker_listen.as_ref());
        push(&mut a, "--codec", self.codec.as_ref());
        push(&mut a, "--playout-delay-ms", self.playout_delay_ms);
        push(&mut a, "--max-playout-delay-ms", self.max_playout_delay_ms);
        push(&mut a, "--buffer-seconds", self.buffer_seconds);
        push(
            &mut a,
            "--profiles-dir",
            self.profiles_dir.as_ref().map(|p| p.display()),
        );
        push(
            &mut a,
            "--updates-dir",
            self.updates_dir.as_ref().map(|p| p.display()),
        );
        push(
            &mut a,
            "--key-file",
            self.key_file.as_ref().map(|p| p.display()),
        );
        if self.open_read {
            a.push("--open-read".into());
        }
        push(
            &mut a,
            "--ha-discovery-prefix",
            self.ha_discovery_prefix.as_ref(),
        );
        if self.no_ha_discovery {
            a.push("--no-ha-discovery".into());
        }
        push(&mut a, "--dashboard-url", self.dashboard_url.as_ref());
        push(
            &mut a,
            "--mqtt-ca",
            self.mqtt_ca.as_ref().map(|p| p.display()),
        );
        push(
            &mut a,
            "--broker-tls-listen",
            self.broker_tls_listen.as_ref(),
        );
        push(
            &mut a,
            "--broker-tls-cert",
            self.broker_tls_cert.as_ref().map(|p| p.display()),
        );
        push(
            &mut a,
            "--broker-tls-key",
            self.broker_tls_key.as_ref().map(|p| p.display()),
        );
        push(&mut a, "--https-listen", self.https_listen.as_ref());
        push(
            &mut a,
            "--https-cert",
            self.https_cert.as_ref().map(|p| p.display()),
        );
        push(
            &mut a,
            "--https-key",
            self.https_key.as_ref().map(|p| p.display()),
        );
        if self.mdns {
            push(&mut a, "--mdns-name", self.mdns_name.as_ref());
        } else {
            a.push("--no-mdns".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn the_shipped_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc");
        let r: ReceiverFile = load(&root.join("receiver.toml")).unwrap();
        let args = r.to_args().unwrap();
        // No transmitter in the shipped file: found over mDNS.
        assert!(
            !args.iter().any(|a| a.starts_with("--transmitter")),
            "{args:?}"
        );
        assert!(args
            .windows(2)
            .any(|w| w == ["--state-dir", "/var/lib/syncstream"]));
        let t: TransmitterFile = load(&root.join("transmitter.toml")).unwrap();
        assert_eq!(t.to_args()[0], "--source");
        assert!(t
            .to_args()
            .windows(2)
            .any(|w| w == ["--state-dir", "/var/lib/syncstream"]));
        let (_d, p) = write(
            "streams = [\"pipe:///tmp/a?name=a\", \"tone:///?name=b\"]\nstate_dir = \"/s\"\n",
        );
        let t: TransmitterFile = load(&p).unwrap();
        assert_eq!(
            t.to_args(),
            [
                "--stream",
                "pipe:///tmp/a?name=a",
                "--stream",
                "tone:///?name=b",
                "--state-dir",
                "/s"
            ]
        );
    }

    #[test]
    fn a_receiver_file_with_a_snapserver_needs_no_transmitter() {
        let (_d, p) = write("name = \"tv\"\nsnapserver = \"music.local\"\n");
        let f: ReceiverFile = load(&p).unwrap();
        let args = f.to_args().unwrap();
        let at = args.iter().position(|a| a == "--snapserver").unwrap();
        assert_eq!(args[at + 1], "music.local");
        assert!(!args.contains(&"--transmitter".to_string()));
    }

    #[test]
    fn without_a_transmitter_the_receiver_looks_for_one_unless_mdns_is_off() {
        let (_d, p) = write("name = \"tv\"\n");
        let f: ReceiverFile = load(&p).unwrap();
        assert_eq!(f.to_args().unwrap(), ["--name", "tv"]);
        let (_d, p) = write("name = \"tv\"\ntransmitter_name = \"Living Room\"\n");
        let f: ReceiverFile = load(&p).unwrap();
        assert_eq!(
            f.to_args().unwrap(),
            ["--name", "tv", "--transmitter-name", "Living Room"]
        );
        let (_d, p) = write("transmitter = \"10.0.0.2\"\ntransmitter_name = \"a\"\n");
        let f: ReceiverFile = load(&p).unwrap();
        let e = f.to_args().unwrap_err().to_string();
        assert!(
            e.contains("transmitter_name") && e.contains("neither"),
            "{e}"
        );
        let (_d, p) = write("name = \"tv\"\nmdns = false\n");
        let f: ReceiverFile = load(&p).unwrap();
        let e = f.to_args().unwrap_err().to_string();
        assert!(
            e.contains("neither a transmitter nor a snapserver") && e.contains("mdns = false"),
            "{e}"
        );
        let (_d, p) = write("name = \"tv\"\ntransmitter = \"10.0.0.2\"\nmdns = false\n");
        let f: ReceiverFile = load(&p).unwrap();
        assert_eq!(
            f.to_args().unwrap(),
            ["--name", "tv", "--transmitter", "10.0.0.2", "--no-mdns"]
        );
        // The transmitter's side.
        let (_d, p) = write("source = \"tone\"\nmdns_name = \"Living Room\"\n");
        let t: TransmitterFile = load(&p).unwrap();
        assert_eq!(
            t.to_args(),
            ["--source", "tone", "--mdns-name", "Living Room"]
        );
        let (_d, p) = write("source = \"tone\"\nmdns = false\n");
        let t: TransmitterFile = load(&p).unwrap();
        assert_eq!(t.to_args(), ["--source", "tone", "--no-mdns"]);
    }

    #[test]
    fn receiver_file_gpio_keys_become_flags() {
        let (_d, p) = write(
            "name = \"tv\"\ntransmitter = \"h\"\nled_pin = 17\nbutton_pin = 27\nled_active_low = true\n",
        );
        let args = load::<ReceiverFile>(&p).unwrap().to_args().unwrap();
        let tail: Vec<&str> = args
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            tail,
            ["--led-pin", "17", "--button-pin", "27", "--led-active-low"]
        );
        let (_d, p) = write("name = \"tv\"\ntransmitter = \"h\"\nled_pin = 300\n");
        let e = format!("{:#}", load::<ReceiverFile>(&p).unwrap_err());
        assert!(e.contains("led_pin"), "{e}");
    }

    #[test]
    fn receiver_file_becomes_flags_and_update_section_is_checked() {
        let (_d, p) = write(
            "name = \"kitchen\"\ntransmitter = \"10.0.0.2\"\noutput = \"wav\"\noutput_device = \"/tmp/o.wav\"\n\
             [update]\npublic_key = \"ab\"\nhealth_timeout_s = 5\n",
        );
        let r: ReceiverFile = load(&p).unwrap();
        assert_eq!(
            r.to_args().unwrap(),
            [
                "--name",
                "kitchen",
                "--transmitter",
                "10.0.0.2",
                "--output",
                "wav",
                "--output-device",
                "/tmp/o.wav"
            ]
        );
        assert!(r
            .updates()
            .unwrap_err()
            .to_string()
            .contains("health_timeout_s"));
    }

    #[test]
    fn announce_at_start_becomes_its_flag_and_is_off_by_default() {
        let (_d, p) = write("transmitter = \"x\"\nannounce_at_start = true\n");
        let r: ReceiverFile = load(&p).unwrap();
        assert_eq!(r.to_args().unwrap().last().unwrap(), "--announce-at-start");
        let (_d, p) = write("transmitter = \"x\"\n");
        let r: ReceiverFile = load(&p).unwrap();
        assert!(!r.announce_at_start);
        assert!(!r
            .to_args()
            .unwrap()
            .contains(&"--announce-at-start".to_string()));
        let (_d, p) = write("transmitter = \"x\"\nannounce_at_start = \"yes\"\n");
        let err = load::<ReceiverFile>(&p).unwrap_err().to_string();
        assert!(err.contains("announce_at_start"), "{err}");
    }

    #[test]
    fn unknown_keys_and_missing_files_are_named() {
        let (_d, p) = write("transmitter = \"x\"\nspeaker = 3\n");
        let err = load::<ReceiverFile>(&p).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("speaker"), "{err}");
        let err = load::<ReceiverFile>(Path::new("/nonexistent/receiver.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/receiver.toml"));
    }
}
