//! Home Assistant (issue 11): the demo (transmitter, embedded broker, three receivers in
//! the virtual room) publishes MQTT discovery configs, states and availability.
//!
//! - Over the embedded broker alone: every device's configs are there, Home
//!   Assistant's `online` makes them come again, commands on the entities' command
//!   topics (as Home Assistant renders them) change the same state as the API, and a
//!   forgotten device's configs are cleared.
//! - Against a real Home Assistant core (PyPI `homeassistant` in the Python 3.13
//!   virtual environment `scripts/setup.sh` makes, `SYNCSTREAM_HA_VENV`, default
//!   `/opt/syncstream-ha`), its MQTT integration pre-seeded in
//!   `.storage/core.config_entries`: the entity registry holds the entities, the
//!   recorder's database holds the real drift and offset values, a command changes the
//!   volume Home Assistant shows, and the entities become unavailable when the
//!   receivers go.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::demo::{until, DemoProcess, Spy};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{json, Value};

const DEVICES: [&str; 3] = ["kitchen", "tv", "cast"];

/// (topic, payload, retain flag) in arrival order.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// Records every message on `topics` (retained ones too), with its retain flag.
struct Watcher {
    seen: Seen,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    async fn start(
        port: u16,
        key: &syncstream_protocol::auth::PairingKey,
        topics: &[&str],
    ) -> Self {
        let mut opts =
            common::mqtt_options(&format!("ha-watch-{}", common::free_port()), port, key);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(opts, 1000);
        for t in topics {
            client.subscribe(*t, QoS::AtLeastOnce).await.unwrap();
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        s2.lock()
                            .unwrap()
                            .push((p.topic.clone(), p.payload.to_vec(), p.retain))
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Watcher { seen, client, task }
    }

    /// The last payload on `topic`, if any.
    fn last(&self, topic: &str) -> Option<Vec<u8>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(t, _, _)| t == topic)
            .map(|(_, p, _)| p.clone())
    }

    fn last_json(&self, topic: &str) -> Option<Value> {
        self.last(topic)
            .and_then(|p| serde_json::from_slice(&p).ok())
    }

    fn count(&self, topic: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .count()
    }

    /// Every JSON payload on `topic`.
    fn all_json(&self, topic: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .filter_map(|(_, p, _)| serde_json::from_slice(p).ok())
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config_topic(component: &str, device: &str, object: &str) -> String {
    format!("homeassistant/{component}/syncstream_{device}/{object}/config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_configs_states_and_commands_over_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.display().to_string();
    let demo = DemoProcess::start(
        dir.path(),
        &["--duration", "120", "--state-dir", &state_arg],
    );
    let w = Watcher::start(
        demo.mqtt,
        &demo.key,
        &[
            "homeassistant/#",
            "syncstream/state/+",
            "syncstream/summary",
        ],
    )
    .await;
    // Every receiver's entities and the transmitter's, retained.
    for d in DEVICES {
        let t = config_topic("sensor", d, "drift");
        let cfg = until(&t, Duration::from_secs(30), || async { w.last_json(&t) }).await;
        assert_eq!(cfg["device"]["identifiers"][0], format!("syncstream_{d}"));
        assert_eq!(cfg["state_topic"], format!("syncstream/state/{d}"));
        assert!(
            cfg["device"]["configuration_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://")),
            "{cfg}"
        );
        for (c, o) in [
            ("number", "volume"),
            ("number", "manual_adjust"),
            ("switch", "mute"),
            ("button", "resync"),
            ("button", "calibrate"),
            ("button", "announce"),
            ("select", "group"),
            ("binary_sensor", "in_sync"),
        ] {
            assert!(w.last_json(&config_topic(c, d, o)).is_some(), "{d} {c} {o}");
        }
    }
    let tx = "homeassistant/sensor/syncstream_transmitter/devices_online/config";
    until(
        "the transmitter's device",
        Duration::from_secs(10),
        || async { w.last_json(tx) },
    )
    .await;
    // The states carry the real figures: a drift and an offset per device.
    for d in DEVICES {
        let t = format!("syncstream/state/{d}");
        let s = until(
            &format!("{d}: drift in {t}"),
            Duration::from_secs(60),
            || async {
                w.last_json(&t)
                    .filter(|s| s["drift_ms"].is_number() && s["offset_ms"].is_number())
            },
        )
        .await;
        assert_eq!(s["name"], d);
    }
    let summary = until("3 devices online", Duration::from_secs(30), || async {
        w.last_json("syncstream/summary")
            .filter(|s| s["devices_online"] == 3)
    })
    .await;
    assert!(summary["groups"]["default"].is_string(), "{summary}");

    // Home Assistant restarts and says so: every config comes again.
    let before = w.count(tx);
    w.client
        .publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
        .await
        .unwrap();
    until(
        "configs published again",
        Duration::from_secs(10),
        || async { (w.count(tx) > before).then_some(()) },
    )
    .await;

    // Commands as Home Assistant renders them from the configs, on their topics.
    let vol = w
        .last_json(&config_topic("number", "tv", "volume"))
        .unwrap();
    let payload = vol["command_template"]
        .as_str()
        .unwrap()
        .replace("{{ value / 100 }}", "0.35");
    w.client
        .publish(
            vol["command_topic"].as_str().unwrap(),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .unwrap();
    until("tv at 35 %", Duration::from_secs(10), || async {
        w.last_json("syncstream/state/tv")
            .filter(|s| (s["volume"].as_f64().unwrap_or(0.0) - 0.35).abs() < 1e-9)
    })
    .await;
    let http = demo.http_client();
    let api: Value = serde_json::from_slice(
        &http
            .get(format!("{}/devices/tv", demo.api()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(api["volume"], 0.35, "the API shows the same state: {api}");
    let mute = w
        .last_json(&config_topic("switch", "kitchen", "mute"))
        .unwrap();
    w.client
        .publish(
            mute["command_topic"].as_str().unwrap(),
            QoS::AtLeastOnce,
            false,
            mute["payload_on"].as_str().unwrap(),
        )
        .await
        .unwrap();
    until("kitchen muted", Duration::from_secs(10), || async {
        w.last_json("syncstream/state/kitchen")
            .filter(|s| s["muted"] == true)
    })
    .await;
    // A new group appears in every device's group select; choosing it moves the device.
    let r = http
        .put(format!("{}/groups/upstairs", demo.api()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let sel = until(
        "the group select lists upstairs",
        Duration::from_secs(10),
        || async {
            w.last_json(&config_topic("select", "cast", "group"))
                .filter(|c| c["options"] == json!(["default", "upstairs"]))
        },
    )
    .await;
    assert!(w
        .last_json("homeassistant/select/syncstream_transmitter/stream_upstairs/config")
        .is_some());
    w.client
        .publish(
            sel["command_topic"].as_str().unwrap(),
            QoS::AtLeastOnce,
            false,
            "upstairs",
        )
        .await
        .unwrap();
    until("cast in upstairs", Duration::from_secs(10), || async {
        w.last_json("syncstream/state/cast")
            .filter(|s| s["group"] == "upstairs")
    })
    .await;
    // An online device cannot be forgotten.
    let r = http
        .delete(format!("{}/devices/cast", demo.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Malformed command payloads change nothing and break nothing.
    for bad in ["", "{", "nope", &"x".repeat(300_000)] {
        w.client
            .publish(
                "syncstream/group_of/tv",
                QoS::AtLeastOnce,
                false,
                bad.to_string(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        w.last_json("syncstream/state/tv").unwrap()["group"],
        "default"
    );
    drop(demo);
}

/// A forgotten device: its retained configs and state are cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_device_has_its_configs_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let demo = DemoProcess::start(dir.path(), &["--duration", "60"]);
    let spy = Spy::start(demo.mqtt, &demo.key).await;
    let w = Watcher::start(demo.mqtt, &demo.key, &["homeassistant/#"]).await;
    // A device that was there once and is offline now (its last will).
    spy.publish(
        "syncstream/status/attic",
        r#"{"device":"attic","state":"offline"}"#,
    )
    .await;
    let t = config_topic("sensor", "attic", "drift");
    until("attic's configs", Duration::from_secs(15), || async {
        w.last_json(&t)
    })
    .await;
    let r = demo
        .http_client()
        .delete(format!("{}/devices/attic", demo.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    until(
        "attic's configs cleared",
        Duration::from_secs(10),
        || async { w.last(&t).filter(|p| p.is_empty()) },
    )
    .await;
    assert!(
        w.last(&config_topic("button", "attic", "resync"))
            .is_some_and(|p| p.is_empty()),
        "every entity of attic is cleared"
    );
    assert!(w
        .last_json(&config_topic("sensor", "tv", "drift"))
        .is_some());
}

// ---- a real Home Assistant -------------------------------------------------------

/// The Home Assistant virtual environment (made by scripts/setup.sh).
fn ha_venv() -> PathBuf {
    std::env::var_os("SYNCSTREAM_HA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/syncstream-ha"))
}

struct Hass(Child);
impl Drop for Hass {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Home Assistant configuration in `dir` whose MQTT integration logs in to the
/// broker on `port` as `user`.
fn seed_config(dir: &Path, port: u16, user: &str, password: &str) {
    std::fs::create_dir_all(dir.join(".storage")).unwrap();
    std::fs::write(
        dir.join("configuration.yaml"),
        "homeassistant:\n  name: SyncStream test\n  latitude: 0\n  longitude: 0\n  \
         elevation: 0\n  unit_system: metric\n  time_zone: UTC\nrecorder:\n  commit_interval: 1\n",
    )
    .unwrap();
    let entries = json!({
        "version": 1, "minor_version": 1, "key": "core.config_entries",
        "data": {"entries": [{
            "entry_id": "syncstreamtestmqttentry00000001",
            "version": 1, "minor_version": 1, "domain": "mqtt", "title": "SyncStream",
            "data": {"broker": "127.0.0.1", "port": port, "username": user, "password": password},
            "options": {"discovery": true, "discovery_prefix": "homeassistant"},
            "pref_disable_new_entities": false, "pref_disable_polling": false,
            "source": "user", "unique_id": null, "disabled_by": null,
        }]}
    });
    std::fs::write(
        dir.join(".storage/core.config_entries"),
        serde_json::to_vec_pretty(&entries).unwrap(),
    )
    .unwrap();
}

/// `(entity_id, state)` rows of the recorder's database, oldest first.
fn recorded_states(venv: &Path, db: &Path) -> Vec<(String, String)> {
    let script = "import json, sqlite3, sys\n\
        db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
        rows = db.execute('select m.entity_id, s.state from states s join states_meta m \
        on s.metadata_id = m.metadata_id order by s.state_id').fetchall()\n\
        print(json.dumps(rows))\n";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .arg(db)
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new(); // not created yet, or locked for a moment
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn registered_entities(config: &Path) -> Vec<String> {
    std::fs::read(config.join(".storage/core.entity_registry"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .map(|v| {
            v["data"]["entities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["entity_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_home_assistant_shows_the_receivers_with_their_real_figures() {
    let venv = ha_venv();
    assert!(
        venv.join("bin/hass").exists(),
        "Home Assistant is not installed in {} (scripts/setup.sh installs it; SYNCSTREAM_HA_VENV moves it)",
        venv.display()
    );
    let dir = tempfile::tempdir().unwrap();
    // mosquitto, so that the receivers' last wills outlive the demo's process.
    let broker = common::Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let demo = DemoProcess::start(dir.path(), &["--duration", "150", "--mqtt", &url]);
    assert_eq!(demo.mqtt, broker.port);
    let w = Watcher::start(demo.mqtt, &demo.key, &["syncstream/state/+"]).await;
    let config = dir.path().join("ha");
    seed_config(
        &config,
        demo.mqtt,
        "homeassistant",
        &demo.key.mqtt_password("homeassistant"),
    );
    let log = std::fs::File::create(dir.path().join("hass.log")).unwrap();
    let _hass = Hass(
        Command::new(venv.join("bin/hass"))
            .arg("-c")
            .arg(&config)
            .arg("--skip-pip")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let db = config.join("home-assistant_v2.db");
    let hass_log = || std::fs::read_to_string(dir.path().join("hass.log")).unwrap_or_default();
    // The entities, in Home Assistant's entity registry.
    let wanted: Vec<String> = DEVICES
        .iter()
        .flat_map(|d| {
            [
                format!("sensor.syncstream_{d}_drift"),
                format!("sensor.syncstream_{d}_offset"),
                format!("sensor.syncstream_{d}_confidence"),
                format!("sensor.syncstream_{d}_signal_strength"),
                format!("sensor.syncstream_{d}_underruns"),
                format!("binary_sensor.syncstream_{d}_in_sync"),
                format!("number.syncstream_{d}_manual_adjust"),
                format!("number.syncstream_{d}_volume"),
                format!("switch.syncstream_{d}_mute"),
                format!("button.syncstream_{d}_resync"),
                format!("button.syncstream_{d}_test_tone"),
                format!("button.syncstream_{d}_calibrate"),
                format!("button.syncstream_{d}_announce"),
                format!("select.syncstream_{d}_group"),
            ]
        })
        .chain([
            "sensor.syncstream_transmitter_devices_online".to_string(),
            "sensor.syncstream_transmitter_worst_spread".to_string(),
            "select.syncstream_transmitter_stream_default".to_string(),
        ])
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let have = registered_entities(&config);
        let missing: Vec<&String> = wanted.iter().filter(|e| !have.contains(e)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not in Home Assistant's entity registry: {missing:?}\nregistered: {have:?}\nlog:\n{}",
            hass_log()
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARNING"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await; // polling a file
    }
    // The recorder holds real figures: drift and offset values that the transmitter
    // published for the device.
    for d in DEVICES {
        let ok = until(
            &format!(
                "{d}'s drift and offset in the recorder (log: {})",
                hass_log().len()
            ),
            Duration::from_secs(60),
            || async {
                let rows = recorded_states(&venv, &db);
                let published = w.all_json(&format!("syncstream/state/{d}"));
                let matches = |entity: &str, key: &str| {
                    rows.iter()
                        .filter(|(e, _)| e == entity)
                        .filter_map(|(_, s)| s.parse::<f64>().ok())
                        .any(|v| {
                            published
                                .iter()
                                .filter_map(|p| p[key].as_f64())
                                .any(|x| (x - v).abs() < 1e-9)
                        })
                };
                (matches(&format!("sensor.syncstream_{d}_drift"), "drift_ms")
                    && matches(&format!("sensor.syncstream_{d}_offset"), "offset_ms"))
                .then_some(())
            },
        )
        .await;
        let _: () = ok;
    }
    let online = |rows: &[(String, String)]| {
        rows.iter()
            .rev()
            .find(|(e, _)| e == "sensor.syncstream_transmitter_devices_online")
            .map(|(_, s)| s.clone())
    };
    until(
        "3 devices online in Home Assistant",
        Duration::from_secs(30),
        || async { (online(&recorded_states(&venv, &db)).as_deref() == Some("3")).then_some(()) },
    )
    .await;
    // A command on the volume entity's topic, as Home Assistant sends it: Home
    // Assistant then shows the new volume, from the transmitter's state.
    let cmd = r#"{"cmd":"volume","value":0.42}"#;
    w.client
        .publish("syncstream/command/kitchen", QoS::AtLeastOnce, false, cmd)
        .await
        .unwrap();
    until(
        "kitchen's volume 42 in Home Assistant",
        Duration::from_secs(30),
        || async {
            recorded_states(&venv, &db)
                .iter()
                .rev()
                .find(|(e, _)| e == "number.syncstream_kitchen_volume")
                .filter(|(_, s)| s.parse::<f64>().ok() == Some(42.0))
                .map(|_| ())
        },
    )
    .await;
    // The receivers die with the demo: mosquitto publishes their last wills, and
    // their entities become unavailable.
    drop(demo);
    until(
        "tv's drift unavailable",
        Duration::from_secs(60),
        || async {
            recorded_states(&venv, &db)
                .iter()
                .rev()
                .find(|(e, _)| e == "sensor.syncstream_tv_drift")
                .filter(|(_, s)| s == "unavailable")
                .map(|_| ())
        },
    )
    .await;
}
