//! The `pulse` backend: plays into a PulseAudio or PipeWire sink (PipeWire answers the
//! same protocol through pipewire-pulse) chosen by name or description, through
//! `pacat` and the [`crate::command`] backend. The Bluetooth and AirPlay backends are
//! this one with the sinks narrowed to their kind ([`SinkKind`]).
//!
//! The sink is looked up (`pactl list sinks`) at every start, so a speaker whose sink
//! appears only once it connects, or comes back under a new name after a reconnect,
//! is found when the receiver reopens its output.

use std::process::{Command, Stdio};

use super::command::{find_program, CommandSink, PlayerCommand};
use super::{AudioError, BackendConfig, RenderFn, Sink, StreamFormat};

/// Backend name used in errors.
const BACKEND: &str = "pulse";
/// Latency `pacat` asks the server for, ms (its own buffer: output latency that the
/// microphone measures).
pub const PACAT_LATENCY_MS: u32 = 50;

/// A sink of the sound server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSink {
    /// Its name (`bluez_output.00_11_22_33_44_55.1`, `raop_output.HomePod.local`).
    pub name: String,
    /// Its description (`JBL Flip 5`, `HomePod`).
    pub description: String,
}

/// Which sinks a backend considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// Every sink.
    Any,
    /// Bluetooth sinks: PulseAudio's and PipeWire's `bluez_output.*` / `bluez_sink.*`.
    Bluetooth,
    /// AirPlay (RAOP) sinks: PulseAudio's `raop_output.*` (module-raop-discover) and
    /// PipeWire's `raop_sink.*` (libpipewire-module-raop-discover).
    Airplay,
}

impl SinkKind {
    /// Whether `sink` is of this kind.
    pub fn admits(self, sink: &ServerSink) -> bool {
        match self {
            SinkKind::Any => true,
            SinkKind::Bluetooth => {
                sink.name.starts_with("bluez_output.") || sink.name.starts_with("bluez_sink.")
            }
            SinkKind::Airplay => {
                sink.name.starts_with("raop_output.") || sink.name.starts_with("raop_sink.")
            }
        }
    }

    fn what(self) -> &'static str {
        match self {
            SinkKind::Any => "sink",
            SinkKind::Bluetooth => "Bluetooth sink",
            SinkKind::Airplay => "AirPlay (RAOP) sink",
        }
    }
}

