//! `syncstream calibrate --scenario`: calibrates a simulated scenario's devices in its
//! virtual room ([`scenario`]), with the signals played and recorded by [`simulate`].
//! The live calibrator (`--mqtt`) is `syncstream_calibration::live`.

pub mod scenario;
pub mod simulate;

pub use scenario::{calibrate_scenario, ScenarioOptions};
