//! Joining a Snapcast server (snapserver 0.26) as a client (issue 17).
//!
//! - [`clock`]: the server-minus-client clock difference from Time exchanges
//!   (Snapcast's median filter);
//! - [`connection`]: a tokio client connection: Hello, clock sync, ServerSettings,
//!   CodecHeader and WireChunks handed on as [`connection::Event`]s;
//! - [`decode`]: chunks to the receiver's stream format.
//!
//! The wire format is in `syncstream_protocol::snapcast`. The receiver node plays what
//! the connection hands on (`node::snapcast`); `syncstream receiver --snapserver HOST`
//! runs it (`runtime`).

pub mod clock;
pub mod connection;
pub mod decode;

pub use clock::ServerClock;
pub use connection::{run, ConnectionConfig, ConnectionError, Event};
