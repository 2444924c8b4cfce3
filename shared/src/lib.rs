//! SyncStream's base crate: what every other crate needs and nothing more.
//!
//! - [`time`]: the stream rate, the [`time::Clock`] trait and µs/sample conversions;
//! - [`names`]: what a device may be called;
//! - [`limits`]: playout delays and the buffer offsets they allow;
//! - [`profile`]: per-device JSON profiles;
//! - [`stats`]: small statistics helpers (percentiles, median);
//! - [`fsutil`]: atomic file writes;
//! - [`version`]: the version a process runs as (signed updates).
//!
//! The protocols are in `syncstream-protocol`, delay estimation in `syncstream-dsp`,
//! audio I/O in `syncstream-audio` and the virtual room in `syncstream-room`
//! (`docs/architecture.md` has the map).

pub mod fsutil;
pub mod limits;
pub mod names;
pub mod profile;
pub mod stats;
pub mod time;
pub mod version;
