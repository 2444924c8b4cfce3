//! Signal processing that SyncStream exists for: delay estimation between a source
//! window and a microphone recording.
//!
//! One job per module: [`delay`] is the API, [`gcc`] the weighted cross-correlation,
//! [`peak`] the choice of peak and its sub-sample position, [`confidence`] how far
//! to trust it; [`decimate`] the band-limited decimator of the coarse pass.
//! The `syncstream delay` command that runs it on two files is in the binary.

pub mod confidence;
pub mod decimate;
pub mod delay;
pub mod gcc;
pub mod peak;

pub use delay::{
    CoarseDelay, DelayEstimate, DelayEstimator, Diagnostics, EstimateError, LagSearch, OtherPeak,
    MAX_OTHER_PEAKS,
};
