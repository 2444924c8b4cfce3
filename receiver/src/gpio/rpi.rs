//! The Raspberry Pi's pins through `rpi-pal` (feature `gpio`, Linux only).

use anyhow::Context;
use rpi_pal::gpio::{Gpio, InputPin, OutputPin};

use super::{GpioBackend, GpioConfig};

/// The LED as an output, the button as an input with the internal pull-up (pressed =
/// low: the button connects the pin to GND).
pub struct RpiGpio {
    led: Option<OutputPin>,
    led_active_low: bool,
    button: Option<InputPin>,
}

impl RpiGpio {
    /// Opens the pins of `cfg`.
    ///
    /// Errors: the GPIO peripheral cannot be opened (not a Raspberry Pi, no
    /// `/dev/gpiomem` access) or a pin is busy, named in the message.
    pub fn open(cfg: &GpioConfig) -> anyhow::Result<RpiGpio> {
        let gpio = Gpio::new().context(
            "cannot open the Raspberry Pi's GPIO (/dev/gpiomem: is this a Pi, and is the user in group gpio?)",
        )?;
        let led = match cfg.led_pin {
            Some(p) => Some(
                gpio.get(p)
                    .with_context(|| format!("cannot use GPIO{p} for the LED"))?
                    .into_output(),
            ),
            None => None,
        };
        let button = match cfg.button_pin {
            Some(p) => Some(
                gpio.get(p)
                    .with_context(|| format!("cannot use GPIO{p} for the button"))?
                    .into_input_pullup(),
            ),
            None => None,
        };
        let mut me = RpiGpio {
            led,
            led_active_low: cfg.led_active_low,
            button,
        };
        me.set_led(false);
        Ok(me)
    }
}

impl GpioBackend for RpiGpio {
    fn set_led(&mut self, on: bool) {
        if let Some(led) = &mut self.led {
            if on != self.led_active_low {
                led.set_high();
            } else {
                led.set_low();
            }
        }
    }

    fn button_pressed(&mut self) -> bool {
        self.button.as_ref().is_some_and(|b| b.is_low())
    }
}
