//! Snapcast message bodies and [`Message`] (a header's fields plus a decoded body).
//!
//! Payload layouts (little-endian; Snapcast `doc/binary_protocol.md` and
//! `common/message/*.hpp` at v0.26.0). A string or blob is a u32 length + bytes.
//!
//! | type | body | payload |
//! |---|---|---|
//! | 1 | [`CodecHeader`] | string codec name, blob codec header |
//! | 2 | [`WireChunk`] | i32 sec, i32 usec (timestamp), blob encoded audio |
//! | 3 | [`ServerSettings`] | string JSON `{"bufferMs","latency","volume","muted"}` |
//! | 4 | [`Time`] | i32 sec, i32 usec (latency) |
//! | 5 | [`Hello`] | string JSON with nine keys |
//! | 7 | [`ClientInfo`] | string JSON `{"volume","muted"}` |
//!
//! Any other type id (6 = StreamTags, 8 = Error of servers ≥ 0.32, ...) decodes as
//! [`Body::Unknown`]. Bytes after a body's last field are an error (the message is
//! dropped, the connection is not).

pub use super::json::{ClientInfo, Hello, ServerSettings};

use super::header::{types, BaseHeader};
use super::{write_blob, write_timeval, Reader, SnapError, Timeval, MAX_PAYLOAD_BYTES};

/// Type 1, server → client: the stream's codec and its header. Sent after the
/// ServerSettings that answers the Hello, and again whenever the stream changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecHeader {
    /// `pcm`, `flac`, `ogg` or `opus` (see [`super::audio_format`]).
    pub codec: String,
    /// The codec header blob (a RIFF/WAVE header, a FLAC stream header, Ogg pages, or
    /// the 12-byte Opus pseudo-header).
    pub payload: Vec<u8>,
}

/// Type 2, server → client: one chunk of encoded audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireChunk {
    /// The server's steady clock when the chunk's first sample was read from the source;
    /// it should be heard at `timestamp + bufferMs` server time (less the latencies).
    pub timestamp: Timeval,
    /// Encoded audio: raw PCM, whole FLAC frames, one Opus packet or whole Ogg pages.
    pub payload: Vec<u8>,
}

/// Type 4, both ways: clock sync. The client's request carries zero; the server's reply
/// (same `id` in `id` and `refersTo`) carries its `received − sent` of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    /// In a reply: the request's server-receive time minus its client-send time
    /// (mixes both clocks; see the research notes, 1.6).
    pub latency: Timeval,
}

/// A decoded message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Type 1.
    CodecHeader(CodecHeader),
    /// Type 2.
    WireChunk(WireChunk),
    /// Type 3.
    ServerSettings(ServerSettings),
    /// Type 4.
    Time(Time),
    /// Type 5.
    Hello(Hello),
    /// Type 7.
    ClientInfo(ClientInfo),
    /// Any other type id: the payload was skipped. Cannot be encoded.
    Unknown {
        /// The header's type id.
        type_id: u16,
        /// Payload bytes skipped.
        size: u32,
    },
}

impl Body {
    /// The type id this body is sent with.
    pub fn type_id(&self) -> u16 {
        match self {
            Body::CodecHeader(_) => types::CODEC_HEADER,
            Body::WireChunk(_) => types::WIRE_CHUNK,
            Body::ServerSettings(_) => types::SERVER_SETTINGS,
            Body::Time(_) => types::TIME,
            Body::Hello(_) => types::HELLO,
            Body::ClientInfo(_) => types::CLIENT_INFO,
            Body::Unknown { type_id, .. } => *type_id,
        }
    }

    /// Whether [`Body::decode`] knows this type id (else it gives [`Body::Unknown`]).
    pub fn is_known_type(type_id: u16) -> bool {
        matches!(
            type_id,
            types::CODEC_HEADER
                | types::WIRE_CHUNK
                | types::SERVER_SETTINGS
                | types::TIME
                | types::HELLO
                | types::CLIENT_INFO
        )
    }

