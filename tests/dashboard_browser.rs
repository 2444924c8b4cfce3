//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, over WebDriver with fantoccini), against a running
//! `syncstream demo`, used as a person would: three device cards with live drift
//! values; turning one device's offset knob moves its offset on MQTT; muting one
//! mutes it on MQTT; creating a group and moving a device into it moves it in the
//! API; calibrating from the page shows each device's progress, latency and impulse
//! response. It fits a phone's width, reconnects by itself when the transmitter
//! restarts, and the screenshot in `docs/dashboard.png` (shown by the README) is taken
//! here.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::demo::{call, until, DemoProcess, Spy};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

struct Driver(Child);
impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port, and a session of headless Chromium (as root it needs
/// --no-sandbox; a fresh profile; nothing reaching out to the internet).
async fn browser(profile: &std::path::Path) -> (Driver, Client) {
    let port = common::free_port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium-driver)"),
    );
    assert!(
        common::wait_for_port(port, Duration::from_secs(20)),
        "chromedriver did not start"
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1700",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = DemoProcess::start(dir.path(), &["--duration", "120", "--seed", "6"]);
    let api = demo.api();
    let http = demo.http_client();
    let spy = Spy::start(demo.mqtt, &demo.key).await;
    let (_driver, c) = browser(&dir.path().join("profile")).await;
    c.goto(&format!(
        "http://127.0.0.1:{}/#token={}",
        demo.http,
        demo.key.api_token()
    ))
    .await
    .unwrap();

    // Three cards, each with a live drift value (a number of ms, from the WebSocket):
    // once the devices are in sync, within 1 ms.
    until(
        "three cards with drift values within 1 ms",
        Duration::from_secs(40),
        || async {
            let cards = c.find_all(Locator::Css(".card[data-device]")).await.ok()?;
            if cards.len() != 3 {
                return None;
            }
            for card in &cards {
                let drift = card
                    .find(Locator::Css(".drift"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let v = drift
                    .trim_end_matches(" ms")
                    .trim_start_matches('+')
                    .parse::<f64>()
                    .ok()?;
                if v.abs() >= 1.0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert_eq!(text(&c, "#link").await.as_deref(), Some("live"));
    let before = until("tv's offset on MQTT", Duration::from_secs(20), || async {
        spy.last("syncstream/buffer_offset/tv")?["offset_ms"].as_f64()
    })
    .await;

    // Turn tv's offset knob: five fine steps with the keyboard, one coarse step.
    let knob = c
        .find(Locator::Css(".card[data-device='tv'] input.adjust"))
        .await
        .unwrap();
    knob.click().await.unwrap();
    let right: String = std::iter::repeat_n(char::from(Key::Right), 5).collect();
    knob.send_keys(&right).await.unwrap();
    c.find(Locator::Css(".card[data-device='tv'] .adj-plus-coarse"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let trimmed = || {
        spy.last("syncstream/buffer_offset/tv")
            .and_then(|v| v["offset_ms"].as_f64())
            .is_some_and(|o| (o - (before - 1.5)).abs() < 0.05)
    };
    if tokio::time::timeout(Duration::from_secs(5), async {
        while !trimmed() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_err()
    {
        panic!(
            "tv's offset on MQTT: before {before}, now {:?}; API: {}; card: {:?}",
            spy.all("syncstream/buffer_offset/tv")
                .iter()
                .map(|v| v["offset_ms"].clone())
                .collect::<Vec<_>>(),
            call(&http, "GET", &format!("{api}/devices/tv"), None)
                .await
                .1,
            text(&c, ".card[data-device='tv'] .adjust-value").await
        );
    }
    until(
        "the card shows the trim",
        Duration::from_secs(5),
        || async {
            (text(&c, ".card[data-device='tv'] .adjust-value").await? == "+1.5 ms").then_some(())
        },
    )
    .await;

    // Mute kitchen.
    let kitchen_offset = spy.last("syncstream/buffer_offset/kitchen").unwrap()["offset_ms"]
        .as_f64()
        .unwrap();
    c.find(Locator::Css(".card[data-device='kitchen'] button.mute"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        "kitchen muted on MQTT and on its card",
        Duration::from_secs(5),
        || async {
            let muted = spy.last("syncstream/settings/kitchen")?["muted"] == true;
            let label = text(&c, ".card[data-device='kitchen'] button.mute").await?;
            (muted && label == "Unmute").then_some(())
        },
    )
    .await;
    let kitchen_reports = spy.all("syncstream/drift/kitchen").len();

    // A new group on the tone stream, and cast moved into it.
    let form_name = c
        .find(Locator::Css("#new-group input[name='name']"))
        .await
        .unwrap();
    form_name.send_keys("patio").await.unwrap();
    c.find(Locator::Css("#new-group select"))
        .await
        .unwrap()
        .select_by_value("tone")
        .await
        .unwrap();
    c.find(Locator::Css("#new-group button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        "the new group on the page",
        Duration::from_secs(5),
        || async {
            c.find(Locator::Css(".group[data-group='patio']"))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    until(
        "patio in cast's group list",
        Duration::from_secs(5),
        || async {
            c.find(Locator::Css(
                ".card[data-device='cast'] .group-select option[value='patio']",
            ))
            .await
            .ok()
            .map(|_| ())
        },
    )
    .await;
    c.find(Locator::Css(".card[data-device='cast'] .group-select"))
        .await
        .unwrap()
        .select_by_value("patio")
        .await
        .unwrap();
    until(
        "cast in patio, on the tone stream",
        Duration::from_secs(5),
        || async {
            let (_, g): (u16, Value) = call(&http, "GET", &format!("{api}/groups"), None).await;
            let patio = g["groups"]
                .as_array()?
                .iter()
                .find(|g| g["name"] == "patio")?
                .clone();
            let shown = text(&c, ".card[data-device='cast'] .stream").await?;
            (patio["devices"] == json!(["cast"]) && patio["stream"] == "tone" && shown == "tone")
                .then_some(())
        },
    )
    .await;
    until(
        "cast's receiver on the tone stream",
        Duration::from_secs(5),
        || async { (spy.last("syncstream/status/cast")?["stream"] == "tone").then_some(()) },
    )
    .await;

    // The picture for the README, once the heatmap has a few columns per device.
    until(
        "reports for the heatmap",
        Duration::from_secs(30),
        || async {
            let (_, v) = call(&http, "GET", &format!("{api}/sync"), None).await;
            ["kitchen", "tv", "cast"]
                .iter()
                .all(|d| v["devices"][d]["reports"].as_u64().unwrap_or(0) >= 8 || *d == "kitchen")
                .then_some(())
        },
    )
    .await;
    // A muted device does not measure (its microphone hears only the others) and
    // keeps its offset.
    assert!(
        spy.all("syncstream/drift/kitchen").len() <= kitchen_reports + 1,
        "kitchen measured while muted"
    );
    let o = spy.last("syncstream/buffer_offset/kitchen").unwrap()["offset_ms"]
        .as_f64()
        .unwrap();
    assert!(
        (o - kitchen_offset).abs() < 0.1,
        "muted kitchen's offset moved: {kitchen_offset} → {o}"
    );
    // Unmute kitchen, and calibrate every device at once from the dashboard: progress,
    // then each measured latency (the room's hidden truth: kitchen 31.5 ms, tv 112 ms,
    // cast 262.5 ms) with its impulse response plotted.
    c.find(Locator::Css(".card[data-device='kitchen'] button.mute"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        "kitchen unmuted on MQTT",
        Duration::from_secs(5),
        || async { (spy.last("syncstream/settings/kitchen")?["muted"] == false).then_some(()) },
    )
    .await;
    c.find(Locator::Css("#cal-simultaneous"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("#cal-start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        "calibration progress on the page",
        Duration::from_secs(5),
        || async {
            let st = text(&c, ".cal-dev[data-cal-device='tv'] .st").await?;
            ["pending", "measuring", "done"]
                .contains(&st.as_str())
                .then_some(())
        },
    )
    .await;
    for (device, truth) in [("kitchen", 31.5), ("tv", 112.0), ("cast", 262.5)] {
        let shown = until(
            &format!("{device}'s calibration result"),
            Duration::from_secs(60),
            || async {
                let box_css = format!(".cal-dev[data-cal-device='{device}']");
                let st = text(&c, &format!("{box_css} .st")).await?;
                assert_ne!(
                    st,
                    "failed",
                    "{device}: calibration failed: {:?}",
                    text(&c, &box_css).await
                );
                if st != "done" {
                    return None;
                }
                c.find(Locator::Css(&format!("{box_css} .uplot")))
                    .await
                    .ok()?;
                text(&c, &box_css).await
            },
        )
        .await;
        let ms: f64 = shown
            .split("latency ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{device}: no latency in {shown:?}"));
        assert!(
            (ms - truth).abs() < 1.0,
            "{device}: calibrated {ms} ms, truly {truth} ms"
        );
    }
    let png = c.screenshot().await.unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    syncstream_shared::fsutil::write_atomic(&docs, &png).unwrap();

    // A phone's width: nothing sticks out sideways.
    c.set_window_size(390, 844).await.unwrap();
    until("the page to fit 390 px", Duration::from_secs(5), || async {
        let v = c
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .ok()?;
        let (sw, iw) = (v[0].as_f64()?, v[1].as_f64()?);
        (sw <= iw + 1.0).then_some(())
    })
    .await;

    // The transmitter dies and comes back on the same port: the page reconnects by
    // itself and shows the devices again.
    let port = demo.http;
    demo.kill();
    until("the page to notice", Duration::from_secs(10), || async {
        (text(&c, "#link").await? != "live").then_some(())
    })
    .await;
    let _again = DemoProcess::start_on(dir.path(), port, &["--duration", "60"]);
    until(
        "the page live again with three cards",
        Duration::from_secs(30),
        || async {
            let live = text(&c, "#link").await? == "live";
            let cards = c.find_all(Locator::Css(".card[data-device]")).await.ok()?;
            (live && cards.len() == 3).then_some(())
        },
    )
    .await;
    c.close().await.unwrap();
}
