//! MQTT topics and their JSON payloads.
//!
//! | topic | direction | payload |
//! |---|---|---|
//! | `syncstream/drift/<device>` | receiver → controller | [`DriftReport`] |
//! | `syncstream/buffer_offset/<device>` | controller → receiver | [`BufferOffset`] |
//! | `syncstream/command/<device>` | anyone → receiver | [`Command`] |
//! | `syncstream/status/<device>` | receiver → anyone (retained, last will) | [`Status`] |
//! | `syncstream/config` | anyone → receivers (retained) | [`ConfigPush`] |
//! | `syncstream/calibration/<device>` | receiver/calibrator → anyone | free-form JSON |
//! | `syncstream/settings/<device>` | transmitter → receiver (retained) | [`DeviceSettings`] |
//! | `syncstream/groups`, `syncstream/streams` | transmitter → anyone (retained) | the control API's `GET /api/v1/groups` and `/streams` bodies |
//! | `syncstream/group/<group>` | anyone → transmitter | [`GroupRequest`] |
//!
//! Every payload is parsed with [`parse`], which never panics: a malformed payload is
//! an error that names the topic and the reason.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use syncstream_shared::profile::DeviceProfile;

/// Root of every SyncStream topic.
pub const TOPIC_ROOT: &str = "syncstream";

/// Topic names.
pub mod topics {
    use super::TOPIC_ROOT;

    /// `syncstream/drift/<device>`.
    pub fn drift(device: &str) -> String {
        format!("{TOPIC_ROOT}/drift/{device}")
    }
    /// `syncstream/buffer_offset/<device>`.
    pub fn buffer_offset(device: &str) -> String {
        format!("{TOPIC_ROOT}/buffer_offset/{device}")
    }
    /// `syncstream/command/<device>`.
    pub fn command(device: &str) -> String {
        format!("{TOPIC_ROOT}/command/{device}")
    }
    /// `syncstream/status/<device>` (retained).
    pub fn status(device: &str) -> String {
        format!("{TOPIC_ROOT}/status/{device}")
    }
    /// `syncstream/mic_check/<device>`: a receiver's answer to `check_mic`.
    pub fn mic_check(device: &str) -> String {
        format!("{TOPIC_ROOT}/mic_check/{device}")
    }
    /// `syncstream/calibration/<device>`.
    pub fn calibration(device: &str) -> String {
        format!("{TOPIC_ROOT}/calibration/{device}")
    }
    /// `syncstream/settings/<device>` (retained): volume, mute and group from the
    /// transmitter's control plane.
    pub fn settings(device: &str) -> String {
        format!("{TOPIC_ROOT}/settings/{device}")
    }
    /// `syncstream/group/<group>`: create, change or delete a group.
    pub fn group(group: &str) -> String {
        format!("{TOPIC_ROOT}/group/{group}")
    }
    /// `syncstream/config` (retained).
    pub const CONFIG: &str = "syncstream/config";
    /// `syncstream/groups` (retained): every group, as `GET /api/v1/groups` shows them.
    pub const GROUPS: &str = "syncstream/groups";
    /// `syncstream/streams` (retained): every stream, as `GET /api/v1/streams` shows them.
    pub const STREAMS: &str = "syncstream/streams";
    /// Wildcard for group requests.
    pub const GROUP_ALL: &str = "syncstream/group/+";
    /// Wildcard the controller subscribes to.
    pub const DRIFT_ALL: &str = "syncstream/drift/+";
    /// Wildcard for every device's status.
    pub const STATUS_ALL: &str = "syncstream/status/+";

    /// The `<device>` part of `syncstream/<kind>/<device>`, if `topic` has that form.
    pub fn device_of<'a>(topic: &'a str, kind: &str) -> Option<&'a str> {
        let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
        let rest = rest.strip_prefix(kind)?.strip_prefix('/')?;
        (!rest.is_empty() && !rest.contains('/')).then_some(rest)
    }
}

