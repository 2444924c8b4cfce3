//! The 26-byte base header in front of every Snapcast message, and [`Timeval`].
//!
//! Layout (all little-endian; Snapcast `doc/binary_protocol.md`,
//! `common/message/message.hpp` at v0.26.0):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u16 | `type` (message type id) |
//! | 2 | u16 | `id` (request id; 0 = not a request) |
//! | 4 | u16 | `refersTo` (in a reply: the request's `id`) |
//! | 6 | i32, i32 | `sent` (sec, usec): the sender's steady clock when it wrote the message |
//! | 14 | i32, i32 | `received` (sec, usec): stamped by the receiver; on the wire it means something only in a Time reply |
//! | 22 | u32 | `size`: payload bytes after the header |

use super::{Reader, SnapError, MAX_PAYLOAD_BYTES};

/// Length of the base header, bytes (3·u16 + 2·(i32, i32) + u32).
pub const HEADER_BYTES: usize = 26;

/// Message type ids of Snapcast 0.26 (`message_type` in `common/message/message.hpp`).
pub mod types {
    /// Only a header; never sent on its own.
    pub const BASE: u16 = 0;
    /// Server → client: codec name and codec header blob.
    pub const CODEC_HEADER: u16 = 1;
    /// Server → client: one chunk of encoded audio.
    pub const WIRE_CHUNK: u16 = 2;
    /// Server → client: buffer, latency, volume, mute (JSON).
    pub const SERVER_SETTINGS: u16 = 3;
    /// Both ways: clock-sync request and reply.
    pub const TIME: u16 = 4;
    /// Client → server: the first message, who the client is (JSON).
    pub const HELLO: u16 = 5;
    /// Server → client: stream tags (JSON). Defined but never sent by 0.26.
    pub const STREAM_TAGS: u16 = 6;
    /// Client → server: the client's own volume and mute (JSON).
    pub const CLIENT_INFO: u16 = 7;
}

/// A Snapcast clock value: seconds and microseconds, as two i32 (a `struct timeval`
/// on the wire). The clocks are each side's steady (monotonic) clock, not wall time.
///
/// Decoding accepts any `usec`, negative or ≥ 10⁶ included: the value is always
/// `sec·10⁶ + usec` µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Timeval {
    /// Seconds.
    pub sec: i32,
    /// Microseconds added to `sec`.
    pub usec: i32,
}

impl Timeval {
    /// 0 s.
    pub const ZERO: Timeval = Timeval { sec: 0, usec: 0 };

    /// The value in signed microseconds (`sec·10⁶ + usec`; cannot overflow).
    pub fn to_micros(self) -> i64 {
        self.sec as i64 * 1_000_000 + self.usec as i64
    }

    /// The timeval of `us` signed microseconds, normalised to `0 ≤ usec < 10⁶` (so
    /// −1 µs is `{sec: −1, usec: 999_999}`).
    ///
    /// Errors: [`SnapError::Invalid`] when the seconds do not fit an i32 (beyond about
    /// ±68 years).
    pub fn from_micros(us: i64) -> Result<Timeval, SnapError> {
        let sec = us.div_euclid(1_000_000);
        let usec = us.rem_euclid(1_000_000) as i32;
        let sec = i32::try_from(sec).map_err(|_| {
            SnapError::invalid(
                "timeval.sec",
                format!("{us} µs is outside the i32 seconds range"),
            )
        })?;
        Ok(Timeval { sec, usec })
    }
}

/// The base header of one message (see the module docs for the layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BaseHeader {
    /// Message type id (see [`types`]).
    pub msg_type: u16,
    /// Request id; 0 when the message is not a request.
    pub id: u16,
    /// In a reply, the `id` of the request it answers; otherwise 0.
    pub refers_to: u16,
    /// Sender's steady clock when the message was written.
    pub sent: Timeval,
    /// Receiver's steady clock when the message was read (set by the receiver).
    pub received: Timeval,
    /// Payload bytes after the header, at most [`MAX_PAYLOAD_BYTES`].
    pub size: u32,
}

