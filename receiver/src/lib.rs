//! The SyncStream receiver: plays the transmitter's stream on its output at the right
//! time, listens to it with its microphone, reports the drift and applies the
//! corrective buffer offsets.
//!
//! - [`node`]: the control core, without I/O, shared by the real receiver and the
//!   simulator: stream protocol, MQTT, drift measurement loop, test tones.
//! - [`realtime`]: the render and capture callbacks and the lock-free rings between
//!   them and the node.
//! - [`runtime`]: the real receiver: the node on tokio with TCP, MQTT and HTTP.
//! - The parts: [`clock_sync`] (transmitter clock estimate), [`jitter_buffer`],
//!   [`playout`] (scheduling, in the render callback), [`resampler`] (drift-free
//!   reading), [`offset`] (the buffer offset over time), [`playout_log`] (what playout
//!   did), [`drift`] (measurement), [`test_tone`] (calibration), [`voice`] (spoken
//!   diagnostics: the `announce` command).
//! - [`discovery`]: finding the transmitter over mDNS, advertising the receiver.
//! - [`snapcast`]: joining a Snapcast server as a client (clock sync, connection); not
//!   wired into the runtime yet.

pub mod clock_sync;
pub mod discovery;
pub mod drift;
pub mod gpio;
pub mod jitter_buffer;
pub mod mic_check;
pub mod mic_resample;
pub mod node;
pub mod offset;
pub mod output;
pub mod own_sound;
pub mod playout;
pub mod playout_log;
pub mod realtime;
pub mod reference;
pub mod resampler;
pub mod runtime;
pub mod snapcast;
pub mod test_tone;
pub mod voice;

pub use runtime::{start, Receiver, ReceiverConfig};