/// A malformed MQTT payload.
#[derive(Debug, thiserror::Error)]
#[error("malformed payload on {topic}: {reason}")]
pub struct PayloadError {
    /// The topic the payload came on.
    pub topic: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Parses a JSON payload of type `T` that came on `topic`.
///
/// Errors: invalid UTF-8 or JSON, a missing field or a value of the wrong type; the
/// error names the topic and the reason. Never panics.
pub fn parse<T: for<'de> Deserialize<'de>>(topic: &str, payload: &[u8]) -> Result<T, PayloadError> {
    let de = &mut serde_json::Deserializer::from_slice(payload);
    serde_path_to_error::deserialize(de).map_err(|e| PayloadError {
        topic: topic.to_string(),
        reason: if e.path().to_string() == "." {
            e.inner().to_string()
        } else {
            format!("{}: {}", e.path(), e.inner())
        },
    })
}

/// One drift measurement, published by a receiver on `syncstream/drift/<device>`.
///
/// Example: `{"device":"livingroom","drift_ms":23.4,"confidence":0.91,"signal_strength_db":-54.0,"ts_us":1234,"applied_offset_ms":300.0}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DriftReport {
    /// Reporting device.
    pub device: String,
    /// How late the device's sound was against where it should be, in ms (positive: late).
    /// `null` when the window had no usable signal.
    pub drift_ms: Option<f64>,
    /// Confidence of the estimate, 0..=1 (see the estimator's docs for its meaning).
    pub confidence: f64,
    /// Level of the microphone recording, in dBFS (RMS).
    pub signal_strength_db: f64,
    /// Transmitter time the measurement refers to (the centre of the recorded window), µs.
    pub ts_us: i64,
    /// Buffer offset that was in effect at the centre of the window, ms.
    #[serde(default)]
    pub applied_offset_ms: f64,
    /// Why there is no estimate, when `drift_ms` is null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The device's own sound has left the time where it was expected and was found,
    /// as strong as usual, `drift_ms` away: its output latency stepped (a TV's picture
    /// mode, a Bluetooth reconnect), and the controller may follow at once instead of
    /// waiting for several reports to agree. Omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step: bool,
    /// Set on a coarse estimate (bass-only sound, too little bandwidth to place the
    /// direct path within 1 ms): the true drift lies within ± this of `drift_ms`, ms.
    /// The controller uses coarse estimates only to acquire or to catch gross errors,
    /// never to fine-tune. Omitted on precise estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_ms: Option<f64>,
}

/// A corrective buffer offset, published by the sync controller on
/// `syncstream/buffer_offset/<device>`: the receiver plays source sample T so that it
/// leaves its output at T + playout delay − `offset_ms`.
///
/// Example: `{"device":"tv","offset_ms":84.25,"seq":3,"rate_ms_per_s":0.0,"ref_us":81234567}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferOffset {
    /// Target device.
    pub device: String,
    /// Total offset, ms (not an increment), at transmitter time `ref_us`.
    pub offset_ms: f64,
    /// Increasing sequence number per device, so late duplicates can be ignored.
    #[serde(default)]
    pub seq: u64,
    /// How fast the offset changes, ms per second of transmitter time (the device's
    /// latency is drifting); 0 for a constant offset.
    #[serde(default)]
    pub rate_ms_per_s: f64,
    /// Transmitter time at which `offset_ms` holds, µs (needed when `rate_ms_per_s` ≠ 0).
    #[serde(default)]
    pub ref_us: i64,
}

/// A command on `syncstream/command/<device>`.
///
/// Examples: `{"cmd":"mute"}`, `{"cmd":"volume","value":0.4}`,
/// `{"cmd":"test_tone","signal":"sweep"}`, `{"cmd":"announce"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Stop playing (output silence, keep the connection).
    Stop,
    /// Start playing again.
    Start,
    /// Forget the current offset estimate history and re-measure now.
    Resync,
    /// Mute the output.
    Mute,
    /// Unmute the output.
    Unmute,
    /// Set the output volume, linear 0.0..=1.0.
    Volume {
        /// Linear gain, 0.0..=1.0.
        value: f64,
    },
    /// Play a calibration test signal and report the measured latency.
    TestTone(TestToneRequest),
    /// Judge the last seconds of microphone audio (level, DC offset, clipping, mains
    /// hum) and answer on `syncstream/mic_check/<device>`.
    CheckMic,
    /// Say, through the device's own output, its name, state, last drift and current
    /// offset ("Kitchen online, drift plus 0.3 milliseconds, offset 31.5
    /// milliseconds"; docs/voice.md). Extra fields are ignored.
    Announce,
    /// A manual trim of where the device's sound sits, on top of the measured offset
    /// (for the transmitter's sync controller; receivers ignore it).
    Adjust {
        /// ms; positive plays the device later. −500 to 500.
        manual_adjust_ms: f64,
    },
}

