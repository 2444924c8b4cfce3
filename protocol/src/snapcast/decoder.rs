//! An incremental decoder: feed it the bytes read from the socket, take complete
//! messages out.
//!
//! Memory is bounded by what was pushed: the decoder never reserves space from a length
//! field. A header whose `size` is over [`super::MAX_PAYLOAD_BYTES`] is an error as soon as its
//! 26 bytes are there, without waiting for the payload. A message of an unknown type is
//! returned as [`Body::Unknown`] as soon as its header is complete, and its payload is
//! then thrown away as it arrives, never buffered.

use super::body::{Body, Message};
use super::header::{BaseHeader, HEADER_BYTES};
use super::SnapError;

/// Splits a byte stream into [`Message`]s.
///
/// Use: after each read, [`Decoder::push`] the bytes, then call
/// [`Decoder::next_message`] until it gives `Ok(None)`. Called that way, the buffer
/// never holds more than one message ([`HEADER_BYTES`] + [`super::MAX_PAYLOAD_BYTES`]) plus the
/// last push.
///
/// Errors: a bad body ([`SnapError::Truncated`] / [`SnapError::Invalid`]) consumed that
/// one message; the next call goes on with the next message. A fatal error
/// ([`SnapError::is_fatal`]: an oversized header) leaves the stream out of step: from
/// then on every call returns that error again and pushed bytes are dropped; close the
/// connection.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Payload bytes of an unknown message still to be thrown away.
    skip: u64,
    failed: Option<SnapError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends bytes read from the connection (payload bytes of a skipped unknown
    /// message are dropped at once).
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.skip > 0 {
            let n = self.skip.min(bytes.len() as u64) as usize;
            self.skip -= n as u64;
            bytes = &bytes[n..];
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held and not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the next step needs: the rest of a skipped payload, of the
    /// header, or of the current message's payload (useful as a read size). 0 when a
    /// message is ready or the decoder failed.
    pub fn needed(&self) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        if self.skip > 0 {
            return self.skip as usize + HEADER_BYTES;
        }
        if self.buf.len() < HEADER_BYTES {
            return HEADER_BYTES - self.buf.len();
        }
        match BaseHeader::decode(&self.buf) {
            Ok(h) if Body::is_known_type(h.msg_type) => {
                (HEADER_BYTES + h.size as usize).saturating_sub(self.buf.len())
            }
            _ => 0,
        }
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    ///
    /// The message's `received` is the wire value; stamp the local clock on it.
    /// Errors: see [`Decoder`].
    pub fn next_message(&mut self) -> Result<Option<Message>, SnapError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.skip > 0 || self.buf.len() < HEADER_BYTES {
            return Ok(None);
        }
        let header = match BaseHeader::decode(&self.buf) {
            Ok(h) => h,
            Err(e) => {
                self.buf = Vec::new();
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        // `BaseHeader::decode` has checked `size <= MAX_PAYLOAD_BYTES`.
        if !Body::is_known_type(header.msg_type) {
            let in_buf = (self.buf.len() - HEADER_BYTES).min(header.size as usize);
            self.buf.drain(..HEADER_BYTES + in_buf);
            self.skip = header.size as u64 - in_buf as u64;
            return Ok(Some(Message {
                id: header.id,
                refers_to: header.refers_to,
                sent: header.sent,
                received: header.received,
                body: Body::Unknown {
                    type_id: header.msg_type,
                    size: header.size,
                },
            }));
        }
        let end = HEADER_BYTES + header.size as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let result = Message::decode(&header, &self.buf[HEADER_BYTES..end]);
        self.buf.drain(..end);
        result.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapcast::body::{ServerSettings, WireChunk};
    use crate::snapcast::header::types;
    use crate::snapcast::Timeval;

    fn stream() -> (Vec<u8>, Vec<Message>) {
        let mut msgs = crate::snapcast::body::tests::sample_messages();
        // A big chunk, so that a message spans many pushes.
        msgs.push(Message::new(Body::WireChunk(WireChunk {
            timestamp: Timeval { sec: 1, usec: 2 },
            payload: (0..5000u32).map(|i| i as u8).collect(),
        })));
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.extend(m.encode().unwrap());
        }
        (bytes, msgs)
    }

    fn unknown(type_id: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = BaseHeader {
            msg_type: type_id,
            id: 3,
            size: payload.len() as u32,
            ..Default::default()
        }
        .encode()
        .to_vec();
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn fed_one_byte_at_a_time() {
        let (bytes, msgs) = stream();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in &bytes {
            assert!(d.needed() > 0);
            d.push(std::slice::from_ref(b));
            while let Some(m) = d.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.needed(), HEADER_BYTES);
    }

    #[test]
    fn fed_all_at_once_and_in_odd_pieces() {
        let (bytes, msgs) = stream();
        for piece in [bytes.len(), 7, 26, 27, 1000] {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for part in bytes.chunks(piece) {
                d.push(part);
                while let Some(m) = d.next_message().unwrap() {
                    out.push(m);
                }
            }
            assert_eq!(out, msgs, "pieces of {piece}");
        }
    }

    #[test]
    fn unknown_types_are_skipped_without_buffering() {
        let settings = Message::new(Body::ServerSettings(ServerSettings::default()));
        let mut bytes = unknown(6, br#"{"artist":"x"}"#);
        bytes.extend(unknown(8, &vec![0x55; 100_000]));
        bytes.extend(unknown(0, &[]));
        bytes.extend(settings.encode().unwrap());
        for piece in [1, 13, bytes.len()] {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            let mut most = 0;
            for part in bytes.chunks(piece) {
                d.push(part);
                most = most.max(d.buffered());
                while let Some(m) = d.next_message().unwrap() {
                    out.push(m.body);
                }
            }
            assert_eq!(
                out,
                vec![
                    Body::Unknown {
                        type_id: 6,
                        size: 14
                    },
                    Body::Unknown {
                        type_id: 8,
                        size: 100_000
                    },
                    Body::Unknown {
                        type_id: 0,
                        size: 0
                    },
                    settings.body.clone(),
                ]
            );
            if piece < 100 {
                assert!(most < 100, "buffered {most} bytes of a skipped payload");
            }
        }
    }

    #[test]
    fn a_bad_body_drops_only_that_message() {
        let mut bytes = Vec::new();
        let bad = br#"{"volume":500}"#;
        let mut p = (bad.len() as u32).to_le_bytes().to_vec();
        p.extend_from_slice(bad);
        let mut h = BaseHeader {
            msg_type: types::SERVER_SETTINGS,
            size: p.len() as u32,
            ..Default::default()
        }
        .encode()
        .to_vec();
        h.extend(p);
        bytes.extend(h);
        let time = Message::new(Body::Time(Default::default()));
        bytes.extend(time.encode().unwrap());
        let mut d = Decoder::new();
        d.push(&bytes);
        let e = d.next_message().unwrap_err();
        assert!(!e.is_fatal());
        assert!(e.to_string().contains("ServerSettings.volume"), "{e}");
        assert_eq!(d.next_message().unwrap(), Some(time));
        assert_eq!(d.next_message().unwrap(), None);
    }

    #[test]
    fn an_absurd_size_fails_at_once_and_for_good() {
        let h = BaseHeader {
            msg_type: types::WIRE_CHUNK,
            size: 0xffff_fff0,
            ..Default::default()
        };
        let mut d = Decoder::new();
        d.push(&h.encode());
        let e = d.next_message().unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("4294967280"), "{e}");
        d.push(&[0; 1000]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_message().unwrap_err(), e);
        assert_eq!(d.needed(), 0);
    }

    #[test]
    fn partial_input_waits() {
        let m = Message::new(Body::Time(Default::default()));
        let b = m.encode().unwrap();
        let mut d = Decoder::new();
        d.push(&b[..HEADER_BYTES + 3]);
        assert_eq!(d.needed(), 5);
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.next_message().unwrap(), None);
        d.push(&b[HEADER_BYTES + 3..]);
        assert_eq!(d.next_message().unwrap(), Some(m));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..300 {
            let mut d = Decoder::new();
            for _ in 0..20 {
                let len = (x % 64) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Mostly small sizes and known types, so that bodies get parsed.
                        if round % 2 == 0 {
                            (x % 9) as u8
                        } else {
                            x as u8
                        }
                    })
                    .collect();
                d.push(&bytes);
                while let Ok(Some(_)) = d.next_message() {}
            }
        }
    }
}
