//! Optional GPIO on a receiver (a Raspberry Pi): a status LED and a push button.
//!
//! - [`LedState::from_snapshot`] and [`led_on`]: the node's state and a time (µs) give
//!   the LED's level (pure functions; patterns in docs/gpio.md).
//! - [`PressDecoder`]: button levels sampled at explicit times (µs) give
//!   [`Press::Short`], [`Press::Long`] or [`Press::Double`], debounced.
//! - [`action_for`] / [`apply_press`]: a press becomes what the node does: a short
//!   press is the MQTT command `{"cmd":"resync"}`, a double press `{"cmd":"announce"}`
//!   (both fed to the node on the path a command from MQTT takes), a long press
//!   publishes `{"devices":["<name>"]}` on `syncstream/calibrate`.
//! - [`GpioDriver`]: its own thread (never the audio callbacks) polling a
//!   [`GpioBackend`] every [`POLL_INTERVAL`]: [`SimGpio`] (tests; and the fallback
//!   when the `gpio` feature is off) or, with feature `gpio` on Linux, the `rpi-pal`
//!   backend ([`open_backend`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use syncstream_shared::time::Clock;
use tokio::sync::watch;
use tracing::info;

use crate::node::{NodeSnapshot, ReceiverIo, ReceiverNode};

#[cfg(all(feature = "gpio", target_os = "linux"))]
mod rpi;

/// Highest BCM GPIO number on the Raspberry Pi's 40-pin header.
pub const MAX_BCM_PIN: u8 = 27;
/// BCM pins the I²S microphone uses (CLK 18, WS 19, SD 20, and 21: I²S data out).
pub const I2S_PINS: [u8; 4] = [18, 19, 20, 21];
/// How often the driver reads the button and sets the LED.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The MQTT topic on which the transmitter's control plane starts a calibration.
pub const CALIBRATE_TOPIC: &str = "syncstream/calibrate";

/// Which pins a receiver uses (BCM numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpioConfig {
    /// The status LED's pin; `None`: no LED.
    pub led_pin: Option<u8>,
    /// The button's pin (to GND, internal pull-up); `None`: no button.
    pub button_pin: Option<u8>,
    /// The LED lights when its pin is low (wired from 3.3 V to the pin).
    pub led_active_low: bool,
}

impl GpioConfig {
    /// Whether any pin is set.
    pub fn any(&self) -> bool {
        self.led_pin.is_some() || self.button_pin.is_some()
    }

