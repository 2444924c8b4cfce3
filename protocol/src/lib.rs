//! SyncStream's protocols: how the transmitter, the receivers and anyone else talk.
//!
//! - [`auth`]: the pairing key and the credentials derived from it (stream handshake,
//!   MQTT passwords, the API token);
//! - [`wire`]: the TCP stream between transmitter and receivers (postcard frames behind
//!   a length prefix: hellos, audio chunks, clock-sync exchanges);
//! - [`codec`]: the stream's audio codecs (Opus, PCM);
//! - [`messages`]: the MQTT topics and their JSON payloads;
//! - [`discovery`]: zero-configuration discovery over mDNS / DNS-SD (service types,
//!   TXT keys, advertising and browsing);
//! - [`mqtt`]: broker URLs and an MQTT client driver that survives reconnects;
//! - [`snapcast`]: Snapcast's binary stream protocol (for joining a snapserver as a
//!   client): headers, message bodies, an incremental decoder, codec headers.

pub mod auth;
pub mod codec;
pub mod discovery;
pub mod messages;
pub mod mqtt;
pub mod snapcast;
pub mod wire;
