//! Simulator scenarios (JSON). Paths are relative to the scenario file.
//!
//! ```json
//! {"audio": "music.ogg", "duration_s": 3600, "seed": 7,
//!  "network": {"delay_ms": 2.0, "jitter_ms": 5.0},
//!  "devices": [{"name": "kitchen", "profile": "analog", "latency_ms": 8.0,
//!               "latency_wander_ms": 0.0, "clock_ppm": 40.0, "mic_distance_m": 0.3,
//!               "snr_db": 20, "rt60_s": 0.5, "rir": null,
//!               "hears": [{"device": "tv", "gain_db": -15, "distance_m": 4.0}]}]}
//! ```
//!
//! Every field is checked; an error names the file, the field (e.g.
//! `devices[2].clock_ppm`) and the reason.

use std::path::{Path, PathBuf};

use crate::events::{EventAction, EventSpec};
use serde::Deserialize;
use syncstream_protocol::wire::Codec;
use syncstream_shared::limits::{check_playout_delay_ms, OffsetLimits, MAX_PLAYOUT_DELAY_MS};
use syncstream_shared::names::check_device_name;
use syncstream_shared::profile::{DeviceProfile, OutputType};

/// The network between transmitter and receivers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// One-way base delay, ms (0..=1000).
    #[serde(default = "default_delay")]
    pub delay_ms: f64,
    /// Jitter, ms (0..=1000): each message is held an extra U(0, jitter) with
    /// probability 0.3 (a queue burst), else an extra U(0, jitter / 20).
    #[serde(default)]
    pub jitter_ms: f64,
}

fn default_delay() -> f64 {
    2.0
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            delay_ms: default_delay(),
            jitter_ms: 0.0,
        }
    }
}

/// Another device a microphone hears.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HearsSpec {
    /// That device's name.
    pub device: String,
    /// Its level here relative to this device's own speaker, dB (−60..=0).
    pub gain_db: f64,
    /// Distance from it to this microphone, m (0..=50).
    pub distance_m: f64,
}

/// One simulated device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Device name.
    pub name: String,
    /// Profile: `analog`, `hdmi`, `chromecast`, `airplay`, `bluetooth`, or a path to a
    /// JSON profile.
    pub profile: String,
    /// True output latency, ms (0 to playout delay − 50), hidden from the system.
    pub latency_ms: f64,
    /// Random-walk σ of the latency per minute, ms (0..=100).
    #[serde(default)]
    pub latency_wander_ms: f64,
    /// Clock rate error against the transmitter, ppm (−1000..=1000).
    #[serde(default)]
    pub clock_ppm: f64,
    /// Speaker-to-microphone distance, m (0..=20); default: the profile's.
    #[serde(default)]
    pub mic_distance_m: Option<f64>,
    /// SNR at the microphone, dB (−20..=120).
    #[serde(default = "default_snr")]
    pub snr_db: f64,
    /// Reverberation time, s (0..=3).
    #[serde(default)]
    pub rt60_s: f64,
    /// A measured room impulse response (WAV) to use instead of the RT60 model.
    #[serde(default)]
    pub rir: Option<PathBuf>,
    /// Other devices this microphone hears.
    #[serde(default)]
    pub hears: Vec<HearsSpec>,
}

fn default_snr() -> f64 {
    30.0
}

/// A scenario.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Audio file (played in a loop).
    pub audio: PathBuf,
    /// Length of the simulated run, s (0..=86400).
    pub duration_s: f64,
    /// Seed for every random choice.
    #[serde(default)]
    pub seed: u64,
    /// Network model.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Playout delay at the start, ms (100..=10000).
    #[serde(default = "default_playout")]
    pub playout_delay_ms: u32,
    /// Largest playout delay the transmitter may grow to when a device's latency needs
    /// more, ms (default 10000; `playout_delay_ms` or less keeps the delay fixed).
    #[serde(default)]
    pub max_playout_delay_ms: Option<u32>,
    /// Stream codec: `opus` (default) or `pcm`.
    #[serde(default = "default_codec", deserialize_with = "de_codec")]
    pub codec: Codec,
    /// Devices.
    pub devices: Vec<DeviceSpec>,
    /// What happens during the run (see [`crate::events`]).
    #[serde(default)]
    pub events: Vec<EventSpec>,
}

fn default_playout() -> u32 {
    1000
}

fn default_codec() -> Codec {
    Codec::Opus
}

fn de_codec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Codec, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn range(field: String, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{field}: must be between {lo} and {hi}, got {v}"))
    }
}

/// Largest scenario file, bytes (the shipped ones are a few kB).
pub const MAX_SCENARIO_BYTES: u64 = 1024 * 1024;

