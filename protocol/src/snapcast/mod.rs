//! Snapcast's binary stream protocol (TCP, port 1704), so that a SyncStream receiver
//! can join a real Snapcast server (snapserver 0.26) as a client.
//!
//! Every message is a 26-byte little-endian [`BaseHeader`] followed by `size` payload
//! bytes; [`Message`] pairs the header's fields with a decoded [`Body`]. Strings and
//! blobs inside bodies are a u32 little-endian length and that many bytes (no NUL).
//! Payloads are at most [`MAX_PAYLOAD_BYTES`]. Message types this module does not know
//! (StreamTags, the Error message of newer servers, anything later) decode as
//! [`Body::Unknown`]: their payload is skipped, the connection carries on.
//!
//! - [`header`]: the base header and the [`Timeval`] clock values in it;
//! - [`body`]: the message bodies (CodecHeader, WireChunk, Time; the JSON ones from
//!   [`json`]) and [`Message`] encode/decode;
//! - [`json`]: the JSON bodies ServerSettings, Hello and ClientInfo;
//! - [`decoder`]: an incremental [`Decoder`] that turns received bytes into messages;
//! - [`audio_format`]: what a CodecHeader's blob says about the stream (PCM's RIFF/WAVE
//!   header, Opus's "SUPO" pseudo-header; FLAC and Ogg blobs are passed through).
//!
//! Sources: Snapcast's `doc/binary_protocol.md` and the `badaix/snapcast` sources at tag
//! `v0.26.0` (`common/message/*.hpp`, `server/encoder/*`, `client/decoder/pcm_decoder.cpp`,
//! `common/sample_format.cpp`), as summarised in the project's Snapcast research notes
//! together with captures from a Debian 12 snapserver 0.26.0. Snapcast is GPL; this is
//! written from those notes, not ported from its code.
//!
//! Nothing here panics on any input, and no length field makes it allocate more than
//! [`MAX_PAYLOAD_BYTES`], nor before the bytes themselves have arrived.

pub mod audio_format;
pub mod body;
pub mod decoder;
pub mod header;
pub mod json;

pub use audio_format::{SampleFormat, StreamCodec};
pub use body::{Body, ClientInfo, CodecHeader, Hello, Message, ServerSettings, Time, WireChunk};
pub use decoder::Decoder;
pub use header::{BaseHeader, Timeval, HEADER_BYTES};

/// Largest payload (the bytes after the header) either side accepts: Snapcast's
/// `msg::max_size` (`common/message/message.hpp`, v0.26.0).
pub const MAX_PAYLOAD_BYTES: u32 = 1_000_000;

/// A Snapcast message that cannot be encoded or decoded. Each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapError {
    /// The input ends inside a field.
    #[error("snapcast {field}: truncated: needs {needed} bytes, only {available} left")]
    Truncated {
        /// The field being read, e.g. `"WireChunk.payload"`.
        field: &'static str,
        /// Bytes the field needs (for a string or blob: the length it announced).
        needed: u64,
        /// Bytes that were left.
        available: usize,
    },
    /// A header announces a payload over [`MAX_PAYLOAD_BYTES`]. The byte stream cannot
    /// be followed past it: the connection must be closed (see [`SnapError::is_fatal`]).
    #[error("snapcast message of type {type_id}: payload size {size} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes")]
    PayloadTooLarge {
        /// The header's type id.
        type_id: u16,
        /// The header's `size`.
        size: u32,
    },
    /// Something to encode is over [`MAX_PAYLOAD_BYTES`].
    #[error("snapcast {field}: {size} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge {
        /// The field, e.g. `"WireChunk payload"`.
        field: &'static str,
        /// Its size, bytes.
        size: u64,
    },
    /// A field holds a value that is not allowed (bad JSON, out of range, wrong magic,
    /// trailing bytes, ...).
    #[error("snapcast {field}: {reason}")]
    Invalid {
        /// The field, e.g. `"ServerSettings.volume"`.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

impl SnapError {
    /// True when the byte stream is out of step after this error (a header with an
    /// absurd size): close the connection. Every other decode error consumed exactly the
    /// one bad message, and the next message can be read.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SnapError::PayloadTooLarge { .. })
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        SnapError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Little-endian reader over one payload; every read checks the length first.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], SnapError> {
        if n > self.bytes.len() {
            return Err(SnapError::Truncated {
                field,
                needed: n as u64,
                available: self.bytes.len(),
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], SnapError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, SnapError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, SnapError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, SnapError> {
        Ok(i32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn timeval(&mut self, field: &'static str) -> Result<Timeval, SnapError> {
        Ok(Timeval {
            sec: self.i32(field)?,
            usec: self.i32(field)?,
        })
    }

    /// A u32 length and that many bytes. The length is checked against the bytes that
    /// are there before anything is taken.
    pub(crate) fn blob(&mut self, field: &'static str) -> Result<&'a [u8], SnapError> {
        let len = self.u32(field)?;
        if len as u64 > self.bytes.len() as u64 {
            return Err(SnapError::Truncated {
                field,
                needed: len as u64,
                available: self.bytes.len(),
            });
        }
        self.take(len as usize, field)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Errors when bytes are left over after the body's last field.
    pub(crate) fn finish(self, field: &'static str) -> Result<(), SnapError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(SnapError::invalid(
                field,
                format!("{} trailing bytes after the last field", self.bytes.len()),
            ))
        }
    }
}

/// Appends a u32 length and the bytes; the length must fit the payload limit.
pub(crate) fn write_blob(
    out: &mut Vec<u8>,
    bytes: &[u8],
    field: &'static str,
) -> Result<(), SnapError> {
    if bytes.len() as u64 > MAX_PAYLOAD_BYTES as u64 {
        return Err(SnapError::TooLarge {
            field,
            size: bytes.len() as u64,
        });
    }
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_timeval(out: &mut Vec<u8>, tv: Timeval) {
    out.extend_from_slice(&tv.sec.to_le_bytes());
    out.extend_from_slice(&tv.usec.to_le_bytes());
}
