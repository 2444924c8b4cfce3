//! The control API against a running `syncstream demo` (three receivers, virtual
//! room, embedded broker), as a person or a home-automation system uses it: every
//! endpoint's shape and error paths, a change through the API seen on MQTT and a
//! change on MQTT seen through the API, a device moved to a group on another stream
//! that stays in sync (from the demo's report, the room's ground truth), and
//! persistence across a restart. One demo run serves every check (the demo runs in
//! real time), a second one the restart.

mod common;

use std::time::Duration;

use common::demo::{call, until, DemoProcess, Spy};
use serde_json::Value;

/// Every field the API promises for a device, with its JSON type.
const DEVICE_FIELDS: &[(&str, &str)] = &[
    ("name", "string"),
    ("group", "string"),
    ("stream", "string"),
    ("output", "string"),
    ("target", "null"),
    ("online", "bool"),
    ("state", "string"),
    ("offset_ms", "number"),
    ("manual_adjust_ms", "number"),
    ("drift_ms", "number"),
    ("confidence", "number"),
    ("signal_strength_db", "number"),
    ("locked", "bool"),
    ("volume", "number"),
    ("muted", "bool"),
    ("underruns", "number"),
    ("last_seen_us", "number"),
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn device<'a>(devices: &'a Value, name: &str) -> &'a Value {
    devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {devices}"))
}