impl Scenario {
    /// The largest playout delay of the run, ms: `max_playout_delay_ms` (default and
    /// at most 10000), not below `playout_delay_ms`.
    pub fn growth_limit_ms(&self) -> u32 {
        self.max_playout_delay_ms
            .unwrap_or(MAX_PLAYOUT_DELAY_MS)
            .min(MAX_PLAYOUT_DELAY_MS)
            .max(self.playout_delay_ms)
    }

    /// Loads and checks a scenario (at most [`MAX_SCENARIO_BYTES`]); relative paths are resolved against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = syncstream_shared::fsutil::read_input(path, MAX_SCENARIO_BYTES, "scenario")?;
        Self::from_json(
            &path.display().to_string(),
            &text,
            path.parent().unwrap_or(Path::new(".")),
        )
    }

    /// Parses and checks a scenario from JSON `text`; `name` (the file, for
    /// [`Scenario::load`]) is used in errors, relative paths (audio, RIRs, profile
    /// files) are resolved against `base`. Never panics.
    ///
    /// Errors: JSON that is not a scenario (naming the field), or a scenario that
    /// [`Scenario::validate`] refuses.
    pub fn from_json(name: &str, text: &[u8], base: &Path) -> anyhow::Result<Scenario> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let mut s: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            if field == "." {
                anyhow::anyhow!("scenario {name}: {}", e.inner())
            } else {
                anyhow::anyhow!("scenario {name}: {field}: {}", e.inner())
            }
        })?;
        s.audio = base.join(&s.audio);
        for d in &mut s.devices {
            if let Some(r) = &d.rir {
                d.rir = Some(base.join(r));
            }
            if d.profile.ends_with(".json") {
                d.profile = base.join(&d.profile).display().to_string();
            }
        }
        s.validate()
            .map_err(|e| anyhow::anyhow!("scenario {name}: {e}"))?;
        Ok(s)
    }

    /// Checks every field; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), String> {
        range("duration_s".into(), self.duration_s, 0.1, 86_400.0)?;
        range(
            "network.delay_ms".into(),
            self.network.delay_ms,
            0.0,
            1000.0,
        )?;
        range(
            "network.jitter_ms".into(),
            self.network.jitter_ms,
            0.0,
            1000.0,
        )?;
        check_playout_delay_ms(self.playout_delay_ms)
            .map_err(|e| format!("playout_delay_ms: {e}"))?;
        if let Some(m) = self.max_playout_delay_ms {
            if m > MAX_PLAYOUT_DELAY_MS {
                return Err(format!(
                    "max_playout_delay_ms: {m} ms is more than {MAX_PLAYOUT_DELAY_MS} ms"
                ));
            }
        }
        // What a device may need: the limits of the largest delay the run may grow to.
        let limits = OffsetLimits::for_playout_delay_ms(self.growth_limit_ms() as f64);
        if self.devices.is_empty() {
            return Err("devices: at least one device is needed".into());
        }
        for (i, d) in self.devices.iter().enumerate() {
            let f = |name: &str| format!("devices[{i}].{name}");
            check_device_name(&d.name).map_err(|e| format!("{}: {e}", f("name")))?;
            if self.devices[..i].iter().any(|o| o.name == d.name) {
                return Err(format!("{}: '{}' appears twice", f("name"), d.name));
            }
            let profile = self
                .profile_of(d)
                .map_err(|e| format!("{}: {e}", f("profile")))?;
            limits
                .check_base_latency(profile.base_latency_ms)
                .map_err(|e| format!("{}: {e}", f("profile")))?;
            range(f("latency_ms"), d.latency_ms, 0.0, limits.max_ms)?;
            range(f("latency_wander_ms"), d.latency_wander_ms, 0.0, 100.0)?;
            range(f("clock_ppm"), d.clock_ppm, -1000.0, 1000.0)?;
            if let Some(m) = d.mic_distance_m {
                range(f("mic_distance_m"), m, 0.0, 20.0)?;
            }
            range(f("snr_db"), d.snr_db, -20.0, 120.0)?;
            range(f("rt60_s"), d.rt60_s, 0.0, 3.0)?;
            if let Some(r) = &d.rir {
                if !r.exists() {
                    return Err(format!("{}: {} does not exist", f("rir"), r.display()));
                }
            }
            for (j, h) in d.hears.iter().enumerate() {
                let g = |name: &str| format!("devices[{i}].hears[{j}].{name}");
                if !self.devices.iter().any(|o| o.name == h.device) || h.device == d.name {
                    return Err(format!(
                        "{}: '{}' is not another device of the scenario",
                        g("device"),
                        h.device
                    ));
                }
                range(g("gain_db"), h.gain_db, -60.0, 0.0)?;
                range(g("distance_m"), h.distance_m, 0.0, 50.0)?;
            }
        }
        self.event_actions()?;
        Ok(())
    }

    /// The events' actions (at s, device index, action), in time order (events at the
    /// same time in the order written).
    ///
    /// Errors: an event that is not valid; the message names it (`events[3]`).
    pub fn event_actions(&self) -> Result<Vec<(f64, Option<usize>, EventAction)>, String> {
        let names: Vec<String> = self.devices.iter().map(|d| d.name.clone()).collect();
        let max_latency = OffsetLimits::for_playout_delay_ms(self.growth_limit_ms() as f64).max_ms;
        let mut actions = self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let a = e
                    .action(&names, self.duration_s, max_latency)
                    .map_err(|r| format!("events[{i}]: {r}"))?;
                let device = e
                    .device
                    .as_ref()
                    .and_then(|d| names.iter().position(|n| n == d));
                Ok((e.at_s, device, a))
            })
            .collect::<Result<Vec<_>, String>>()?;
        actions.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(actions)
    }

    /// The profile a device starts from.
    pub fn profile_of(&self, d: &DeviceSpec) -> Result<DeviceProfile, String> {
        let kind = match d.profile.as_str() {
            "analog" => Some(OutputType::Analog),
            "hdmi" => Some(OutputType::Hdmi),
            "chromecast" => Some(OutputType::Chromecast),
            "airplay" => Some(OutputType::Airplay),
            "bluetooth" => Some(OutputType::Bluetooth),
            _ => None,
        };
        let mut p = match kind {
            Some(k) => DeviceProfile::default_for(k),
            None if d.profile.ends_with(".json") => {
                DeviceProfile::load(Path::new(&d.profile)).map_err(|e| e.to_string())?
            }
            None => {
                return Err(format!(
                "'{}' is neither analog, hdmi, chromecast, airplay, bluetooth nor a .json profile",
                d.profile
            ))
            }
        };
        if let Some(m) = d.mic_distance_m {
            p.mic_distance_m = m;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<Scenario> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::fs::write(&p, text).unwrap();
        Scenario::load(&p)
    }

    #[test]
    fn the_issue_example_loads() {
        let s = load(
            r#"{"audio": "music.ogg", "duration_s": 3600, "seed": 7,
                "network": {"delay_ms": 2.0, "jitter_ms": 5.0},
                "devices": [
                  {"name": "kitchen", "profile": "analog", "latency_ms": 8.0, "latency_wander_ms": 0.0,
                   "clock_ppm": 40.0, "mic_distance_m": 0.3, "snr_db": 20, "rt60_s": 0.5, "rir": null,
                   "hears": [{"device": "tv", "gain_db": -15, "distance_m": 4.0}]},
                  {"name": "tv", "profile": "hdmi", "latency_ms": 90.0}]}"#,
        )
        .unwrap();
        assert_eq!(s.devices.len(), 2);
        assert!(s.audio.ends_with("music.ogg"));
    }

    #[test]
    fn errors_name_the_field() {
        let dev = r#"{"name":"a","profile":"analog","latency_ms":8}"#;
        for (text, needle) in [
            (format!(r#"{{"audio":"x","duration_s":10,"devices":[{dev}],"colour":1}}"#), "colour"),
            (format!(r#"{{"audio":"x","duration_s":-1,"devices":[{dev}]}}"#), "duration_s"),
            (r#"{"audio":"x","duration_s":10,"devices":[{"name":"a","profile":"analog","latency_ms":"x"}]}"#.into(), "devices[0].latency_ms"),
            (r#"{"audio":"x","duration_s":10,"devices":[{"name":"a","profile":"analog","latency_ms":8,"clock_ppm":5000}]}"#.into(), "devices[0].clock_ppm"),
            (r#"{"audio":"x","duration_s":10,"devices":[{"name":"a","profile":"toaster","latency_ms":8}]}"#.into(), "devices[0].profile"),
            (r#"{"audio":"x","duration_s":10,"devices":[{"name":"a","profile":"analog","latency_ms":8,"hears":[{"device":"b","gain_db":-10,"distance_m":1}]}]}"#.into(), "devices[0].hears[0].device"),
            (r#"{"audio":"x","duration_s":10,"devices":[]}"#.into(), "devices"),
        ] {
            let e = format!("{:#}", load(&text).unwrap_err());
            assert!(e.contains(needle) && e.contains("s.json"), "{needle}: {e}");
        }
    }
}