/// What the transmitter's control plane wants a receiver to do with its output,
/// retained on `syncstream/settings/<device>`. The receiver plays at
/// `volume × group_volume`, muted when `muted` or `group_muted`.
///
/// Example: `{"device":"kitchen","group":"downstairs","stream":"radio","volume":1.0,"muted":false,"group_volume":0.8,"group_muted":false}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSettings {
    /// Target device.
    pub device: String,
    /// The device's group.
    #[serde(default)]
    pub group: String,
    /// The stream the group plays.
    #[serde(default)]
    pub stream: String,
    /// The device's own volume, linear 0..=1.
    pub volume: f64,
    /// The device's own mute.
    pub muted: bool,
    /// Its group's volume, linear 0..=1.
    #[serde(default = "one")]
    pub group_volume: f64,
    /// Its group's mute.
    #[serde(default)]
    pub group_muted: bool,
}

fn one() -> f64 {
    1.0
}

impl DeviceSettings {
    /// Checks the numbers; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [("volume", self.volume), ("group_volume", self.group_volume)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!("{name}: {v} is not between 0 and 1"));
            }
        }
        Ok(())
    }

    /// The gain the output plays at (0 when muted).
    pub fn effective_volume(&self) -> f64 {
        self.volume * self.group_volume
    }

    /// Whether the output is silent.
    pub fn effective_muted(&self) -> bool {
        self.muted || self.group_muted
    }
}

/// A request on `syncstream/group/<group>` (the MQTT door of `PUT` and `DELETE
/// /api/v1/groups/<group>`): every field is optional; `{"delete": true}` deletes.
///
/// Example: `{"stream":"radio","devices":["kitchen","tv"],"volume":0.8,"muted":false}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    /// Stream the group plays.
    #[serde(default)]
    pub stream: Option<String>,
    /// Its devices (moved out of their groups).
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// Group volume, 0..=1.
    #[serde(default)]
    pub volume: Option<f64>,
    /// Group mute.
    #[serde(default)]
    pub muted: Option<bool>,
    /// New name of the group.
    #[serde(default)]
    pub rename: Option<String>,
    /// Delete the group (its devices go to `default`).
    #[serde(default)]
    pub delete: bool,
}

/// Parameters of a `test_tone` command; every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TestToneRequest {
    /// `sweep` (exponential sine sweep) or `mls` (maximum-length sequence); default sweep.
    pub signal: Option<String>,
    /// Peak level in dBFS (default −12).
    pub level_dbfs: Option<f64>,
    /// Length of the signal, ms.
    pub duration_ms: Option<f64>,
    /// Calibration run this belongs to, echoed in the result.
    pub run_id: Option<String>,
    /// For an MLS: which primitive polynomial to use (0..64). A simultaneous
    /// calibration gives every device a different member of an orthogonal set.
    pub sequence: Option<u32>,
    /// Longest output latency to listen for, ms (default: the profile's base latency
    /// + 500 ms, at most 2000).
    pub max_latency_ms: Option<f64>,
    /// Include an excerpt of the impulse response in the answer (for report plots).
    pub include_ir: Option<bool>,
}

