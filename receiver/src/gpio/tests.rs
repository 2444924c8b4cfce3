//! The LED patterns, the press decoder and the driver, without hardware: times are
//! passed in (µs); the driver runs on a simulated backend and a manual clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use syncstream_shared::profile::{DeviceProfile, OutputType};

use super::*;
use crate::drift::DriftConfig;
use crate::node::{Job, NodeConfig, PersistedState, WindowRequest};
use syncstream_protocol::wire::Frame;

const MS: u64 = 1000;

#[test]
fn patterns_follow_the_table() {
    for t in [0, 333 * MS, 999 * MS, 86_400_000 * MS] {
        assert!(led_on(LedState::InSync, t), "in sync is steady on at {t}");
    }
    let starting = [
        (0, true),
        (99, true),
        (100, false),
        (199, false),
        (200, true),
    ];
    let acquiring = [
        (0, true),
        (499, true),
        (500, false),
        (999, false),
        (1000, true),
    ];
    let offline = [(50, true), (100, false), (1999, false), (2050, true)];
    let error = [
        (50, true),
        (150, false),
        (350, true),
        (450, false),
        (999, false),
        (1050, true),
    ];
    for (state, table) in [
        (LedState::Starting, &starting[..]),
        (LedState::Acquiring, &acquiring[..]),
        (LedState::Offline, &offline[..]),
        (LedState::Error, &error[..]),
    ] {
        for &(ms, on) in table {
            assert_eq!(led_on(state, ms * MS), on, "{state:?} at {ms} ms");
        }
    }
}

fn test_node() -> (
    ReceiverNode,
    crate::realtime::Renderer,
    crate::realtime::Capturer,
) {
    let profile = DeviceProfile::default_for(OutputType::Hdmi);
    let (r, c, control) = crate::realtime::engine(profile.base_latency_ms, 48_000);
    let node = ReceiverNode::new(
        NodeConfig {
            device: "kitchen".into(),
            instance: 1,
            profile,
            drift: DriftConfig::default(),
            mic_rate_hz: 48_000,
            persisted: None,
            key: syncstream_protocol::auth::PairingKey::parse(&"7e".repeat(32)).unwrap(),
        },
        control,
        0,
    )
    .unwrap();
    (node, r, c)
}

#[test]
fn led_state_follows_the_node() {
    let (node, _r, _c) = test_node();
    let mut s = node.snapshot();
    assert_eq!(s.state, "connecting");
    assert_eq!(LedState::from_snapshot(&s), LedState::Starting);
    s.state = "playing".into();
    s.connected = true;
    assert_eq!(LedState::from_snapshot(&s), LedState::Acquiring);
    s.last_report = Some(syncstream_protocol::messages::DriftReport {
        reason: Some("no usable signal".into()),
        ..Default::default()
    });
    assert_eq!(LedState::from_snapshot(&s), LedState::Acquiring);
    s.last_report = Some(syncstream_protocol::messages::DriftReport {
        drift_ms: Some(0.5),
        confidence: 0.9,
        ..Default::default()
    });
    assert_eq!(LedState::from_snapshot(&s), LedState::InSync);
    s.state = "muted".into();
    assert_eq!(LedState::from_snapshot(&s), LedState::InSync);
    s.connected = false;
    assert_eq!(LedState::from_snapshot(&s), LedState::Offline);
    s.state = "starved".into();
    assert_eq!(LedState::from_snapshot(&s), LedState::Offline);
    s.connected = true;
    assert_eq!(LedState::from_snapshot(&s), LedState::Acquiring);
    s.state = "error".into();
    assert_eq!(LedState::from_snapshot(&s), LedState::Error);
    s.state = "stopped".into();
    assert_eq!(LedState::from_snapshot(&s), LedState::Offline);
}

/// Feeds (level, from ms) steps sampled every 5 ms up to `end_ms`; returns the presses
/// and when (ms) each came out.
fn run(steps: &[(bool, u64)], end_ms: u64) -> Vec<(Press, u64)> {
    let mut d = PressDecoder::new(PressTiming::default());
    let mut out = Vec::new();
    let mut t = 0;
    while t <= end_ms {
        let level = steps
            .iter()
            .rev()
            .find(|&&(_, from)| from <= t)
            .is_some_and(|&(l, _)| l);
        if let Some(p) = d.update(level, t * MS) {
            out.push((p, t));
        }
        t += 5;
    }
    out
}

#[test]
fn short_press_comes_out_after_the_double_press_gap() {
    let out = run(&[(true, 100), (false, 250)], 2000);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Press::Short);
    // Released at 250 ms: reported once 400 ms passed without a second press.
    assert!((650..=700).contains(&out[0].1), "{out:?}");
}

#[test]
fn long_press_comes_out_while_held_and_release_adds_nothing() {
    let out = run(&[(true, 100), (false, 3000)], 4000);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Press::Long);
    assert!((1100..=1150).contains(&out[0].1), "{out:?}");
}

#[test]
fn two_quick_presses_are_one_double_press() {
    let out = run(
        &[(true, 100), (false, 200), (true, 400), (false, 500)],
        2000,
    );
    assert_eq!(out.iter().map(|p| p.0).collect::<Vec<_>>(), [Press::Double]);
}

#[test]
fn a_second_press_at_the_end_of_the_gap_is_still_a_double_press() {
    // Released at 200 ms, pressed again at 590 ms (390 ms later, within the 400 ms
    // gap): the gap ends while that press is being debounced.
    let out = run(
        &[(true, 100), (false, 200), (true, 590), (false, 700)],
        2000,
    );
    assert_eq!(out.iter().map(|p| p.0).collect::<Vec<_>>(), [Press::Double]);
}

