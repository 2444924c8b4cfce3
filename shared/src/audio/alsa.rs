//! The `alsa` backend: ALSA through cpal (real hardware on the Pis; a PulseAudio
//! null sink in tests).

use super::{AudioError, BackendConfig, Microphone, Sink};

/// Opens an ALSA output through cpal.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    Err(AudioError::new(
        "alsa",
        cfg.device.clone().unwrap_or_default(),
        "not implemented yet",
    ))
}

/// Opens an ALSA capture device through cpal.
pub fn open_microphone(cfg: &BackendConfig) -> Result<Box<dyn Microphone>, AudioError> {
    Err(AudioError::new(
        "alsa",
        cfg.device.clone().unwrap_or_default(),
        "not implemented yet",
    ))
}
