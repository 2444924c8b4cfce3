//! Scenario events: what happens during an evening (a TV's latency steps, a speaker is
//! muted, someone talks, the Wi-Fi drops, a receiver or the transmitter restarts), as
//! the scenario's `events` list describes them, checked, and turned into actions.
//!
//! ```json
//! "events": [
//!   {"at_s": 120, "device": "tv", "latency_ms": 52.0},
//!   {"at_s": 200, "device": "bt", "volume_db": -24},
//!   {"at_s": 300, "device": "kitchen", "muted": true},
//!   {"at_s": 400, "device": "hall", "noise": "babble", "snr_db": -5, "duration_s": 30},
//!   {"at_s": 500, "network_outage_s": 10},
//!   {"at_s": 520, "device": "tv", "network_outage_s": 4},
//!   {"at_s": 600, "device": "tv", "restart": true},
//!   {"at_s": 700, "silence_s": 15},
//!   {"at_s": 800, "transmitter_restart": true},
//!   {"at_s": 900, "device": "bt", "clock_ppm": -180.0}
//! ]
//! ```
//!
//! Each event does one thing; an error names the event (`events[3]`), the field and
//! the reason.

use serde::Deserialize;
use syncstream_room::NoiseKind;

/// One event as written in a scenario.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// When, s from the start of the run.
    pub at_s: f64,
    /// The device it happens to (required for device events, optional for an outage).
    #[serde(default)]
    pub device: Option<String>,
    /// The device's hidden output latency steps to this, ms.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// The device's acoustic output level changes to this relative to the start, dB.
    #[serde(default)]
    pub volume_db: Option<f64>,
    /// The device is muted (`true`) or unmuted (`false`) as from the dashboard.
    #[serde(default)]
    pub muted: Option<bool>,
    /// Extra noise at the device's microphone: `white`, `babble` or `tv` (with `snr_db`
    /// and `duration_s`).
    #[serde(default)]
    pub noise: Option<String>,
    /// The noise's level below the device's nominal level at its microphone, dB.
    #[serde(default)]
    pub snr_db: Option<f64>,
    /// How long the noise lasts, s.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Every receiver (or `device`) loses the transmitter for this long, s (stream,
    /// HTTP and MQTT).
    #[serde(default)]
    pub network_outage_s: Option<f64>,
    /// The receiver process restarts (`true`).
    #[serde(default)]
    pub restart: Option<bool>,
    /// The source plays digital silence for this long, s.
    #[serde(default)]
    pub silence_s: Option<f64>,
    /// The transmitter restarts (`true`).
    #[serde(default)]
    pub transmitter_restart: Option<bool>,
    /// The device's crystal now runs this far off, ppm.
    #[serde(default)]
    pub clock_ppm: Option<f64>,
}

/// What an event does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventAction {
    /// The hidden latency steps to this, ms.
    Latency(f64),
    /// The output level is this relative to the start, dB.
    Volume(f64),
    /// Muted or unmuted.
    Muted(bool),
    /// Extra noise for a while.
    Noise {
        /// Kind.
        kind: NoiseKind,
        /// Level below the nominal, dB.
        snr_db: f64,
        /// Length, s.
        duration_s: f64,
    },
    /// The network is cut for this long, s.
    Outage(f64),
    /// The receiver restarts.
    Restart,
    /// The source is silent for this long, s.
    Silence(f64),
    /// The transmitter restarts.
    TransmitterRestart,
    /// The crystal's rate error becomes this, ppm.
    ClockPpm(f64),
}

impl EventAction {
    /// How long the event lasts, s (0 for a step).
    pub fn duration_s(&self) -> f64 {
        match *self {
            EventAction::Noise { duration_s, .. } => duration_s,
            EventAction::Outage(s) | EventAction::Silence(s) => s,
            _ => 0.0,
        }
    }

    /// A short name for reports (`latency_ms`, `muted`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            EventAction::Latency(_) => "latency_ms",
            EventAction::Volume(_) => "volume_db",
            EventAction::Muted(_) => "muted",
            EventAction::Noise { .. } => "noise",
            EventAction::Outage(_) => "network_outage_s",
            EventAction::Restart => "restart",
            EventAction::Silence(_) => "silence_s",
            EventAction::TransmitterRestart => "transmitter_restart",
            EventAction::ClockPpm(_) => "clock_ppm",
        }
    }
}

fn range(field: &str, v: f64, lo: f64, hi: f64) -> Result<f64, String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{field}: must be between {lo} and {hi}, got {v}"))
    }
}