/// A receiver's answer to a `test_tone` command, on `syncstream/calibration/<device>`:
/// either a measurement or an error.
///
/// Examples: `{"device":"kitchen","run_id":"r1","latency_ms":31.52,"uncertainty_ms":0.002,
/// "confidence":1.0,"signal":"sweep","ts_us":123}`,
/// `{"device":"kitchen","run_id":"r1","error":"no test signal found ..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CalibrationResult {
    /// Device that measured.
    pub device: String,
    /// The request's `run_id`, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Measured output latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// 1 σ uncertainty of `latency_ms`, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_ms: Option<f64>,
    /// Confidence, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Arrival of the direct sound after the signal's start, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset_ms: Option<f64>,
    /// Direct-path peak over the impulse response's noise floor, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_to_noise_db: Option<f64>,
    /// `sweep` or `mls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Local time of the answer, µs.
    #[serde(default)]
    pub ts_us: i64,
    /// Why there is no measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When asked for (`include_ir`): the impulse response from 10 ms before to 60 ms
    /// after the direct sound, 48 kHz samples (path gain).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "finite_f32s"
    )]
    pub ir: Option<Vec<f32>>,
    /// Delay of `ir[0]` after the signal's sample 0, samples at 48 kHz (fractional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ir_origin_samples: Option<f64>,
}

/// An optional list of f32 that must all be finite: JSON numbers beyond ±3.4e38 become
/// infinities as f32, which serialize as `null` (found by fuzzing: a calibration
/// result the transmitter passes on would no longer parse).
fn finite_f32s<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
    let v = Option::<Vec<f32>>::deserialize(d)?;
    if let Some(x) = v.iter().flatten().find(|x| !x.is_finite()) {
        return Err(serde::de::Error::custom(format!(
            "{x} is not a finite 32-bit number"
        )));
    }
    Ok(v)
}

/// Receiver state published (retained) on `syncstream/status/<device>`. The MQTT last
/// will publishes `{"device":"<device>","state":"offline"}` there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Status {
    /// Device name.
    pub device: String,
    /// `playing`, `muted` (playing silence: the device or its group is muted),
    /// `starved` (connected or not, the audio ran out), `stopped`, `connecting` (no
    /// audio yet), `error` (see `reason`) or `offline` (the last will).
    pub state: String,
    /// Why the state is `error`, `starved`, `muted` or `stopped`, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Buffer offset in effect, ms.
    #[serde(default)]
    pub offset_ms: f64,
    /// Last measured drift, ms.
    #[serde(default)]
    pub drift_ms: Option<f64>,
    /// Confidence of the last drift, 0..=1.
    #[serde(default)]
    pub confidence: f64,
    /// Playout delay, ms: the largest offset the buffer can absorb is a bit below this.
    #[serde(default)]
    pub playout_delay_ms: f64,
    /// Output volume, 0..=1.
    #[serde(default)]
    pub volume: f64,
    /// Muted or not.
    #[serde(default)]
    pub muted: bool,
    /// Times playout ran out of audio while playing, since start.
    #[serde(default)]
    pub underruns: u64,
    /// Output and microphone xruns the audio device reported, since start.
    #[serde(default)]
    pub xruns: u64,
    /// Audio callbacks that came late (their block started after the previous one
    /// ended, by more than 5 ms), output and microphone, since start.
    #[serde(default)]
    pub late_callbacks: u64,
    /// Playout jumps (crossfaded repositionings: start, large offset changes).
    #[serde(default)]
    pub jumps: u64,
    /// Output type from the profile (`analog`, `hdmi`, ...).
    #[serde(default)]
    pub output: String,
    /// Local time of the status, µs.
    #[serde(default)]
    pub ts_us: i64,
    /// The version the receiver runs (`syncstream_shared::version::running`: the
    /// signed version after an update); absent from older receivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The stream it plays (absent before the first hello).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Its group, as the last `syncstream/settings` said (absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Retained configuration push on `syncstream/config`: profiles by device name.