impl BaseHeader {
    /// The header's 26 wire bytes. Does not check `size` (encoding a [`super::Message`]
    /// does).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..2].copy_from_slice(&self.msg_type.to_le_bytes());
        out[2..4].copy_from_slice(&self.id.to_le_bytes());
        out[4..6].copy_from_slice(&self.refers_to.to_le_bytes());
        out[6..10].copy_from_slice(&self.sent.sec.to_le_bytes());
        out[10..14].copy_from_slice(&self.sent.usec.to_le_bytes());
        out[14..18].copy_from_slice(&self.received.sec.to_le_bytes());
        out[18..22].copy_from_slice(&self.received.usec.to_le_bytes());
        out[22..26].copy_from_slice(&self.size.to_le_bytes());
        out
    }

    /// Reads a header from the first [`HEADER_BYTES`] of `bytes` (later bytes are not
    /// looked at).
    ///
    /// Errors: [`SnapError::Truncated`] when fewer than 26 bytes are given;
    /// [`SnapError::PayloadTooLarge`] (fatal for the connection) when `size` is over
    /// [`MAX_PAYLOAD_BYTES`]. Any type id is accepted.
    pub fn decode(bytes: &[u8]) -> Result<BaseHeader, SnapError> {
        if bytes.len() < HEADER_BYTES {
            return Err(SnapError::Truncated {
                field: "header",
                needed: HEADER_BYTES as u64,
                available: bytes.len(),
            });
        }
        let mut r = Reader::new(&bytes[..HEADER_BYTES]);
        let h = BaseHeader {
            msg_type: r.u16("header.type")?,
            id: r.u16("header.id")?,
            refers_to: r.u16("header.refersTo")?,
            sent: r.timeval("header.sent")?,
            received: r.timeval("header.received")?,
            size: r.u32("header.size")?,
        };
        if h.size > MAX_PAYLOAD_BYTES {
            return Err(SnapError::PayloadTooLarge {
                type_id: h.msg_type,
                size: h.size,
            });
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_little_endian() {
        let h = BaseHeader {
            msg_type: types::TIME,
            id: 0x0102,
            refers_to: 0x0304,
            sent: Timeval {
                sec: 50_972,
                usec: -7,
            },
            received: Timeval {
                sec: -1,
                usec: 999_999,
            },
            size: 8,
        };
        let b = h.encode();
        assert_eq!(&b[0..6], &[4, 0, 0x02, 0x01, 0x04, 0x03]);
        assert_eq!(&b[6..10], &50_972i32.to_le_bytes());
        assert_eq!(&b[22..26], &[8, 0, 0, 0]);
        assert_eq!(BaseHeader::decode(&b).unwrap(), h);
    }

    #[test]
    fn short_and_oversized_headers_are_errors() {
        let b = BaseHeader::default().encode();
        for n in 0..HEADER_BYTES {
            let e = BaseHeader::decode(&b[..n]).unwrap_err();
            assert!(
                matches!(
                    e,
                    SnapError::Truncated {
                        field: "header",
                        ..
                    }
                ),
                "{e}"
            );
        }
        let mut h = BaseHeader {
            msg_type: 2,
            size: MAX_PAYLOAD_BYTES,
            ..Default::default()
        };
        assert!(BaseHeader::decode(&h.encode()).is_ok());
        h.size = MAX_PAYLOAD_BYTES + 1;
        let e = BaseHeader::decode(&h.encode()).unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("1000001"), "{e}");
        h.size = u32::MAX;
        assert!(BaseHeader::decode(&h.encode()).unwrap_err().is_fatal());
    }

    #[test]
    fn timeval_micros() {
        for us in [
            0i64,
            1,
            -1,
            999_999,
            -999_999,
            1_000_000,
            -1_000_001,
            50_972_123_456,
        ] {
            let tv = Timeval::from_micros(us).unwrap();
            assert!((0..1_000_000).contains(&tv.usec), "{tv:?}");
            assert_eq!(tv.to_micros(), us);
        }
        assert_eq!(
            Timeval::from_micros(-1).unwrap(),
            Timeval {
                sec: -1,
                usec: 999_999
            }
        );
        // Unnormalised values on the wire still add up.
        assert_eq!(Timeval { sec: 1, usec: -300 }.to_micros(), 999_700);
        assert_eq!(
            Timeval {
                sec: i32::MIN,
                usec: i32::MIN
            }
            .to_micros(),
            i32::MIN as i64 * 1_000_001
        );
        let max = Timeval {
            sec: i32::MAX,
            usec: 999_999,
        };
        assert_eq!(Timeval::from_micros(max.to_micros()).unwrap(), max);
        assert!(Timeval::from_micros(max.to_micros() + 1).is_err());
        assert!(Timeval::from_micros(i64::MIN).is_err());
    }
}