/// Lists the sound server's sinks (`LC_ALL=C pactl list sinks`; the server is the
/// one `PULSE_SERVER` or the session names). Errors: `pactl` missing or the server
/// unreachable, with what `pactl` said.
pub fn list_sinks() -> Result<Vec<ServerSink>, AudioError> {
    if find_program("pactl").is_none() {
        return Err(AudioError::new(
            BACKEND,
            "pactl",
            "`pactl` not found (Debian package pulseaudio-utils; it also talks to PipeWire)",
        ));
    }
    let out = Command::new("pactl")
        .args(["list", "sinks"])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AudioError::new(BACKEND, "pactl", format!("cannot run: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(AudioError::new(
            BACKEND,
            "pactl",
            format!(
                "no sound server answered ({}): {}",
                out.status,
                said.trim().chars().take(300).collect::<String>()
            ),
        ));
    }
    Ok(parse_sinks(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `pactl list sinks` output (the `Name:` and `Description:` of each sink).
pub fn parse_sinks(text: &str) -> Vec<ServerSink> {
    let mut out: Vec<ServerSink> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if line.starts_with("Sink #") {
            out.push(ServerSink {
                name: String::new(),
                description: String::new(),
            });
        } else if let (Some(s), Some(v)) = (out.last_mut(), t.strip_prefix("Name: ")) {
            if s.name.is_empty() {
                s.name = v.trim().to_string();
            }
        } else if let (Some(s), Some(v)) = (out.last_mut(), t.strip_prefix("Description: ")) {
            if s.description.is_empty() {
                s.description = v.trim().to_string();
            }
        }
    }
    out.retain(|s| !s.name.is_empty());
    out
}

/// Finds the sink `target` names among `sinks` of `kind`: an exact name, else an exact
/// description (case-insensitive), else the one sink whose name or description
/// contains it (case-insensitive; a Bluetooth address matches `00_11_22_...` in the
/// name too). Errors say what was there.
pub fn find_sink(sinks: &[ServerSink], kind: SinkKind, target: &str) -> Result<ServerSink, String> {
    let candidates: Vec<&ServerSink> = sinks.iter().filter(|s| kind.admits(s)).collect();
    let t = target.trim().to_lowercase();
    let addr = t.replace(':', "_");
    let exact = candidates
        .iter()
        .find(|s| s.name == target.trim())
        .or_else(|| {
            candidates
                .iter()
                .find(|s| s.description.to_lowercase() == t)
        });
    if let Some(s) = exact {
        return Ok((*s).clone());
    }
    let partial: Vec<&&ServerSink> = candidates
        .iter()
        .filter(|s| {
            let name = s.name.to_lowercase();
            name.contains(&t) || name.contains(&addr) || s.description.to_lowercase().contains(&t)
        })
        .collect();
    let listed = || {
        if candidates.is_empty() {
            format!("there is no {} at all", kind.what())
        } else {
            let names: Vec<String> = candidates
                .iter()
                .map(|s| format!("{} ({})", s.name, s.description))
                .collect();
            format!("{}s: {}", kind.what(), names.join(", "))
        }
    };
    match partial.as_slice() {
        [one] => Ok((**one).clone()),
        [] => Err(format!(
            "no {} matches '{target}'; {}",
            kind.what(),
            listed()
        )),
        _ => Err(format!(
            "'{target}' matches more than one {}; give the name; {}",
            kind.what(),
            listed()
        )),
    }
}

/// The `pacat` command line that plays raw 16-bit PCM of `fmt` into `sink`.
pub fn pacat_command(sink: &str, fmt: StreamFormat) -> PlayerCommand {
    PlayerCommand {
        argv: vec![
            "pacat".into(),
            "--playback".into(),
            "--raw".into(),
            "--format=s16le".into(),
            format!("--rate={}", fmt.sample_rate),
            format!("--channels={}", fmt.channels),
            format!("--latency-msec={PACAT_LATENCY_MS}"),
            "--client-name=syncstream".into(),
            format!("--device={sink}"),
        ],
    }
}

/// Another way to play when no sink of the server matches: called with the config,
/// the target and the server's error; returns the player or why there is none.
pub type Fallback = fn(&BackendConfig, &str, &str) -> Result<PlayerCommand, String>;

/// How often a playing output checks that its sink still exists, s.
pub const SINK_CHECK_S: u64 = 5;

/// A sound-server sink looked up by `target` at every start, played through `pacat`.
///
/// When its sink goes (a speaker disconnects), PulseAudio's module-rescue-streams
/// (and PipeWire) would move the stream to another sink, which `pacat` cannot forbid;
/// so the output checks every [`SINK_CHECK_S`] s that its sink is still there and
/// fails when it is not, to be reopened when it is back.
pub struct ServerSinkOutput {
    cfg: BackendConfig,
    backend: &'static str,
    kind: SinkKind,
    target: String,
    /// The player of the last start.
    player: Option<CommandSink>,
    /// The sink it plays into (`None`: the default sink, or a bluez-alsa player) and
    /// when it was last seen.
    playing_into: Option<(String, std::sync::Mutex<std::time::Instant>)>,
    /// Other ways to play when no sink of the server matches (bluez-alsa for a
    /// Bluetooth address): called with the server's error.
    fallback: Option<Fallback>,
}

impl ServerSinkOutput {
    /// An output of `kind` for `target`, reported as backend `backend`. Errors: an
    /// empty target for a kind that needs one, a target with whitespace.
    pub fn new(
        cfg: &BackendConfig,
        backend: &'static str,
        kind: SinkKind,
        fallback: Option<Fallback>,
    ) -> Result<Self, AudioError> {
        let target = cfg.device.clone().unwrap_or_default().trim().to_string();
        if target.is_empty() && kind != SinkKind::Any {
            return Err(AudioError::new(
                backend,
                "(no target)",
                format!("name the {} in the profile's `target`", kind.what()),
            ));
        }
        if target.len() > 256 {
            return Err(AudioError::new(
                backend,
                "(target)",
                "target longer than 256 bytes",
            ));
        }
        Ok(Self {
            cfg: cfg.clone(),
            backend,
            kind,
            target,
            player: None,
            playing_into: None,
            fallback,
        })
    }

    /// The player command for the current state of the sound server, and the sink it
    /// plays into when it is one of the server's.
    fn resolve(&self) -> Result<(PlayerCommand, Option<String>), AudioError> {
        let err = |reason: String| AudioError::new(self.backend, &self.target, reason);
        if self.target.is_empty() {
            // `pulse` without a target: the server's default sink.
            return Ok((pacat_command("@DEFAULT_SINK@", self.cfg.format), None));
        }
        let found = list_sinks()
            .map_err(|e| e.to_string())
            .and_then(|sinks| find_sink(&sinks, self.kind, &self.target));
        match (found, self.fallback) {
            (Ok(s), _) => {
                if s.name.chars().any(char::is_whitespace) {
                    return Err(err(format!("sink name '{}' has whitespace", s.name)));
                }
                Ok((pacat_command(&s.name, self.cfg.format), Some(s.name)))
            }
            (Err(e), Some(f)) => f(&self.cfg, &self.target, &e)
                .map(|c| (c, None))
                .map_err(err),
            (Err(e), None) => Err(err(e)),
        }
    }
}

impl Sink for ServerSinkOutput {
    fn start(&mut self, render: RenderFn) -> Result<(), AudioError> {
        self.stop()?;
        let (command, sink) = self.resolve()?;
        tracing::info!(
            backend = self.backend,
            target = self.target,
            player = command.line(),
            "output resolved"
        );
        let mut player = CommandSink::new(&self.cfg, command);
        player.start(render)?;
        self.player = Some(player);
        self.playing_into = sink.map(|s| (s, std::sync::Mutex::new(std::time::Instant::now())));
        Ok(())
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some(mut p) = self.player.take() {
            p.stop()?;
        }
        Ok(())
    }

    fn format(&self) -> StreamFormat {
        self.cfg.format
    }

    fn failure(&self) -> Option<String> {
        let player = self.player.as_ref()?;
        if let Some(f) = player.failure() {
            return Some(f);
        }
        let (sink, checked) = self.playing_into.as_ref()?;
        let mut checked = checked.lock().ok()?;
        if checked.elapsed() < std::time::Duration::from_secs(SINK_CHECK_S) {
            return None;
        }
        *checked = std::time::Instant::now();
        match list_sinks() {
            Ok(sinks) if !sinks.iter().any(|s| &s.name == sink) => Some(format!(
                "{} {sink} is gone (disconnected)",
                self.kind.what()
            )),
            _ => None,
        }
    }
}

/// Opens the `pulse` sink: `cfg.device` names the sink (name or description), or
/// nothing for the server's default sink.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    Ok(Box::new(ServerSinkOutput::new(
        cfg,
        BACKEND,
        SinkKind::Any,
        None,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "Sink #0\n\tState: SUSPENDED\n\tName: alsa_output.platform-bcm2835_audio.stereo-fallback\n\tDescription: Built-in Audio Stereo\n\tDriver: module-alsa-card.c\nSink #3\n\tName: bluez_output.00_11_22_33_44_55.1\n\tDescription: JBL Flip 5\n\tProperties:\n\t\tdevice.description = \"JBL Flip 5\"\nSink #4\n\tName: raop_output.HomePod.local\n\tDescription: HomePod (AirPlay)\n";

    #[test]
    fn parses_names_and_descriptions() {
        let s = parse_sinks(LISTING);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].name, "bluez_output.00_11_22_33_44_55.1");
        assert_eq!(s[1].description, "JBL Flip 5");
        assert_eq!(s[2].description, "HomePod (AirPlay)");
    }

    #[test]
    fn finds_by_name_description_or_address_within_a_kind() {
        let s = parse_sinks(LISTING);
        let bt = |t| find_sink(&s, SinkKind::Bluetooth, t).map(|x| x.name);
        assert_eq!(
            bt("jbl flip 5").unwrap(),
            "bluez_output.00_11_22_33_44_55.1"
        );
        assert_eq!(
            bt("00:11:22:33:44:55").unwrap(),
            "bluez_output.00_11_22_33_44_55.1"
        );
        assert_eq!(bt("JBL").unwrap(), "bluez_output.00_11_22_33_44_55.1");
        let e = bt("HomePod").unwrap_err();
        assert!(
            e.contains("no Bluetooth sink matches") && e.contains("JBL Flip 5"),
            "{e}"
        );
        let ap = find_sink(&s, SinkKind::Airplay, "HomePod").unwrap();
        assert_eq!(ap.name, "raop_output.HomePod.local");
        let e = find_sink(&s, SinkKind::Airplay, "Kitchen").unwrap_err();
        assert!(e.contains("raop_output.HomePod.local"), "{e}");
        let e = find_sink(&s, SinkKind::Any, "o").unwrap_err();
        assert!(e.contains("more than one"), "{e}");
    }
}