fn group<'a>(groups: &'a Value, name: &str) -> Option<&'a Value> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_mqtt_are_two_doors_to_one_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let report = dir.path().join("report.json");
    let radio = format!(
        "file://{}?name=radio",
        common::clip("elvish-theme-44k1.flac").display()
    );
    let state_arg = state.display().to_string();
    let report_arg = report.display().to_string();
    let mut demo = DemoProcess::start(
        dir.path(),
        &[
            "--state-dir",
            &state_arg,
            "--report",
            &report_arg,
            "--duration",
            "120",
            "--stream",
            &radio,
            "--seed",
            "4",
        ],
    );
    let api = demo.api();
    let http = demo.http_client();
    let spy = Spy::start(demo.mqtt, &demo.key).await;

    // ---- shapes -------------------------------------------------------------------
    let devices = until("three locked devices", Duration::from_secs(40), || async {
        let (s, v) = call(&http, "GET", &format!("{api}/devices"), None).await;
        let all = v["devices"].as_array()?;
        (s == 200
            && all.len() == 3
            && all
                .iter()
                .all(|d| d["locked"] == true && d["online"] == true && d["drift_ms"].is_number()))
        .then_some(v)
    })
    .await;
    for d in devices["devices"].as_array().unwrap() {
        for (field, want) in DEVICE_FIELDS {
            assert_eq!(kind(&d[*field]), *want, "{field} of {d}");
        }
        assert_eq!(
            (d["group"].as_str(), d["stream"].as_str()),
            (Some("default"), Some("default"))
        );
    }
    let (s, tv) = call(&http, "GET", &format!("{api}/devices/tv"), None).await;
    assert_eq!(
        (s, tv["name"].as_str(), tv["output"].as_str()),
        (200, Some("tv"), Some("hdmi"))
    );
    let (s, groups) = call(&http, "GET", &format!("{api}/groups"), None).await;
    assert_eq!(s, 200);
    let g = group(&groups, "default").unwrap();
    assert_eq!(
        g["devices"],
        serde_json::json!(["cast", "kitchen", "tv"]),
        "{groups}"
    );
    assert_eq!(
        (
            g["stream"].as_str(),
            g["volume"].as_f64(),
            g["muted"].as_bool()
        ),
        (Some("default"), Some(1.0), Some(false))
    );
    let (s, streams) = call(&http, "GET", &format!("{api}/streams"), None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "radio"], "{streams}");
    let (s, sync) = call(&http, "GET", &format!("{api}/sync"), None).await;
    assert_eq!(s, 200);
    for d in ["kitchen", "tv", "cast"] {
        let m = &sync["devices"][d]["residual_ms"]["last_minute"];
        assert!(
            m["n"].as_u64().unwrap() >= 1 && m["p95"].is_number(),
            "{sync}"
        );
        assert!(
            sync["devices"][d]["drift_ms"]["last_hour"]["max"].is_number(),
            "{sync}"
        );
    }
    assert!(
        sync["groups"]["default"]["spread_ms"]["last_minute"].is_object(),
        "{sync}"
    );
    let (s, cal) = call(&http, "GET", &format!("{api}/calibrate"), None).await;
    assert_eq!((s, cal["running"].as_bool()), (200, Some(false)));

    // ---- the WebSocket: a snapshot, then events for every device each second ------
    {
        use futures::StreamExt;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://127.0.0.1:{}/api/v1/ws?token={}",
            demo.http,
            demo.key.api_token()
        ))
        .await
        .unwrap();
        let first: Value = match ws.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(first["type"], "snapshot");
        assert_eq!(first["devices"].as_array().unwrap().len(), 3);
        assert!(!first["history"]["tv"].as_array().unwrap().is_empty());
        let mut device_events = std::collections::BTreeSet::new();
        let mut drift = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        while !(device_events.len() == 3 && drift) {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("events within 6 s");
            if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("device") => {
                        device_events.insert(v["device"]["name"].as_str().unwrap().to_string());
                    }
                    Some("drift") => drift = v["drift_ms"].is_number() || v["drift_ms"].is_null(),
                    _ => {}
                }
            }
        }
    }

    // ---- every error path, and none changes anything ------------------------------
    let before = (
        call(&http, "GET", &format!("{api}/groups"), None).await.1,
        call(&http, "GET", &format!("{api}/streams"), None).await.1,
    );
    for (method, path, body, status, needle) in [
        ("GET", "/devices/ghost", None, 404, "ghost"),
        (
            "PUT",
            "/devices/ghost/volume",
            Some(r#"{"volume":0.5}"#),
            404,
            "ghost",
        ),
        (
            "PUT",
            "/devices/ghost/adjust",
            Some(r#"{"manual_adjust_ms":1}"#),
            404,
            "ghost",
        ),
        (
            "PUT",
            "/devices/ghost/mute",
            Some(r#"{"muted":true}"#),
            404,
            "ghost",
        ),
        ("POST", "/devices/ghost/resync", None, 404, "ghost"),
        ("POST", "/devices/ghost/test_tone", None, 404, "ghost"),
        (
            "PUT",
            "/devices/tv/volume",
            Some(r#"{"volume":"loud"}"#),
            400,
            "volume",
        ),
        (
            "PUT",
            "/devices/tv/volume",
            Some(r#"{"volume":1.5}"#),
            422,
            "volume",
        ),
        (
            "PUT",
            "/devices/tv/volume",
            Some(r#"{"volume":0.5,"bass":1}"#),
            400,
            "bass",
        ),
        ("PUT", "/devices/tv/volume", Some("not json"), 400, "body"),
        ("PUT", "/devices/tv/volume", Some("{}"), 400, "volume"),
        (
            "PUT",
            "/devices/tv/adjust",
            Some(r#"{"manual_adjust_ms":1e9}"#),
            422,
            "manual_adjust_ms",
        ),
        (
            "PUT",
            "/devices/tv/adjust",
            Some(r#"{"manual_adjust_ms":null}"#),
            400,
            "manual_adjust_ms",
        ),
        (
            "PUT",
            "/devices/tv/mute",
            Some(r#"{"muted":"yes"}"#),
            400,
            "muted",
        ),
        (
            "POST",
            "/devices/tv/test_tone",
            Some(r#"{"signal":"chirp"}"#),
            422,
            "signal",
        ),
        (
            "POST",
            "/devices/tv/test_tone",
            Some(r#"{"signal":7}"#),
            400,
            "signal",
        ),
        (
            "PUT",
            "/groups/up",
            Some(r#"{"stream":"nope"}"#),
            422,
            "stream",
        ),
        (
            "PUT",
            "/groups/up",
            Some(r#"{"devices":["tv","ghost"]}"#),
            422,
            "devices[1]",
        ),
        (
            "PUT",
            "/groups/up",
            Some(r#"{"volume":-0.1}"#),
            422,
            "volume",
        ),
        (
            "PUT",
            "/groups/up",
            Some(r#"{"colour":"red"}"#),
            400,
            "colour",
        ),
        ("PUT", "/groups/up%20stairs", Some("{}"), 422, "group name"),
        (
            "PUT",
            "/groups/default",
            Some(r#"{"rename":"home"}"#),
            409,
            "rename",
        ),
        ("DELETE", "/groups/default", None, 409, "default"),
        ("DELETE", "/groups/nope", None, 404, "nope"),
        (
            "PUT",
            "/streams/default",
            Some(r#"{"uri":"tone"}"#),
            409,
            "default",
        ),
        (
            "PUT",
            "/streams/x",
            Some(r#"{"uri":"process:///bin/true?name=x"}"#),
            422,
            "process",
        ),
        (
            "PUT",
            "/streams/x",
            Some(r#"{"uri":"ftp:///a?name=x"}"#),
            422,
            "ftp",
        ),
        (
            "PUT",
            "/streams/x",
            Some(r#"{"uri":"file:///no/such.flac?name=x"}"#),
            422,
            "/no/such.flac",
        ),
        ("PUT", "/streams/x", Some(r#"{"url":"tone"}"#), 400, "url"),
        (
            "PUT",
            "/streams/a%20b",
            Some(r#"{"uri":"tone"}"#),
            422,
            "stream name",
        ),
        ("DELETE", "/streams/radio", None, 409, "command line"),
        ("DELETE", "/streams/default", None, 409, "played by default"),
        ("DELETE", "/streams/nope", None, 404, "nope"),
        (
            "POST",
            "/calibrate",
            Some(r#"{"devices":["ghost"]}"#),
            422,
            "devices[0]",
        ),
        (
            "POST",
            "/calibrate",
            Some(r#"{"devices":[]}"#),
            422,
            "devices",
        ),
        (
            "POST",
            "/calibrate",
            Some(r#"{"simultaneous":true,"signal":"sweep"}"#),
            422,
            "signal",
        ),
        ("GET", "/nowhere", None, 404, "no such route"),
    ] {
        let (s, v) = call(&http, method, &format!("{api}{path}"), body).await;
        let e = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: not a JSON error: {v}"));
        assert_eq!(s, status, "{method} {path} {body:?}: {e}");
        assert!(
            e.contains(needle),
            "{method} {path} {body:?}: '{e}' does not name {needle}"
        );
    }
    let after = (
        call(&http, "GET", &format!("{api}/groups"), None).await.1,
        call(&http, "GET", &format!("{api}/streams"), None).await.1,
    );
    assert_eq!(before, after, "refused requests changed the state");
    let tv = call(&http, "GET", &format!("{api}/devices/tv"), None)
        .await
        .1;
    assert_eq!(
        (tv["volume"].as_f64(), tv["manual_adjust_ms"].as_f64()),
        (Some(1.0), Some(0.0))
    );

    // ---- API → MQTT -----------------------------------------------------------------
    // (A resync first: the controller re-acquires the device, well before the move.)
    let (s, _) = call(&http, "POST", &format!("{api}/devices/cast/resync"), None).await;
    assert_eq!(s, 200);
    until(
        "the resync command on MQTT",
        Duration::from_secs(2),
        || async {
            spy.all("syncstream/command/cast")
                .iter()
                .any(|c| c["cmd"] == "resync")
                .then_some(())
        },
    )
    .await;

    let (s, cast) = call(
        &http,
        "PUT",
        &format!("{api}/devices/cast/volume"),
        Some(r#"{"volume":0.4}"#),
    )
    .await;
    assert_eq!((s, cast["volume"].as_f64()), (200, Some(0.4)));
    until(
        "the volume on MQTT and in the receiver's status",
        Duration::from_secs(8),
        || async {
            let set = spy.last("syncstream/settings/cast")?;
            let st = spy.last("syncstream/status/cast")?;
            (set["volume"] == 0.4 && st["volume"] == 0.4).then_some(())
        },
    )
    .await;
    let (s, k) = call(
        &http,
        "PUT",
        &format!("{api}/devices/kitchen/mute"),
        Some(r#"{"muted":true}"#),
    )
    .await;
    assert_eq!((s, k["muted"].as_bool()), (200, Some(true)));
    until("kitchen muted on MQTT", Duration::from_secs(8), || async {
        (spy.last("syncstream/settings/kitchen")?["muted"] == true
            && spy.last("syncstream/status/kitchen")?["muted"] == true)
            .then_some(())
    })
    .await;
    // A manual trim: the controller publishes the offset moved by it, at once.
    let offset_tv = spy.last("syncstream/buffer_offset/tv").unwrap()["offset_ms"]
        .as_f64()
        .unwrap();
    let (s, tv2) = call(
        &http,
        "PUT",
        &format!("{api}/devices/tv/adjust"),
        Some(r#"{"manual_adjust_ms":1.5}"#),
    )
    .await;
    assert_eq!((s, tv2["manual_adjust_ms"].as_f64()), (200, Some(1.5)));
    until(
        "tv's trimmed offset on MQTT",
        Duration::from_secs(2),
        || async {
            let o = spy.last("syncstream/buffer_offset/tv")?["offset_ms"].as_f64()?;
            ((o - (offset_tv - 1.5)).abs() < 0.2).then_some(())
        },
    )
    .await;
    // Two reports later the controller has not fought it.
    let n = spy.all("syncstream/drift/tv").len();
    until(
        "two more reports from tv",
        Duration::from_secs(10),
        || async { (spy.all("syncstream/drift/tv").len() >= n + 2).then_some(()) },
    )
    .await;
    let o = spy.last("syncstream/buffer_offset/tv").unwrap()["offset_ms"]
        .as_f64()
        .unwrap();
    assert!(
        (o - (offset_tv - 1.5)).abs() < 0.2,
        "the controller fought the trim: {o}"
    );
    call(
        &http,
        "PUT",
        &format!("{api}/devices/tv/adjust"),
        Some(r#"{"manual_adjust_ms":0}"#),
    )
    .await;
    until("tv's offset back", Duration::from_secs(2), || async {
        let o = spy.last("syncstream/buffer_offset/tv")?["offset_ms"].as_f64()?;
        ((o - offset_tv).abs() < 0.2).then_some(())
    })
    .await;
    // The playout slews the 1.5 ms back (at most 0.1 %): wait until tv measures itself
    // back in place before the move.
    let n = spy.all("syncstream/drift/tv").len();
    until("tv back in place", Duration::from_secs(15), || async {
        let r = spy.all("syncstream/drift/tv");
        r[n..]
            .iter()
            .any(|x| {
                x["confidence"].as_f64().unwrap_or(0.0) >= 0.6
                    && x["drift_ms"].as_f64().is_some_and(|d| d.abs() < 0.1)
            })
            .then_some(())
    })
    .await;
    // ---- MQTT → API -----------------------------------------------------------------
    spy.publish("syncstream/command/kitchen", r#"{"cmd":"unmute"}"#)
        .await;
    spy.publish("syncstream/command/cast", r#"{"cmd":"volume","value":0.7}"#)
        .await;
    until(
        "MQTT commands seen by the API",
        Duration::from_secs(3),
        || async {
            let v = call(&http, "GET", &format!("{api}/devices"), None).await.1;
            (device(&v, "kitchen")["muted"] == false && device(&v, "cast")["volume"] == 0.7)
                .then_some(())
        },
    )
    .await;
    // The group move, through MQTT: kitchen to a new group playing the radio stream.
    let moved_at_s = demo.elapsed_s();
    spy.publish(
        "syncstream/group/upstairs",
        r#"{"stream":"radio","devices":["kitchen"]}"#,
    )
    .await;
    until(
        "the move seen by the API and done by the receiver within 2 s",
        Duration::from_secs(2),
        || async {
            let g = call(&http, "GET", &format!("{api}/groups"), None).await.1;
            let up = group(&g, "upstairs")?;
            let st = spy.last("syncstream/status/kitchen")?;
            (up["devices"] == serde_json::json!(["kitchen"])
                && up["stream"] == "radio"
                && st["stream"] == "radio")
                .then_some(())
        },
    )
    .await;
    // API → MQTT again: the group's volume reaches its member's settings.
    let (s, up) = call(
        &http,
        "PUT",
        &format!("{api}/groups/upstairs"),
        Some(r#"{"volume":0.5}"#),
    )
    .await;
    assert_eq!((s, up["volume"].as_f64()), (200, Some(0.5)), "{up}");
    until("group volume on MQTT", Duration::from_secs(3), || async {
        let gs = spy.last("syncstream/groups")?;
        let set = spy.last("syncstream/settings/kitchen")?;
        (group(&gs, "upstairs")?["volume"] == 0.5
            && set["group_volume"] == 0.5
            && set["group"] == "upstairs")
            .then_some(())
    })
    .await;
    // The moved device keeps measuring itself in sync on its new stream.
    let before = spy.all("syncstream/drift/kitchen").len();
    let good = until(
        "five confident reports from kitchen on the radio stream",
        Duration::from_secs(30),
        || async {
            let r = spy.all("syncstream/drift/kitchen");
            let good: Vec<f64> = r[before..]
                .iter()
                .filter(|x| x["confidence"].as_f64().unwrap_or(0.0) >= 0.6)
                .filter_map(|x| x["drift_ms"].as_f64())
                .collect();
            (good.len() >= 5).then_some(good)
        },
    )
    .await;
    assert!(
        good.iter().all(|d| d.abs() < 0.5),
        "kitchen's drift on the new stream: {good:?}"
    );
    // Streams added and removed at runtime through the API (the one left persists)
    for (method, path, body) in [
        (
            "PUT",
            "/streams/beep",
            Some(r#"{"uri":"tone:///?freq=300"}"#),
        ),
        ("PUT", "/streams/gone", Some(r#"{"uri":"tone"}"#)),
        ("DELETE", "/streams/gone", None),
    ] {
        let (s, v) = call(&http, method, &format!("{api}{path}"), body).await;
        assert_eq!(s, 200, "{method} {path}: {v}");
    }
    // ... and through MQTT.
    let names_now = |v: &Value| -> Vec<String> {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    spy.publish(
        "syncstream/stream/mqtt-tone",
        r#"{"uri":"tone:///?freq=500"}"#,
    )
    .await;
    until(
        "a stream added on MQTT in the API",
        Duration::from_secs(3),
        || async {
            names_now(&call(&http, "GET", &format!("{api}/streams"), None).await.1)
                .contains(&"mqtt-tone".to_string())
                .then_some(())
        },
    )
    .await;
    spy.publish("syncstream/stream/mqtt-tone", r#"{"delete":true}"#)
        .await;
    until(
        "a stream removed on MQTT gone from the API",
        Duration::from_secs(3),
        || async {
            (!names_now(&call(&http, "GET", &format!("{api}/streams"), None).await.1)
                .contains(&"mqtt-tone".to_string()))
            .then_some(())
        },
    )
    .await;
    let (_, streams) = call(&http, "GET", &format!("{api}/streams"), None).await;
    let names: Vec<&str> = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beep", "default", "radio"], "{streams}");
    until("the streams on MQTT", Duration::from_secs(3), || async {
        let s = spy.last("syncstream/streams")?;
        (s["streams"].as_array()?.len() == 3).then_some(())
    })
    .await;
    // A trim to persist, then stop the demo: its report is the room's ground truth.
    call(
        &http,
        "PUT",
        &format!("{api}/devices/cast/adjust"),
        Some(r#"{"manual_adjust_ms":0.3}"#),
    )
    .await;
    demo.interrupt();
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let per_s = r["pairwise_max_per_s"].as_array().unwrap();
    let from = moved_at_s.floor() as usize + 1;
    let after_move: Vec<f64> = per_s[from..per_s.len().saturating_sub(2)]
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        after_move.len() >= 10,
        "{} s after the move:\n{}",
        after_move.len(),
        demo.output()
    );
    let worst = after_move.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "after the move: {} s, pairwise error per second at most {worst:.4} ms; kitchen's drift on the new stream {good:?}",
        after_move.len()
    );
    assert!(
        worst < 0.5,
        "after moving kitchen to another stream the devices were {worst} ms apart: {after_move:?}"
    );
    for d in r["devices"].as_array().unwrap() {
        assert_eq!(d["underruns"], 0, "{d}");
    }

    // ---- persistence across a restart -----------------------------------------------
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["membership"]["kitchen"], "upstairs", "{saved}");
    let demo2 = DemoProcess::start(
        dir.path(),
        &[
            "--state-dir",
            &state_arg,
            "--duration",
            "60",
            "--stream",
            &radio,
        ],
    );
    let api2 = demo2.api();
    let spy2 = Spy::start(demo2.mqtt, &demo2.key).await;
    until(
        "the state back after the restart",
        Duration::from_secs(30),
        || async {
            let g = call(&http, "GET", &format!("{api2}/groups"), None).await.1;
            let up = group(&g, "upstairs")?;
            let v = call(&http, "GET", &format!("{api2}/devices"), None).await.1;
            let cast = device(&v, "cast");
            let kitchen = device(&v, "kitchen");
            (up["stream"] == "radio"
                && up["volume"] == 0.5
                && up["devices"] == serde_json::json!(["kitchen"])
                && cast["volume"] == 0.7
                && cast["manual_adjust_ms"] == 0.3
                && kitchen["muted"] == false
                && kitchen["stream"] == "radio")
                .then_some(())
        },
    )
    .await;
    let (_, streams) = call(&http, "GET", &format!("{api2}/streams"), None).await;
    let beep = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "beep");
    assert_eq!(
        beep.map(|b| b["added_at_runtime"].clone()),
        Some(Value::Bool(true)),
        "{streams}"
    );
    until(
        "kitchen plays the radio stream again",
        Duration::from_secs(20),
        || async { (spy2.last("syncstream/status/kitchen")?["stream"] == "radio").then_some(()) },
    )
    .await;
    drop(demo2);
}