#[test]
fn presses_further_apart_than_the_gap_are_two_short_presses() {
    let out = run(
        &[(true, 100), (false, 200), (true, 900), (false, 1000)],
        2500,
    );
    assert_eq!(
        out.iter().map(|p| p.0).collect::<Vec<_>>(),
        [Press::Short, Press::Short]
    );
}

#[test]
fn contact_bounce_is_not_a_press() {
    // Spikes shorter than the 30 ms debounce: nothing.
    let spikes: Vec<(bool, u64)> = (0..20)
        .flat_map(|i| [(true, 100 + i * 50), (false, 110 + i * 50)])
        .collect();
    assert_eq!(run(&spikes, 3000), []);
    // A press that bounces on the way down and up is still one short press.
    let bouncy = [
        (true, 100),
        (false, 105),
        (true, 110),
        (false, 300),
        (true, 305),
        (false, 315),
    ];
    let out = run(&bouncy, 2000);
    assert_eq!(out.iter().map(|p| p.0).collect::<Vec<_>>(), [Press::Short]);
}

#[test]
fn pins_are_checked() {
    let ok = GpioConfig {
        led_pin: Some(17),
        button_pin: Some(27),
        led_active_low: false,
    };
    assert_eq!(ok.check(), Ok(()));
    let e = GpioConfig {
        led_pin: Some(28),
        ..ok
    }
    .check()
    .unwrap_err();
    assert!(e.contains("GPIO28") && e.contains("0 to 27"), "{e}");
    let e = GpioConfig {
        button_pin: Some(19),
        ..ok
    }
    .check()
    .unwrap_err();
    assert!(e.contains("GPIO19") && e.contains("I2S"), "{e}");
    let e = GpioConfig {
        button_pin: Some(17),
        ..ok
    }
    .check()
    .unwrap_err();
    assert!(e.contains("share GPIO17"), "{e}");
}

#[test]
fn presses_map_to_commands_and_a_calibration() {
    assert_eq!(
        action_for(Press::Short, "kitchen"),
        ButtonAction::Command(br#"{"cmd":"resync"}"#)
    );
    assert_eq!(
        action_for(Press::Double, "kitchen"),
        ButtonAction::Command(br#"{"cmd":"announce"}"#)
    );
    let ButtonAction::Publish { topic, payload } = action_for(Press::Long, "kitchen") else {
        panic!("a long press publishes");
    };
    assert_eq!(topic, "syncstream/calibrate");
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(v, serde_json::json!({ "devices": ["kitchen"] }));
}

/// Collects what the node asks for.
#[derive(Default)]
struct Published(Vec<(String, Vec<u8>)>);

impl ReceiverIo for Published {
    fn stream_send(&mut self, _: Frame) {}
    fn clock_send(&mut self, _: Frame) {}
    fn stream_reset(&mut self, _: &str, _: i64) {}
    fn publish(&mut self, topic: String, payload: Vec<u8>, _: bool) {
        self.0.push((topic, payload));
    }
    fn fetch_window(&mut self, _: WindowRequest) {}
    fn run_job(&mut self, _: Job) {}
    fn persist(&mut self, _: &PersistedState) {}
}

/// A clock the test moves.
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Waits (with a deadline) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn a_simulated_short_press_reaches_the_node_as_a_resync() {
    let (mut node, _r, _c) = test_node();
    let (backend, pins) = SimGpio::new();
    let clock = Arc::new(ManualClock(AtomicI64::new(0)));
    let mut snapshot = node.snapshot();
    snapshot.state = "playing".into();
    snapshot.connected = true;
    let (_state_tx, state_rx) = watch::channel(snapshot);
    let (tx, rx) = mpsc::channel();
    let driver = GpioDriver::spawn(
        Box::new(backend),
        state_rx,
        clock.clone(),
        Box::new(move |p| {
            let _ = tx.send(p);
        }),
    )
    .unwrap();
    // Sets the clock and waits until the driver has run a whole loop after it.
    let at = |ms: i64, pressed: bool| {
        clock.0.store(ms * 1000, Ordering::SeqCst);
        pins.button.store(pressed, Ordering::SeqCst);
        let r = pins.reads.load(Ordering::SeqCst);
        wait_for("the driver to read the button", || {
            pins.reads.load(Ordering::SeqCst) > r + 1
        });
    };
    // Acquiring at 0 ms (slow blink: on), and off at 600 ms.
    at(0, false);
    wait_for("the LED on", || pins.led.load(Ordering::SeqCst));
    for (ms, pressed) in [
        (100, true),
        (140, true),
        (250, false),
        (290, false),
        (600, false),
    ] {
        at(ms, pressed);
    }
    assert!(
        !pins.led.load(Ordering::SeqCst),
        "the acquiring blink is off at 600 ms"
    );
    assert!(
        rx.try_recv().is_err(),
        "no press before the double-press gap"
    );
    at(800, false);
    let press = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the press came out");
    assert_eq!(press, Press::Short);
    drop(driver);

    let now = 10_000_000;
    assert_ne!(node.next_measurement_us(), now);
    let mut io = Published::default();
    apply_press(&mut node, press, now, &mut io);
    assert_eq!(node.next_measurement_us(), now, "a resync measures at once");
    assert_eq!(node.counters().mqtt_rejected, 0, "the command was taken");
}

#[test]
fn a_long_press_publishes_a_calibration_request() {
    let (mut node, _r, _c) = test_node();
    let mut io = Published::default();
    apply_press(&mut node, Press::Long, 1_000_000, &mut io);
    assert_eq!(io.0.len(), 1, "{:?}", io.0);
    assert_eq!(io.0[0].0, "syncstream/calibrate");
    assert_eq!(io.0[0].1, br#"{"devices":["kitchen"]}"#);
}
