//! The SyncStream demo and simulator: transmitter, receivers and the virtual room
//! together, with reports of how well they stay in sync.

pub mod broker;
pub mod calibrate;
pub mod demo;
pub mod engine;
pub mod evening;
pub mod events;
pub mod net_proxy;
pub mod network;
pub mod report;
pub mod room_setup;
pub mod scenario;
pub mod source;

pub use demo::{run_demo, run_world, DemoConfig};
pub use engine::run_scenario;
pub use report::Report;
pub use scenario::Scenario;