    /// The payload bytes (without the header).
    ///
    /// Errors: [`SnapError::Invalid`] for [`Body::Unknown`] or an out-of-range
    /// ServerSettings/ClientInfo value; [`SnapError::TooLarge`] when a blob is over
    /// [`MAX_PAYLOAD_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, SnapError> {
        let mut out = Vec::new();
        match self {
            Body::CodecHeader(c) => {
                write_blob(&mut out, c.codec.as_bytes(), "CodecHeader.codec")?;
                write_blob(&mut out, &c.payload, "CodecHeader.payload")?;
            }
            Body::WireChunk(w) => {
                write_timeval(&mut out, w.timestamp);
                write_blob(&mut out, &w.payload, "WireChunk.payload")?;
            }
            Body::ServerSettings(s) => {
                write_blob(&mut out, s.to_json()?.as_bytes(), "ServerSettings JSON")?
            }
            Body::Time(t) => write_timeval(&mut out, t.latency),
            Body::Hello(h) => write_blob(&mut out, h.to_json().as_bytes(), "Hello JSON")?,
            Body::ClientInfo(c) => {
                write_blob(&mut out, c.to_json()?.as_bytes(), "ClientInfo JSON")?
            }
            Body::Unknown { type_id, .. } => {
                return Err(SnapError::invalid(
                    "body",
                    format!(
                    "cannot encode a message of unknown type {type_id} (its payload was skipped)"
                ),
                ))
            }
        }
        if out.len() as u64 > MAX_PAYLOAD_BYTES as u64 {
            return Err(SnapError::TooLarge {
                field: "payload",
                size: out.len() as u64,
            });
        }
        Ok(out)
    }

    /// Decodes the payload of a message of type `type_id`. Unknown ids give
    /// [`Body::Unknown`] without looking at the bytes.
    ///
    /// Errors: [`SnapError::Truncated`] when a field runs past the payload,
    /// [`SnapError::Invalid`] for trailing bytes, a non-UTF-8 codec name, JSON that is
    /// not valid or lacks a required key, or a value out of range.
    pub fn decode(type_id: u16, payload: &[u8]) -> Result<Body, SnapError> {
        let mut r = Reader::new(payload);
        let body = match type_id {
            types::CODEC_HEADER => {
                let codec = r.blob("CodecHeader.codec")?;
                let codec = std::str::from_utf8(codec)
                    .map_err(|e| {
                        SnapError::invalid("CodecHeader.codec", format!("not UTF-8: {e}"))
                    })?
                    .to_string();
                let payload = r.blob("CodecHeader.payload")?.to_vec();
                r.finish("CodecHeader")?;
                Body::CodecHeader(CodecHeader { codec, payload })
            }
            types::WIRE_CHUNK => {
                let timestamp = r.timeval("WireChunk.timestamp")?;
                let payload = r.blob("WireChunk.payload")?.to_vec();
                r.finish("WireChunk")?;
                Body::WireChunk(WireChunk { timestamp, payload })
            }
            types::SERVER_SETTINGS => {
                let text = r.blob("ServerSettings JSON")?;
                r.finish("ServerSettings")?;
                Body::ServerSettings(ServerSettings::from_json(text)?)
            }
            types::TIME => {
                let latency = r.timeval("Time.latency")?;
                r.finish("Time")?;
                Body::Time(Time { latency })
            }
            types::HELLO => {
                let text = r.blob("Hello JSON")?;
                r.finish("Hello")?;
                Body::Hello(Hello::from_json(text)?)
            }
            types::CLIENT_INFO => {
                let text = r.blob("ClientInfo JSON")?;
                r.finish("ClientInfo")?;
                Body::ClientInfo(ClientInfo::from_json(text)?)
            }
            other => Body::Unknown {
                type_id: other,
                size: payload.len().min(u32::MAX as usize) as u32,
            },
        };
        Ok(body)
    }
}

/// One message: the header's fields (its type and size come from the body) and the
/// decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request id; 0 when not a request. snapclient numbers requests from 1 and wraps.
    pub id: u16,
    /// In a reply, the request's `id`; otherwise 0.
    pub refers_to: u16,
    /// Sender's steady clock when it wrote the message.
    pub sent: Timeval,
    /// Receiver's steady clock when it read the message: [`super::Decoder`] leaves the
    /// wire value here; the caller stamps its own clock. Meaningful on the wire only in
    /// a Time reply.
    pub received: Timeval,
    /// The body.
    pub body: Body,
}

impl Message {
    /// A message with `body`, id and refersTo 0 and zero times.
    pub fn new(body: Body) -> Message {
        Message {
            id: 0,
            refers_to: 0,
            sent: Timeval::ZERO,
            received: Timeval::ZERO,
            body,
        }
    }

