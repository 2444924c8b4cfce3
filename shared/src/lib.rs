//! SyncStream's shared library.
//!
//! Everything both ends of the system need: the stream rate and clocks ([`time`]),
//! the TCP stream protocol ([`wire`]) and its audio codecs ([`codec`]), the MQTT
//! topics and JSON messages ([`messages`]), device profiles ([`profile`]),
//! file decoding ([`decode`]), delay estimation ([`dsp`]), audio I/O backends
//! ([`audio`]), the virtual room ([`room`]) and small statistics helpers ([`stats`]).

pub mod audio;
pub mod codec;
pub mod decode;
pub mod dsp;
pub mod fsutil;
pub mod messages;
pub mod mqtt;
pub mod profile;
pub mod room;
pub mod stats;
pub mod testing;
pub mod time;
pub mod wire;
