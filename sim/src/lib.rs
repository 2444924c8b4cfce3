//! The SyncStream demo and simulator: transmitter, receivers and the virtual room
//! together, with reports of how well they stay in sync.

pub mod demo;
pub mod report;
pub mod source;

pub use demo::{run_demo, DemoConfig};
pub use report::Report;
