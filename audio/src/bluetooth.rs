//! The `bluetooth` backend: an A2DP speaker named by the profile's `target` (its
//! address `00:11:22:33:44:55` or its name), played through whichever stack the Pi
//! runs:
//!
//! - **PulseAudio or PipeWire** (Raspberry Pi OS desktop; PipeWire since Bookworm):
//!   the speaker's sink (`bluez_output.<address>.*`, `bluez_sink.<address>.*`) is
//!   found by address or name and played through `pacat` ([`crate::pulse`]);
//! - **bluez-alsa** (Raspberry Pi OS Lite, no sound server): for an address with no
//!   sound-server sink, `aplay -D bluealsa:DEV=<address>,PROFILE=a2dp` (alsa-utils and
//!   the bluez-alsa ALSA plugin).
//!
//! The sink is looked up at every start: when the speaker disconnects its player
//! exits, the receiver reopens the output with backoff and finds the speaker again
//! when it is back. The speaker's latency (150 – 300 ms, different after every
//! reconnect) is measured by the microphone, not assumed.

use super::command::{find_program, PlayerCommand};
use super::pulse::{ServerSinkOutput, SinkKind};
use super::{AudioError, BackendConfig, Sink};

/// Backend name.
const BACKEND: &str = "bluetooth";

/// Opens the `bluetooth` sink for `cfg.device` (the speaker's address or name).
/// Errors: no target.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    Ok(Box::new(ServerSinkOutput::new(
        cfg,
        BACKEND,
        SinkKind::Bluetooth,
        Some(bluealsa_player),
    )?))
}

/// Whether `s` is a Bluetooth device address (`00:11:22:33:44:55`).
pub fn is_address(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The bluez-alsa player for an address the sound server does not have (or when
/// there is no sound server); otherwise the server's error.
fn bluealsa_player(
    cfg: &BackendConfig,
    target: &str,
    server_error: &str,
) -> Result<PlayerCommand, String> {
    if !is_address(target) {
        return Err(format!(
            "{server_error} (bluez-alsa needs the speaker's address, 00:11:22:33:44:55)"
        ));
    }
    if find_program("aplay").is_none() {
        return Err(format!(
            "{server_error}; and `aplay` (alsa-utils), which plays through bluez-alsa, is not installed"
        ));
    }
    Ok(PlayerCommand {
        argv: vec![
            "aplay".into(),
            "-q".into(),
            "-D".into(),
            format!("bluealsa:DEV={},PROFILE=a2dp", target.to_uppercase()),
            "-t".into(),
            "raw".into(),
            "-f".into(),
            "S16_LE".into(),
            "-r".into(),
            cfg.format.sample_rate.to_string(),
            "-c".into(),
            cfg.format.channels.to_string(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_recognised() {
        assert!(is_address("00:11:22:aa:BB:ff"));
        assert!(!is_address("00:11:22:aa:BB"));
        assert!(!is_address("JBL Flip 5"));
        assert!(!is_address("00:11:22:aa:BB:fg"));
    }
}