    /// Checks the pins: each at most [`MAX_BCM_PIN`], not an I²S pin
    /// ([`I2S_PINS`]), and the LED and the button on different pins.
    ///
    /// Errors: a message naming the pin and the reason.
    pub fn check(&self) -> Result<(), String> {
        for (what, pin) in [("LED", self.led_pin), ("button", self.button_pin)] {
            let Some(pin) = pin else { continue };
            if pin > MAX_BCM_PIN {
                return Err(format!(
                    "the {what} pin GPIO{pin} does not exist on a Raspberry Pi's header: BCM pins are 0 to {MAX_BCM_PIN}"
                ));
            }
            if I2S_PINS.contains(&pin) {
                return Err(format!(
                    "the {what} pin GPIO{pin} is an I2S pin (18, 19, 20, 21: the microphone); choose another (docs/gpio.md)"
                ));
            }
        }
        if self.led_pin.is_some() && self.led_pin == self.button_pin {
            return Err(format!(
                "the LED and the button cannot share GPIO{}",
                self.led_pin.unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// What the status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedState {
    /// Nothing played yet (status `connecting`).
    Starting,
    /// Playing, but not measured yet (no drift report since the start or a resync, or
    /// the last one found no usable signal), or the stream ran dry while connected.
    Acquiring,
    /// Playing (or muted), and the last drift measurement found its sound: the sync
    /// loop tracks it.
    InSync,
    /// Not connected to the transmitter (or Snapcast server) after having played, or
    /// stopped by a command.
    Offline,
    /// Status `error`: a refusal, a profile that does not fit, an output that cannot
    /// play.
    Error,
}

impl LedState {
    /// The LED state for what the node shows (its status's state, connection and
    /// last drift report).
    pub fn from_snapshot(s: &NodeSnapshot) -> LedState {
        match s.state.as_str() {
            "error" => LedState::Error,
            "connecting" => LedState::Starting,
            "stopped" => LedState::Offline,
            _ if !s.connected => LedState::Offline,
            "starved" => LedState::Acquiring,
            _ if s.last_report.as_ref().is_some_and(|r| r.drift_ms.is_some()) => LedState::InSync,
            _ => LedState::Acquiring,
        }
    }

    /// The pattern: (on ms, off ms) segments repeated in order.
    pub fn pattern(self) -> &'static [(u32, u32)] {
        match self {
            // Fast blink, 5 Hz.
            LedState::Starting => &[(100, 100)],
            // Slow blink, 1 Hz.
            LedState::Acquiring => &[(500, 500)],
            // Steady on.
            LedState::InSync => &[(1000, 0)],
            // A short blip every 2 s.
            LedState::Offline => &[(100, 1900)],
            // Two short flashes every second.
            LedState::Error => &[(100, 200), (100, 600)],
        }
    }
}

/// Whether the LED is on for `state` at time `t_us` (µs on any monotonic clock; the
/// pattern repeats with its period).
pub fn led_on(state: LedState, t_us: u64) -> bool {
    let pattern = state.pattern();
    let period_us: u64 = pattern
        .iter()
        .map(|&(on, off)| u64::from(on + off) * 1000)
        .sum();
    let mut t = t_us % period_us.max(1);
    for &(on, off) in pattern {
        let (on, off) = (u64::from(on) * 1000, u64::from(off) * 1000);
        if t < on {
            return true;
        }
        if t < on + off {
            return false;
        }
        t -= on + off;
    }
    false
}

/// A decoded button press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// Pressed and released once, no second press within the double-press gap.
    Short,
    /// Held at least the long-press time (reported while still held).
    Long,
    /// Two short presses, the second starting within the double-press gap.
    Double,
}

/// The press decoder's timings, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressTiming {
    /// A level must hold this long to count (contact bounce is shorter).
    pub debounce_us: u64,
    /// Held this long: a long press.
    pub long_us: u64,
    /// A second press starting within this long after a release makes a double press.
    pub double_gap_us: u64,
}

impl Default for PressTiming {
    fn default() -> Self {
        PressTiming {
            debounce_us: 30_000,
            long_us: 1_000_000,
            double_gap_us: 400_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Down { since_us: u64, second: bool },
    LongFired,
    Released { at_us: u64 },
}

/// Turns sampled button levels into presses (a small state machine; time is passed
/// in, in µs, so it is tested without hardware or sleeps).
///
/// Debounce: the raw level must hold for [`PressTiming::debounce_us`] before it is
/// taken; the edge's time is when the raw level first changed. A short press is
/// reported once the double-press gap has passed without a second press; a short
/// press followed by a long one reports only the long one.
#[derive(Debug, Clone)]
pub struct PressDecoder {
    timing: PressTiming,
    /// The debounced level.
    pressed: bool,
    /// A raw level that differs from the debounced one, and since when.
    candidate: Option<(bool, u64)>,
    phase: Phase,
}

impl PressDecoder {
    /// A decoder with these timings, button released.
    pub fn new(timing: PressTiming) -> Self {
        PressDecoder {
            timing,
            pressed: false,
            candidate: None,
            phase: Phase::Idle,
        }
    }

    /// The raw level `pressed` sampled at `now_us` (non-decreasing); returns a press
    /// when one is complete.
    pub fn update(&mut self, pressed: bool, now_us: u64) -> Option<Press> {
        // Debounce.
        if pressed == self.pressed {
            self.candidate = None;
        } else {
            match self.candidate {
                Some((level, since)) if level == pressed => {
                    if now_us.saturating_sub(since) >= self.timing.debounce_us {
                        self.candidate = None;
                        self.pressed = pressed;
                        if let Some(p) = self.edge(pressed, since) {
                            return Some(p);
                        }
                    }
                }
                _ => self.candidate = Some((pressed, now_us)),
            }
        }
        // Timeouts.
        match self.phase {
            Phase::Down { since_us, .. }
                if now_us.saturating_sub(since_us) >= self.timing.long_us =>
            {
                self.phase = Phase::LongFired;
                Some(Press::Long)
            }
            Phase::Released { at_us }
                if now_us.saturating_sub(at_us) > self.timing.double_gap_us
                    && !self.second_press_pending(at_us) =>
            {
                self.phase = Phase::Idle;
                Some(Press::Short)
            }
            _ => None,
        }
    }

    /// Whether a press that started within the double-press gap after a release at
    /// `released_us` is still being debounced.
    fn second_press_pending(&self, released_us: u64) -> bool {
        matches!(self.candidate, Some((true, since))
            if since.saturating_sub(released_us) <= self.timing.double_gap_us)
    }

    /// A debounced edge at `at_us`.
    fn edge(&mut self, pressed: bool, at_us: u64) -> Option<Press> {
        match (self.phase, pressed) {
            (Phase::Idle, true) => {
                self.phase = Phase::Down {
                    since_us: at_us,
                    second: false,
                }
            }
            (Phase::Released { at_us: released }, true) => {
                let second = at_us.saturating_sub(released) <= self.timing.double_gap_us;
                self.phase = Phase::Down {
                    since_us: at_us,
                    second,
                };
                if !second {
                    // Too late for a double press (updates came sparsely): the first
                    // was a short press; this one starts anew.
                    return Some(Press::Short);
                }
            }
            (Phase::Down { second: true, .. }, false) => {
                self.phase = Phase::Idle;
                return Some(Press::Double);
            }
            (Phase::Down { second: false, .. }, false) => self.phase = Phase::Released { at_us },
            (Phase::LongFired, false) => self.phase = Phase::Idle,
            _ => {}
        }
        None
    }
}

/// What a press makes the receiver do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonAction {
    /// Feed this JSON to the node as a command arriving on its MQTT command topic.
    Command(&'static [u8]),
    /// Publish this payload on this MQTT topic.
    Publish {
        /// The topic.
        topic: String,
        /// The JSON payload.
        payload: Vec<u8>,
    },
}

/// The action for `press` on device `device`: short = `{"cmd":"resync"}`, double =
/// `{"cmd":"announce"}` (a receiver without that command logs it as unknown), long =
/// `{"devices":["<device>"]}` on [`CALIBRATE_TOPIC`].
pub fn action_for(press: Press, device: &str) -> ButtonAction {
    match press {
        Press::Short => ButtonAction::Command(br#"{"cmd":"resync"}"#),
        Press::Double => ButtonAction::Command(br#"{"cmd":"announce"}"#),
        Press::Long => ButtonAction::Publish {
            topic: CALIBRATE_TOPIC.to_string(),
            payload: serde_json::json!({ "devices": [device] })
                .to_string()
                .into_bytes(),
        },
    }
}

/// Does what `press` asks on `node` at local time `now_us` (see [`action_for`]):
/// commands go through [`ReceiverNode::on_mqtt_message`] on the device's command
/// topic, exactly as one from MQTT; publications through `io`.
pub fn apply_press(node: &mut ReceiverNode, press: Press, now_us: i64, io: &mut impl ReceiverIo) {
    info!(device = node.device(), ?press, "button");
    match action_for(press, node.device()) {
        ButtonAction::Command(json) => {
            let topic = syncstream_protocol::messages::topics::command(node.device());
            node.on_mqtt_message(&topic, json, now_us, io);
        }
        ButtonAction::Publish { topic, payload } => io.publish(topic, payload, false),
    }
}

/// The hardware under the driver: one LED output and one button input (either may be
/// absent: then `set_led` does nothing and `button_pressed` is `false`).
pub trait GpioBackend: Send {
    /// Lights (`true`) or darkens the LED (active-low wiring is the backend's job).
    fn set_led(&mut self, on: bool);
    /// Whether the button is held now (raw, not debounced).
    fn button_pressed(&mut self) -> bool;
}

/// Pins in memory: tests press its button and read its LED through a [`SimPins`]
/// handle.
pub struct SimGpio {
    pins: Arc<SimPins>,
}

/// The simulated pins' shared state.
#[derive(Debug, Default)]
pub struct SimPins {
    /// The LED's level.
    pub led: AtomicBool,
    /// The button's raw level (set by a test).
    pub button: AtomicBool,
    /// How many times the driver read the button.
    pub reads: AtomicU64,
}

impl SimGpio {
    /// A simulated backend and the handle to its pins.
    pub fn new() -> (SimGpio, Arc<SimPins>) {
        let pins = Arc::new(SimPins::default());
        (SimGpio { pins: pins.clone() }, pins)
    }
}

impl GpioBackend for SimGpio {
    fn set_led(&mut self, on: bool) {
        self.pins.led.store(on, Ordering::SeqCst);
    }
    fn button_pressed(&mut self) -> bool {
        let p = self.pins.button.load(Ordering::SeqCst);
        self.pins.reads.fetch_add(1, Ordering::SeqCst);
        p
    }
}

/// The backend for `cfg` on this machine: with feature `gpio` on Linux, the
/// Raspberry Pi's pins through `rpi-pal`; otherwise a simulated one (logged: GPIO is
/// not built in).
///
/// Errors: invalid pins ([`GpioConfig::check`]), or the pins cannot be opened (no
/// `/dev/gpiomem`, not a Raspberry Pi, no permission), named in the message.
pub fn open_backend(cfg: &GpioConfig) -> anyhow::Result<Box<dyn GpioBackend>> {
    cfg.check().map_err(anyhow::Error::msg)?;
    #[cfg(all(feature = "gpio", target_os = "linux"))]
    {
        Ok(Box::new(rpi::RpiGpio::open(cfg)?))
    }
    #[cfg(not(all(feature = "gpio", target_os = "linux")))]
    {
        tracing::warn!(
            "GPIO is not built in (cargo feature `gpio`, Linux only): the LED and button pins are ignored"
        );
        Ok(Box::new(SimGpio::new().0))
    }
}

/// The driver thread; stopped and joined when dropped.
pub struct GpioDriver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GpioDriver {
    /// Starts the driver on its own thread: every [`POLL_INTERVAL`] it reads the
    /// button (presses go to `on_press`), and sets the LED from `state` and
    /// `clock` (µs).
    ///
    /// Errors: the thread cannot be spawned.
    pub fn spawn(
        mut backend: Box<dyn GpioBackend>,
        state: watch::Receiver<NodeSnapshot>,
        clock: Arc<dyn Clock>,
        mut on_press: Box<dyn FnMut(Press) + Send>,
    ) -> std::io::Result<GpioDriver> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("gpio".into())
            .spawn(move || {
                let mut decoder = PressDecoder::new(PressTiming::default());
                let mut led: Option<bool> = None;
                while !stop2.load(Ordering::Relaxed) {
                    let now_us = clock.now_us().max(0) as u64;
                    if let Some(p) = decoder.update(backend.button_pressed(), now_us) {
                        on_press(p);
                    }
                    let on = led_on(LedState::from_snapshot(&state.borrow()), now_us);
                    if led != Some(on) {
                        backend.set_led(on);
                        led = Some(on);
                    }
                    std::thread::sleep(POLL_INTERVAL);
                }
                backend.set_led(false);
            })?;
        Ok(GpioDriver {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for GpioDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
