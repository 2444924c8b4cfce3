//! Home Assistant MQTT discovery: the retained configs that make every receiver, and
//! the transmitter itself, appear in Home Assistant as a device with entities.
//!
//! Source: Home Assistant's MQTT discovery documentation
//! (<https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery>): a config is
//! published retained on `<prefix>/<component>/<node_id>/<object_id>/config`; an
//! empty retained payload there removes the entity; Home Assistant announces itself
//! with `online` on `<prefix>/status` after it starts, and configs are published
//! again then.
//!
//! Entities per receiver (node id `syncstream_<device>`):
//!
//! | component | object id | what |
//! | --- | --- | --- |
//! | sensor | `drift` | last measured drift, ms |
//! | sensor | `offset` | buffer offset in effect, ms |
//! | sensor | `confidence` | confidence of the last drift, % |
//! | sensor | `signal_strength` | level of the music in the microphone, dBFS |
//! | sensor | `underruns` | times playout ran out of audio since start |
//! | binary_sensor | `in_sync` | the sync controller tracks the device (locked) |
//! | number | `manual_adjust` | manual adjustment, ms, −500..500 in 0.1 ms steps |
//! | number | `volume` | the device's volume, 0–100 % |
//! | switch | `mute` | the device's mute |
//! | button | `resync`, `test_tone`, `calibrate`, `announce` | the commands of the same names |
//! | select | `group` | the device's group |
//!
//! And one device for the transmitter (node id `syncstream_transmitter`): sensors
//! `devices_online` and `worst_spread` (the largest pairwise spread of any group now,
//! ms), and a select `stream_<group>` per group for the stream it plays.
//!
//! States come from topics the control plane publishes: [`state_topic`] (retained,
//! the body of `GET /api/v1/devices/<device>`) and [`SUMMARY_TOPIC`]. Availability
//! comes from the receiver's `syncstream/status/<device>` (its last will says
//! `offline`) and from [`TRANSMITTER_STATUS_TOPIC`] (the control plane's own last will).
//! Commands go where the dashboard's and the API's go: `syncstream/command/<device>`,
//! `syncstream/calibrate`, `syncstream/group/<group>`, and [`group_of_topic`].

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Default discovery prefix (Home Assistant's).
pub const DEFAULT_PREFIX: &str = "homeassistant";
/// Retained summary of the whole system, for the transmitter's entities:
/// `{"devices":N,"devices_online":N,"worst_spread_ms":x|null,"groups":{"<group>":"<stream>"}}`.
pub const SUMMARY_TOPIC: &str = "syncstream/summary";
/// Retained `online` / `offline` (the control plane's last will).
pub const TRANSMITTER_STATUS_TOPIC: &str = "syncstream/transmitter/status";
/// Node id of the transmitter's device.
pub const TRANSMITTER_NODE: &str = "syncstream_transmitter";
/// Longest discovery prefix accepted, bytes.
pub const MAX_PREFIX_BYTES: usize = 64;

/// `syncstream/state/<device>` (retained): the device as `GET /api/v1/devices/<device>`
/// shows it, without `last_seen_us`.
pub fn state_topic(device: &str) -> String {
    format!("syncstream/state/{device}")
}

/// `syncstream/group_of/<device>`: a group's name as the payload moves the device
/// into that group (Home Assistant's group select; the same change as
/// `PUT /api/v1/groups/<group>` with the device added).
pub fn group_of_topic(device: &str) -> String {
    format!("syncstream/group_of/{device}")
}

/// `syncstream_<device>` with every character but ASCII letters and digits made `_`:
/// the receiver's node id and device identifier, the same as its update entity's
/// (`syncstream_update::agent::home_assistant_discovery`), so both are one device.
pub fn node_id(device: &str) -> String {
    format!(
        "syncstream_{}",
        device.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// Checks a discovery prefix: 1 to [`MAX_PREFIX_BYTES`] bytes of letters, digits, `_`,
/// `-` and `/` (not at either end), no MQTT wildcards.
///
/// Errors: the reason, naming the prefix.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok_chars = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/'));
    if prefix.is_empty()
        || prefix.len() > MAX_PREFIX_BYTES
        || !ok_chars
        || prefix.starts_with('/')
        || prefix.ends_with('/')
        || prefix.contains("//")
    {
        return Err(format!(
            "Home Assistant discovery prefix '{}': must be 1 to {MAX_PREFIX_BYTES} letters, digits, '_', '-' or inner '/'",
            prefix.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// What discovery needs from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryOptions {
    /// Discovery prefix ([`DEFAULT_PREFIX`]); checked by [`check_prefix`].
    pub prefix: String,
    /// The dashboard's URL, shown as every device's `configuration_url`.
    pub dashboard_url: Option<String>,
}

/// What is known of one receiver.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReceiverFacts {
    /// Device name (checked).
    pub name: String,
    /// Output type from its status (`hdmi`, `bluetooth`, ...; empty: unknown).
    pub output: String,
    /// Its version, from its status.
    pub version: Option<String>,
    /// Area from its profile (empty: none).
    pub area: String,
}

/// One retained config: topic and JSON payload.
pub type Config = (String, Value);

fn origin() -> Value {
    json!({
        "name": "SyncStream",
        "sw_version": env!("CARGO_PKG_VERSION"),
    })
}

fn topic(opts: &DiscoveryOptions, component: &str, node: &str, object: &str) -> String {
    format!("{}/{component}/{node}/{object}/config", opts.prefix)
}

/// The configs of one receiver's entities (see the module docs), given the names of
/// every group (the group select's options).
pub fn receiver_configs(
    opts: &DiscoveryOptions,
    r: &ReceiverFacts,
    groups: &[String],
) -> Vec<Config> {
    let d = r.name.as_str();
    let node = node_id(d);
    let mut device = json!({
        "identifiers": [node],
        "name": d,
        "manufacturer": "SyncStream",
        "model": if r.output.is_empty() { "receiver" } else { r.output.as_str() },
        "via_device": TRANSMITTER_NODE,
    });
    if let Some(v) = &r.version {
        device["sw_version"] = json!(v);
    }
    if !r.area.is_empty() {
        device["suggested_area"] = json!(r.area);
    }
    if let Some(u) = &opts.dashboard_url {
        device["configuration_url"] = json!(u);
    }
    let state = state_topic(d);
    let command = format!("syncstream/command/{d}");
    let base = |object: &str, name: &str| {
        json!({
            "name": name,
            "unique_id": format!("{node}_{object}"),
            "object_id": format!("{node}_{object}"),
            "device": device,
            "origin": origin(),
            "availability_topic": format!("syncstream/status/{d}"),
            "availability_template": "{{ 'offline' if value_json.state == 'offline' else 'online' }}",
        })
    };
    let with = |mut v: Value, extra: Value| {
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    let sensor = |object: &str, name: &str, template: &str, extra: Value| {
        (
            topic(opts, "sensor", &node, object),
            with(
                base(object, name),
                with(
                    json!({ "state_topic": state, "value_template": template }),
                    extra,
                ),
            ),
        )
    };
    let button = |object: &str, name: &str, topic_: &str, payload: String, icon: &str| {
        (
            topic(opts, "button", &node, object),
            with(
                base(object, name),
                json!({ "command_topic": topic_, "payload_press": payload, "icon": icon }),
            ),
        )
    };
    vec![
        sensor(
            "drift",
            "Drift",
            "{{ value_json.drift_ms }}",
            json!({ "unit_of_measurement": "ms", "device_class": "duration",
                    "state_class": "measurement", "suggested_display_precision": 2 }),
        ),
        sensor(
            "offset",
            "Buffer offset",
            "{{ value_json.offset_ms }}",
            json!({ "unit_of_measurement": "ms", "device_class": "duration",
                    "state_class": "measurement", "suggested_display_precision": 2 }),
        ),
        sensor(
            "confidence",
            "Confidence",
            "{{ (value_json.confidence * 100) | round(0) if value_json.confidence is number else None }}",
            json!({ "unit_of_measurement": "%", "state_class": "measurement",
                    "icon": "mdi:check-decagram" }),
        ),
        sensor(
            "signal_strength",
            "Signal strength",
            "{{ value_json.signal_strength_db }}",
            json!({ "unit_of_measurement": "dBFS", "state_class": "measurement",
                    "icon": "mdi:microphone", "suggested_display_precision": 1 }),
        ),
        sensor(
            "underruns",
            "Underruns",
            "{{ value_json.underruns }}",
            json!({ "state_class": "total_increasing", "icon": "mdi:alert-circle-outline" }),
        ),
        (
            topic(opts, "binary_sensor", &node, "in_sync"),
            with(
                base("in_sync", "In sync"),
                json!({
                    "state_topic": state,
                    "value_template": "{{ 'ON' if value_json.locked else 'OFF' }}",
                    "icon": "mdi:sync",
                }),
            ),
        ),
        (
            topic(opts, "number", &node, "manual_adjust"),
            with(
                base("manual_adjust", "Manual adjustment"),
                json!({
                    "state_topic": state,
                    "value_template": "{{ value_json.manual_adjust_ms }}",
                    "command_topic": command,
                    "command_template": "{\"cmd\":\"adjust\",\"manual_adjust_ms\":{{ value }}}",
                    "min": -500, "max": 500, "step": 0.1, "mode": "box",
                    "unit_of_measurement": "ms", "entity_category": "config",
                    "icon": "mdi:arrow-left-right",
                }),
            ),
        ),
        (
            topic(opts, "number", &node, "volume"),
            with(
                base("volume", "Volume"),
                json!({
                    "state_topic": state,
                    "value_template": "{{ (value_json.volume * 100) | round(0) }}",
                    "command_topic": command,
                    "command_template": "{\"cmd\":\"volume\",\"value\":{{ value / 100 }}}",
                    "min": 0, "max": 100, "step": 1, "mode": "slider",
                    "unit_of_measurement": "%", "icon": "mdi:volume-high",
                }),
            ),
        ),
        (
            topic(opts, "switch", &node, "mute"),
            with(
                base("mute", "Mute"),
                json!({
                    "state_topic": state,
                    "value_template": "{{ 'ON' if value_json.muted else 'OFF' }}",
                    "command_topic": command,
                    "payload_on": "{\"cmd\":\"mute\"}",
                    "payload_off": "{\"cmd\":\"unmute\"}",
                    "state_on": "ON", "state_off": "OFF",
                    "icon": "mdi:volume-off",
                }),
            ),
        ),
        button(
            "resync",
            "Resync",
            &command,
            r#"{"cmd":"resync"}"#.into(),
            "mdi:sync-alert",
        ),
        button(
            "test_tone",
            "Test tone",
            &command,
            r#"{"cmd":"test_tone"}"#.into(),
            "mdi:sine-wave",
        ),
        button(
            "calibrate",
            "Calibrate",
            super::CALIBRATE_TOPIC,
            json!({ "devices": [d] }).to_string(),
            "mdi:tune-vertical",
        ),
        button(
            "announce",
            "Announce",
            &command,
            r#"{"cmd":"announce"}"#.into(),
            "mdi:account-voice",
        ),
        (
            topic(opts, "select", &node, "group"),
            with(
                base("group", "Group"),
                json!({
                    "state_topic": state,
                    "value_template": "{{ value_json.group }}",
                    "command_topic": group_of_topic(d),
                    "options": groups,
                    "icon": "mdi:speaker-multiple",
                }),
            ),
        ),
    ]
}

/// The configs of the transmitter's own device, given every group with the stream
/// it plays and every stream's name.
pub fn transmitter_configs(
    opts: &DiscoveryOptions,
    groups: &BTreeMap<String, String>,
    streams: &[String],
) -> Vec<Config> {
    let node = TRANSMITTER_NODE;
    let mut device = json!({
        "identifiers": [node],
        "name": "SyncStream transmitter",
        "manufacturer": "SyncStream",
        "model": "transmitter",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(u) = &opts.dashboard_url {
        device["configuration_url"] = json!(u);
    }
    let base = |object: &str, name: &str| {
        json!({
            "name": name,
            "unique_id": format!("{node}_{object}"),
            "object_id": format!("{node}_{object}"),
            "device": device,
            "origin": origin(),
            "availability_topic": TRANSMITTER_STATUS_TOPIC,
            "state_topic": SUMMARY_TOPIC,
        })
    };
    let mut out = vec![
        (topic(opts, "sensor", node, "devices_online"), {
            let mut v = base("devices_online", "Devices online");
            v["value_template"] = json!("{{ value_json.devices_online }}");
            v["state_class"] = json!("measurement");
            v["icon"] = json!("mdi:speaker-wireless");
            v
        }),
        (topic(opts, "sensor", node, "worst_spread"), {
            let mut v = base("worst_spread", "Worst pairwise spread");
            v["value_template"] = json!("{{ value_json.worst_spread_ms }}");
            v["unit_of_measurement"] = json!("ms");
            v["device_class"] = json!("duration");
            v["state_class"] = json!("measurement");
            v["suggested_display_precision"] = json!(2);
            v
        }),
    ];
    for g in groups.keys() {
        let object = format!("stream_{g}");
        let mut v = base(&object, &format!("Stream of {g}"));
        v["value_template"] = json!(format!("{{{{ value_json.groups['{g}'] }}}}"));
        v["command_topic"] = json!(format!("syncstream/group/{g}"));
        v["command_template"] = json!("{\"stream\":\"{{ value }}\"}");
        v["options"] = json!(streams);
        v["icon"] = json!("mdi:playlist-music");
        out.push((topic(opts, "select", node, &object), v));
    }
    out
}

/// The retained discovery configs published, by topic, so that only changes are sent
/// and the configs of what is gone are cleared (empty retained payloads).
#[derive(Debug, Default)]
pub struct Published {
    configs: BTreeMap<String, Vec<u8>>,
}

impl Published {
    /// What to publish to go from what was published to `wanted`: changed and new
    /// configs, and an empty payload for every topic no longer wanted. With `all`,
    /// every wanted config is sent again (Home Assistant restarted, or the broker).
    pub fn update(&mut self, wanted: Vec<Config>, all: bool) -> Vec<(String, Vec<u8>)> {
        let wanted: BTreeMap<String, Vec<u8>> = wanted
            .into_iter()
            .map(|(t, v)| (t, v.to_string().into_bytes()))
            .collect();
        let mut out: Vec<(String, Vec<u8>)> = self
            .configs
            .keys()
            .filter(|t| !wanted.contains_key(*t))
            .map(|t| (t.clone(), Vec::new()))
            .collect();
        for (t, p) in &wanted {
            if all || self.configs.get(t) != Some(p) {
                out.push((t.clone(), p.clone()));
            }
        }
        self.configs = wanted;
        out
    }

    /// Number of configs published.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether none is published.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DiscoveryOptions {
        DiscoveryOptions {
            prefix: "homeassistant".into(),
            dashboard_url: Some("https://tx.local:4954/".into()),
        }
    }

    fn kitchen() -> ReceiverFacts {
        ReceiverFacts {
            name: "kitchen".into(),
            output: "bluetooth".into(),
            version: Some("0.3.0".into()),
            area: "Kitchen".into(),
        }
    }

    fn by_topic(configs: &[Config]) -> BTreeMap<&str, &Value> {
        configs.iter().map(|(t, v)| (t.as_str(), v)).collect()
    }

    #[test]
    fn every_receiver_entity_is_there_with_its_device_and_availability() {
        let groups = vec!["default".to_string(), "upstairs".to_string()];
        let c = receiver_configs(&opts(), &kitchen(), &groups);
        let m = by_topic(&c);
        let expected = [
            "sensor/syncstream_kitchen/drift",
            "sensor/syncstream_kitchen/offset",
            "sensor/syncstream_kitchen/confidence",
            "sensor/syncstream_kitchen/signal_strength",
            "sensor/syncstream_kitchen/underruns",
            "binary_sensor/syncstream_kitchen/in_sync",
            "number/syncstream_kitchen/manual_adjust",
            "number/syncstream_kitchen/volume",
            "switch/syncstream_kitchen/mute",
            "button/syncstream_kitchen/resync",
            "button/syncstream_kitchen/test_tone",
            "button/syncstream_kitchen/calibrate",
            "button/syncstream_kitchen/announce",
            "select/syncstream_kitchen/group",
        ];
        assert_eq!(c.len(), expected.len());
        let mut ids = std::collections::BTreeSet::new();
        for e in expected {
            let v = m
                .get(format!("homeassistant/{e}/config").as_str())
                .unwrap_or_else(|| panic!("{e} missing"));
            assert!(ids.insert(v["unique_id"].as_str().unwrap().to_string()));
            assert_eq!(v["device"]["identifiers"][0], "syncstream_kitchen");
            assert_eq!(v["device"]["name"], "kitchen");
            assert_eq!(v["device"]["model"], "bluetooth");
            assert_eq!(v["device"]["sw_version"], "0.3.0");
            assert_eq!(v["device"]["suggested_area"], "Kitchen");
            assert_eq!(v["device"]["configuration_url"], "https://tx.local:4954/");
            assert_eq!(v["availability_topic"], "syncstream/status/kitchen");
            assert!(v["availability_template"]
                .as_str()
                .unwrap()
                .contains("offline"));
        }
        let drift = m["homeassistant/sensor/syncstream_kitchen/drift/config"];
        assert_eq!(drift["state_topic"], "syncstream/state/kitchen");
        assert_eq!(drift["unit_of_measurement"], "ms");
        assert_eq!(drift["device_class"], "duration");
        assert_eq!(drift["state_class"], "measurement");
        let under = m["homeassistant/sensor/syncstream_kitchen/underruns/config"];
        assert_eq!(under["state_class"], "total_increasing");
        let sig = m["homeassistant/sensor/syncstream_kitchen/signal_strength/config"];
        assert_eq!(sig["unit_of_measurement"], "dBFS");
        let adj = m["homeassistant/number/syncstream_kitchen/manual_adjust/config"];
        assert_eq!(adj["step"], 0.1);
        assert_eq!(adj["min"], -500);
        assert_eq!(adj["command_topic"], "syncstream/command/kitchen");
        let cal = m["homeassistant/button/syncstream_kitchen/calibrate/config"];
        assert_eq!(cal["command_topic"], "syncstream/calibrate");
        assert_eq!(cal["payload_press"], r#"{"devices":["kitchen"]}"#);
        let group = m["homeassistant/select/syncstream_kitchen/group/config"];
        assert_eq!(group["options"], json!(["default", "upstairs"]));
        assert_eq!(group["command_topic"], "syncstream/group_of/kitchen");
    }

    #[test]
    fn command_payloads_are_commands_the_receiver_and_control_plane_parse() {
        use syncstream_protocol::messages::{parse, Command};
        let c = receiver_configs(&opts(), &kitchen(), &["default".into()]);
        let m = by_topic(&c);
        let mute = m["homeassistant/switch/syncstream_kitchen/mute/config"];
        for key in ["payload_on", "payload_off"] {
            let p = mute[key].as_str().unwrap();
            assert!(parse::<Command>("t", p.as_bytes()).is_ok(), "{p}");
        }
        for b in ["resync", "test_tone"] {
            let v = m[format!("homeassistant/button/syncstream_kitchen/{b}/config").as_str()];
            let p = v["payload_press"].as_str().unwrap();
            assert!(parse::<Command>("t", p.as_bytes()).is_ok(), "{p}");
        }
        // What Home Assistant renders from the command templates, for a value.
        let adj = m["homeassistant/number/syncstream_kitchen/manual_adjust/config"]
            ["command_template"]
            .as_str()
            .unwrap()
            .replace("{{ value }}", "-1.3");
        assert_eq!(
            parse::<Command>("t", adj.as_bytes()).unwrap(),
            Command::Adjust {
                manual_adjust_ms: -1.3
            }
        );
        let vol = m["homeassistant/number/syncstream_kitchen/volume/config"]["command_template"]
            .as_str()
            .unwrap()
            .replace("{{ value / 100 }}", "0.35");
        assert_eq!(
            parse::<Command>("t", vol.as_bytes()).unwrap(),
            Command::Volume { value: 0.35 }
        );
    }

    #[test]
    fn optional_device_fields_are_left_out() {
        let r = ReceiverFacts {
            name: "tv".into(),
            ..Default::default()
        };
        let o = DiscoveryOptions {
            prefix: "ha/test".into(),
            dashboard_url: None,
        };
        let c = receiver_configs(&o, &r, &[]);
        assert!(c[0].0.starts_with("ha/test/sensor/syncstream_tv/"));
        let dev = &c[0].1["device"];
        assert_eq!(dev["model"], "receiver");
        for k in ["sw_version", "suggested_area", "configuration_url"] {
            assert!(dev.get(k).is_none(), "{k}");
        }
    }

    #[test]
    fn the_transmitter_has_its_sensors_and_a_stream_select_per_group() {
        let groups = BTreeMap::from([
            ("default".to_string(), "radio".to_string()),
            ("up".to_string(), "default".to_string()),
        ]);
        let c = transmitter_configs(&opts(), &groups, &["default".into(), "radio".into()]);
        let m = by_topic(&c);
        assert_eq!(c.len(), 4);
        let online = m["homeassistant/sensor/syncstream_transmitter/devices_online/config"];
        assert_eq!(online["state_topic"], SUMMARY_TOPIC);
        assert_eq!(online["availability_topic"], TRANSMITTER_STATUS_TOPIC);
        let spread = m["homeassistant/sensor/syncstream_transmitter/worst_spread/config"];
        assert_eq!(spread["unit_of_measurement"], "ms");
        let up = m["homeassistant/select/syncstream_transmitter/stream_up/config"];
        assert_eq!(up["command_topic"], "syncstream/group/up");
        assert_eq!(up["options"], json!(["default", "radio"]));
        assert_eq!(up["value_template"], "{{ value_json.groups['up'] }}");
        let req = up["command_template"]
            .as_str()
            .unwrap()
            .replace("{{ value }}", "radio");
        let g: syncstream_protocol::messages::GroupRequest = serde_json::from_str(&req).unwrap();
        assert_eq!(g.stream.as_deref(), Some("radio"));
    }

    #[test]
    fn published_sends_changes_and_clears_what_is_gone() {
        let mut p = Published::default();
        let a = ("a".to_string(), json!({"x": 1}));
        let b = ("b".to_string(), json!({"x": 2}));
        let out = p.update(vec![a.clone(), b.clone()], false);
        assert_eq!(out.len(), 2);
        assert!(p.update(vec![a.clone(), b.clone()], false).is_empty());
        assert_eq!(p.update(vec![a.clone(), b.clone()], true).len(), 2);
        let b2 = ("b".to_string(), json!({"x": 3}));
        let out = p.update(vec![a.clone(), b2], false);
        assert_eq!(out, vec![("b".to_string(), br#"{"x":3}"#.to_vec())]);
        let out = p.update(vec![a], false);
        assert_eq!(out, vec![("b".to_string(), Vec::new())]);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn a_receiver_and_its_update_entity_are_one_device() {
        let r = ReceiverFacts {
            name: "living-room".into(),
            ..Default::default()
        };
        let c = receiver_configs(&opts(), &r, &[]);
        let (_, update) = syncstream_update::agent::home_assistant_discovery("living-room");
        let update: Value = serde_json::from_slice(&update).unwrap();
        assert_eq!(
            c[0].1["device"]["identifiers"],
            update["device"]["identifiers"]
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("homeassistant").is_ok());
        assert!(check_prefix("ha/test-1").is_ok());
        for bad in ["", "/ha", "ha/", "ha/+", "h#", "a//b", &"x".repeat(65)] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