///
/// Example: `{"devices":{"tv":{"type":"hdmi","target":"LG-OLED","base_latency_ms":70}}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConfigPush {
    /// Profile per device name.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceProfile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_report_round_trip_and_spec_example() {
        let r: DriftReport = parse(
            "syncstream/drift/livingroom",
            br#"{"device":"livingroom","drift_ms":23.4,"confidence":0.91,"signal_strength_db":-54.0,"ts_us":17}"#,
        )
        .unwrap();
        assert_eq!(r.drift_ms, Some(23.4));
        assert_eq!(r.applied_offset_ms, 0.0);
        let back: DriftReport = parse("t", serde_json::to_string(&r).unwrap().as_bytes()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn commands_parse() {
        let c: Command = parse("t", br#"{"cmd":"volume","value":0.5}"#).unwrap();
        assert_eq!(c, Command::Volume { value: 0.5 });
        let c: Command = parse("t", br#"{"cmd":"test_tone","signal":"sweep"}"#).unwrap();
        assert!(
            matches!(c, Command::TestTone(TestToneRequest { signal: Some(ref s), .. }) if s == "sweep")
        );
        assert_eq!(
            parse::<Command>("t", br#"{"cmd":"stop"}"#).unwrap(),
            Command::Stop
        );
        assert_eq!(
            parse::<Command>("t", br#"{"cmd":"adjust","manual_adjust_ms":-1.5}"#).unwrap(),
            Command::Adjust {
                manual_adjust_ms: -1.5
            }
        );
    }

    #[test]
    fn the_announce_command_parses_and_round_trips() {
        let c: Command = parse("t", br#"{"cmd":"announce"}"#).unwrap();
        assert_eq!(c, Command::Announce);
        assert_eq!(
            serde_json::to_string(&Command::Announce).unwrap(),
            r#"{"cmd":"announce"}"#
        );
        // Fields a future version may add do not break an older receiver.
        let c: Command = parse("t", br#"{"cmd":"announce","voice":"en"}"#).unwrap();
        assert_eq!(c, Command::Announce);
        // Its spelling is exact.
        for bad in [
            &br#"{"cmd":"Announce"}"#[..],
            br#"{"cmd":"announce_"}"#,
            br#"{"announce":true}"#,
        ] {
            let e = parse::<Command>("syncstream/command/x", bad).unwrap_err();
            assert!(e.to_string().contains("syncstream/command/x"), "{e}");
        }
    }

    #[test]
    fn settings_and_group_requests_parse_and_check() {
        let s: DeviceSettings = parse(
            "t",
            br#"{"device":"tv","volume":0.5,"muted":false,"group_volume":0.5}"#,
        )
        .unwrap();
        assert!((s.effective_volume() - 0.25).abs() < 1e-12 && !s.effective_muted());
        let bad = DeviceSettings {
            group_volume: 2.0,
            ..s
        };
        assert!(bad.check().unwrap_err().contains("group_volume"));
        let g: GroupRequest = parse("t", br#"{"devices":["tv"],"volume":0.8}"#).unwrap();
        assert_eq!(g.devices.unwrap(), vec!["tv".to_string()]);
        assert!(parse::<GroupRequest>("t", br#"{"colour":"red"}"#).is_err());
    }

    #[test]
    fn malformed_payloads_are_errors_naming_the_topic() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"cmd\":\"explode\"}",
            b"\xff\xfe",
            b"",
        ] {
            let e = parse::<Command>("syncstream/command/x", bad).unwrap_err();
            assert!(e.to_string().contains("syncstream/command/x"), "{e}");
        }
        assert!(parse::<DriftReport>("t", br#"{"device":"x","drift_ms":"a"}"#).is_err());
    }

    #[test]
    fn calibration_results_with_infinite_ir_samples_are_refused() {
        // Found by fuzzing (fuzz/corpus/mqtt/ir-not-finite-*): 1e39 parsed as an f32
        // infinity, serialized as null, and what the transmitter passed on no longer
        // parsed.
        let e = parse::<CalibrationResult>("t", br#"{"device":"tv","ir":[0.5,1e39]}"#).unwrap_err();
        assert!(e.to_string().contains("ir"), "{e}");
        let ok: CalibrationResult = parse("t", br#"{"device":"tv","ir":[0.5,-1.0]}"#).unwrap();
        assert_eq!(ok.ir, Some(vec![0.5, -1.0]));
        let back = serde_json::to_vec(&ok).unwrap();
        assert_eq!(parse::<CalibrationResult>("t", &back).unwrap(), ok);
    }

    #[test]
    fn device_of_topic() {
        assert_eq!(
            topics::device_of("syncstream/drift/tv", "drift"),
            Some("tv")
        );
        assert_eq!(topics::device_of("syncstream/drift/", "drift"), None);
        assert_eq!(topics::device_of("syncstream/drift/a/b", "drift"), None);
        assert_eq!(topics::device_of("other/drift/tv", "drift"), None);
    }
}
