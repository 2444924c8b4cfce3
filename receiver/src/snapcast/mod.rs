//! Joining a Snapcast server (snapserver 0.26) as a client (issue 17).
//!
//! - [`clock`]: the server-minus-client clock difference from Time exchanges
//!   (Snapcast's median filter);
//! - [`connection`]: a tokio client connection: Hello, clock sync, ServerSettings,
//!   CodecHeader and WireChunks handed on as [`connection::Event`]s.
//!
//! The wire format is in `syncstream_protocol::snapcast`. Not wired into the
//! receiver runtime yet.

pub mod clock;
pub mod connection;

pub use clock::ServerClock;
pub use connection::{run, ConnectionConfig, ConnectionError, Event};