    /// The wire bytes: the 26-byte header (type and size from the body) and the payload.
    ///
    /// Errors: as [`Body::encode`].
    pub fn encode(&self) -> Result<Vec<u8>, SnapError> {
        let payload = self.body.encode()?;
        let header = BaseHeader {
            msg_type: self.body.type_id(),
            id: self.id,
            refers_to: self.refers_to,
            sent: self.sent,
            received: self.received,
            size: payload.len() as u32,
        };
        let mut out = Vec::with_capacity(super::HEADER_BYTES + payload.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// The message with `header` and its `payload`.
    ///
    /// Errors: [`SnapError::Invalid`] when `payload` is not `header.size` bytes; else as
    /// [`Body::decode`].
    pub fn decode(header: &BaseHeader, payload: &[u8]) -> Result<Message, SnapError> {
        if payload.len() as u64 != header.size as u64 {
            return Err(SnapError::invalid(
                "payload",
                format!("{} bytes, header.size says {}", payload.len(), header.size),
            ));
        }
        Ok(Message {
            id: header.id,
            refers_to: header.refers_to,
            sent: header.sent,
            received: header.received,
            body: Body::decode(header.msg_type, payload)?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::snapcast::HEADER_BYTES;

    fn round_trip(m: &Message) -> Message {
        let bytes = m.encode().unwrap();
        let h = BaseHeader::decode(&bytes).unwrap();
        assert_eq!(h.msg_type, m.body.type_id());
        assert_eq!(h.size as usize, bytes.len() - HEADER_BYTES);
        Message::decode(&h, &bytes[HEADER_BYTES..]).unwrap()
    }

    pub(crate) fn sample_messages() -> Vec<Message> {
        let tv = |sec, usec| Timeval { sec, usec };
        let bodies = vec![
            Body::CodecHeader(CodecHeader {
                codec: "flac".into(),
                payload: b"fLaC\x00\x00\x00\x22".to_vec(),
            }),
            Body::CodecHeader(CodecHeader {
                codec: String::new(),
                payload: Vec::new(),
            }),
            Body::WireChunk(WireChunk {
                timestamp: tv(50_972, 123_456),
                payload: (0..=255).collect(),
            }),
            Body::ServerSettings(ServerSettings {
                buffer_ms: 1000,
                latency_ms: -25,
                volume: 42,
                muted: true,
            }),
            Body::Time(Time {
                latency: tv(-1, 999_000),
            }),
            Body::Hello(Hello::syncstream(
                "kitchen",
                "00:11:22:33:44:55",
                "pi",
                "0.1.0",
            )),
            Body::ClientInfo(ClientInfo {
                volume: 0,
                muted: false,
            }),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Message {
                id: i as u16 + 1,
                refers_to: 7,
                sent: tv(100 + i as i32, 5),
                received: tv(-3, 0),
                body,
            })
            .collect()
    }

    #[test]
    fn every_message_type_round_trips() {
        for m in sample_messages() {
            assert_eq!(round_trip(&m), m);
        }
    }

    #[test]
    fn wire_chunk_and_time_layout() {
        let m = Message::new(Body::WireChunk(WireChunk {
            timestamp: Timeval { sec: 2, usec: 3 },
            payload: vec![0xaa, 0xbb],
        }));
        let b = m.encode().unwrap();
        assert_eq!(
            &b[HEADER_BYTES..],
            &[2, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0xaa, 0xbb]
        );
        let t = Message::new(Body::Time(Time::default())).encode().unwrap();
        assert_eq!(t.len(), HEADER_BYTES + 8);
        assert_eq!(&t[0..2], &[4, 0]);
    }

    #[test]
    fn unknown_types_are_skipped_not_errors() {
        for t in [0u16, 6, 8, 9, 1000, u16::MAX] {
            assert_eq!(
                Body::decode(t, b"{\"x\":1}").unwrap(),
                Body::Unknown {
                    type_id: t,
                    size: 7
                }
            );
            assert!(!Body::is_known_type(t));
        }
        assert!(Message::new(Body::Unknown {
            type_id: 6,
            size: 0
        })
        .encode()
        .is_err());
    }

    #[test]
    fn truncated_and_trailing_bodies_are_errors() {
        for m in sample_messages() {
            let b = m.encode().unwrap();
            let payload = &b[HEADER_BYTES..];
            let t = m.body.type_id();
            for n in 0..payload.len() {
                let e = Body::decode(t, &payload[..n]).unwrap_err();
                assert!(
                    matches!(e, SnapError::Truncated { .. } | SnapError::Invalid { .. }),
                    "{e}"
                );
            }
            let mut long = payload.to_vec();
            long.push(0);
            let e = Body::decode(t, &long).unwrap_err();
            assert!(e.to_string().contains("trailing"), "{e}");
        }
        // A blob length far past the payload is refused before anything is allocated.
        let e = Body::decode(
            types::WIRE_CHUNK,
            &[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        )
        .unwrap_err();
        assert_eq!(
            e,
            SnapError::Truncated {
                field: "WireChunk.payload",
                needed: u32::MAX as u64,
                available: 0
            }
        );
        let e =
            Body::decode(types::CODEC_HEADER, &[2, 0, 0, 0, 0xff, 0xfe, 0, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        let h = BaseHeader {
            msg_type: types::TIME,
            size: 8,
            ..Default::default()
        };
        assert!(Message::decode(&h, &[0; 7]).is_err());
    }

    #[test]
    fn oversized_payloads_are_refused_with_their_size() {
        let m = Message::new(Body::WireChunk(WireChunk {
            timestamp: Timeval::ZERO,
            payload: vec![0; MAX_PAYLOAD_BYTES as usize],
        }));
        let e = m.encode().unwrap_err();
        assert!(e.to_string().contains("1000012"), "{e}");
        let m = Message::new(Body::WireChunk(WireChunk {
            timestamp: Timeval::ZERO,
            payload: vec![0; MAX_PAYLOAD_BYTES as usize - 12],
        }));
        assert_eq!(
            m.encode().unwrap().len(),
            HEADER_BYTES + MAX_PAYLOAD_BYTES as usize
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for t in 0..9 {
                let _ = Body::decode(t, &bytes);
            }
        }
    }
}
