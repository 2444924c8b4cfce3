//! The `airplay` backend: an AirPlay speaker named by the profile's `target`, through
//! the sound server's RAOP sink: PipeWire's `libpipewire-module-raop-discover` (sinks
//! `raop_sink.*`) or PulseAudio's `module-raop-discover` (sinks `raop_output.*`),
//! which find the speakers on the network by mDNS and speak RAOP (AirPlay 1 audio) to
//! them. These are kept upstream with the sound servers a Pi already runs, so
//! SyncStream plays into them through `pacat` ([`crate::pulse`]) rather than carrying
//! an AirPlay implementation of its own.
//!
//! An AirPlay speaker buffers about 2 s; that and the sink's own latency are output
//! latency the microphone measures (the playout delay must exceed it).

use super::pulse::{ServerSinkOutput, SinkKind};
use super::{AudioError, BackendConfig, Sink};

/// Opens the `airplay` sink for `cfg.device` (the speaker's name as its RAOP sink
/// shows it, or the sink's name). Errors: no target.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    Ok(Box::new(ServerSinkOutput::new(
        cfg,
        "airplay",
        SinkKind::Airplay,
        None,
    )?))
}
