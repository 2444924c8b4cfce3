//! Signal processing that SyncStream exists for: delay estimation between a source
//! window and a microphone recording.

pub mod delay;

pub use delay::{DelayEstimate, DelayEstimator, EstimateError, LagSearch};