impl EventSpec {
    /// The event's action, checked against the scenario: `devices` are its device
    /// names, `duration_s` its length and `max_latency_ms` the largest latency its
    /// playout delay allows.
    ///
    /// Errors: no action or more than one, a device missing, unknown or not allowed,
    /// or a value out of range; the message names the field.
    pub fn action(
        &self,
        devices: &[String],
        duration_s: f64,
        max_latency_ms: f64,
    ) -> Result<EventAction, String> {
        range("at_s", self.at_s, 0.0, duration_s)?;
        let mut actions = Vec::new();
        if let Some(v) = self.latency_ms {
            actions.push(EventAction::Latency(range(
                "latency_ms",
                v,
                0.0,
                max_latency_ms,
            )?));
        }
        if let Some(v) = self.volume_db {
            actions.push(EventAction::Volume(range("volume_db", v, -60.0, 20.0)?));
        }
        if let Some(m) = self.muted {
            actions.push(EventAction::Muted(m));
        }
        if let Some(n) = &self.noise {
            let kind: NoiseKind = n.parse().map_err(|e| format!("noise: {e}"))?;
            let snr_db = range(
                "snr_db",
                self.snr_db.ok_or("noise: needs snr_db")?,
                -30.0,
                60.0,
            )?;
            let duration_s = range(
                "duration_s",
                self.duration_s.ok_or("noise: needs duration_s")?,
                0.1,
                3600.0,
            )?;
            actions.push(EventAction::Noise {
                kind,
                snr_db,
                duration_s,
            });
        } else if self.snr_db.is_some() || self.duration_s.is_some() {
            return Err("snr_db and duration_s belong to a noise event".into());
        }
        if let Some(v) = self.network_outage_s {
            actions.push(EventAction::Outage(range(
                "network_outage_s",
                v,
                0.01,
                600.0,
            )?));
        }
        if self.restart == Some(true) {
            actions.push(EventAction::Restart);
        }
        if let Some(v) = self.silence_s {
            actions.push(EventAction::Silence(range("silence_s", v, 0.01, 3600.0)?));
        }
        if self.transmitter_restart == Some(true) {
            actions.push(EventAction::TransmitterRestart);
        }
        if let Some(v) = self.clock_ppm {
            actions.push(EventAction::ClockPpm(range(
                "clock_ppm",
                v,
                -1000.0,
                1000.0,
            )?));
        }
        let action = match actions.as_slice() {
            [a] => *a,
            [] => return Err("says nothing to do (give one of latency_ms, volume_db, muted, noise, network_outage_s, restart, silence_s, transmitter_restart, clock_ppm)".into()),
            _ => return Err("does more than one thing; give each its own event".into()),
        };
        let needs_device = !matches!(
            action,
            EventAction::Outage(_) | EventAction::Silence(_) | EventAction::TransmitterRestart
        );
        match (&self.device, needs_device) {
            (None, true) => return Err(format!("{}: needs a device", action.kind())),
            (Some(_), false) if !matches!(action, EventAction::Outage(_)) => {
                return Err(format!("{}: happens to no single device", action.kind()))
            }
            (Some(d), _) if !devices.contains(d) => {
                return Err(format!("device: '{d}' is not a device of the scenario"))
            }
            _ => {}
        }
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> Result<EventAction, String> {
        let e: EventSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        e.action(&["tv".into(), "bt".into()], 1000.0, 950.0)
    }

    #[test]
    fn the_issue_examples_parse() {
        assert_eq!(
            ev(r#"{"at_s":120,"device":"tv","latency_ms":52.0}"#),
            Ok(EventAction::Latency(52.0))
        );
        assert!(matches!(
            ev(r#"{"at_s":400,"device":"tv","noise":"babble","snr_db":-5,"duration_s":30}"#),
            Ok(EventAction::Noise {
                kind: NoiseKind::Babble,
                ..
            })
        ));
        assert_eq!(
            ev(r#"{"at_s":500,"network_outage_s":10}"#),
            Ok(EventAction::Outage(10.0))
        );
        assert_eq!(
            ev(r#"{"at_s":520,"device":"tv","network_outage_s":4}"#),
            Ok(EventAction::Outage(4.0))
        );
        assert_eq!(
            ev(r#"{"at_s":600,"device":"tv","restart":true}"#),
            Ok(EventAction::Restart)
        );
        assert_eq!(
            ev(r#"{"at_s":700,"silence_s":15}"#),
            Ok(EventAction::Silence(15.0))
        );
        assert_eq!(
            ev(r#"{"at_s":800,"transmitter_restart":true}"#),
            Ok(EventAction::TransmitterRestart)
        );
        assert_eq!(
            ev(r#"{"at_s":900,"device":"bt","clock_ppm":-180.0}"#),
            Ok(EventAction::ClockPpm(-180.0))
        );
        assert_eq!(
            ev(r#"{"at_s":300,"device":"tv","muted":true}"#),
            Ok(EventAction::Muted(true))
        );
        assert_eq!(
            ev(r#"{"at_s":200,"device":"bt","volume_db":-24}"#),
            Ok(EventAction::Volume(-24.0))
        );
    }

    #[test]
    fn bad_events_say_why() {
        for (json, needle) in [
            (r#"{"at_s":1,"device":"tv"}"#, "nothing to do"),
            (
                r#"{"at_s":1,"device":"tv","latency_ms":5,"muted":true}"#,
                "more than one",
            ),
            (r#"{"at_s":1,"latency_ms":5}"#, "needs a device"),
            (r#"{"at_s":1,"device":"ghost","latency_ms":5}"#, "ghost"),
            (
                r#"{"at_s":1,"device":"tv","latency_ms":5000}"#,
                "latency_ms",
            ),
            (r#"{"at_s":5000,"device":"tv","latency_ms":5}"#, "at_s"),
            (
                r#"{"at_s":1,"device":"tv","noise":"hum","snr_db":0,"duration_s":1}"#,
                "hum",
            ),
            (r#"{"at_s":1,"device":"tv","noise":"white"}"#, "snr_db"),
            (
                r#"{"at_s":1,"device":"tv","silence_s":3}"#,
                "no single device",
            ),
            (r#"{"at_s":1,"device":"tv","colour":3}"#, "colour"),
        ] {
            let e = ev(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
