//! The audio stream protocol between transmitter and receivers (TCP).
//!
//! Each message is a [`Frame`], encoded with postcard and sent behind a 4-byte
//! big-endian length (the framing of `tokio_util::codec::LengthDelimitedCodec`).
//! Frames are at most [`MAX_FRAME_BYTES`] long. The timeline is the source sample
//! index: sample `n` has presentation timestamp `epoch_us + n·10⁶/sample_rate` on
//! the transmitter's clock.
//!
//! Clock sync is NTP's four timestamps: the receiver sends `TimeRequest{t1}`
//! (its clock), the transmitter stamps `t2` on arrival and `t3` on departure (its
//! clock), the receiver stamps `t4` on arrival (RFC 5905, section 8). Receivers run
//! these exchanges on a second connection of their own (opened with
//! [`Frame::ClockHello`]), so that answers never wait behind audio; on the stream
//! connection they work too.

use serde::{Deserialize, Serialize};

/// Version of this protocol; a peer with another version is refused. Version 2 added
/// the hello's `instance`, the [`Frame::Refused`] answer and clock-sync connections
/// ([`Frame::ClockHello`]); version 3 named streams (the hello's `stream`) and
/// [`Frame::StreamSwitch`]; version 4 the mutual challenge-response of
/// [`crate::auth::StreamAuth`] (the hellos' `client_nonce`, [`Frame::AuthChallenge`],
/// [`Frame::AuthResponse`]).
pub const PROTOCOL_VERSION: u16 = 4;
/// Largest encoded frame, bytes.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Audio codec on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// Opus (RFC 6716), one 20 ms packet per chunk.
    Opus,
    /// 16-bit little-endian PCM, interleaved.
    Pcm16,
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "opus" => Ok(Codec::Opus),
            "pcm" | "pcm16" => Ok(Codec::Pcm16),
            other => Err(format!("unknown codec '{other}' (expected opus or pcm)")),
        }
    }
}

/// One message on the stream connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Receiver → transmitter, first frame.
    ClientHello {
        /// [`PROTOCOL_VERSION`] of the receiver.
        protocol_version: u16,
        /// Device name (see `syncstream_shared::names`).
        device: String,
        /// Random number the receiver process drew at start: a reconnect of the same
        /// process replaces its old connection, another process with the same name is
        /// refused.
        instance: u64,
        /// Fresh random nonce of this connection's handshake
        /// ([`crate::auth::StreamAuth`]).
        client_nonce: crate::auth::Nonce,
    },
    /// Receiver → transmitter, first frame of a second connection that carries only
    /// clock-sync exchanges: answers on it are not queued behind audio chunks (TCP
    /// delivers in order, so on the stream connection an answer waits for every delayed
    /// chunk ahead of it, which makes the downlink look slower than the uplink).
    ClockHello {
        /// [`PROTOCOL_VERSION`] of the receiver.
        protocol_version: u16,
        /// Device name.
        device: String,
        /// The receiver process's instance (as in its `ClientHello`).
        instance: u64,
        /// Fresh random nonce of this connection's handshake.
        client_nonce: crate::auth::Nonce,
    },
    /// Transmitter → receiver, answer to either hello: the transmitter's half of the
    /// handshake ([`crate::auth::StreamAuth`]). The receiver checks `server_proof` and
    /// answers with an [`Frame::AuthResponse`].
    AuthChallenge {
        /// Fresh random nonce of the transmitter.
        server_nonce: crate::auth::Nonce,
        /// HMAC-SHA256 proving the transmitter holds the pairing key.
        server_proof: crate::auth::Proof,
    },
    /// Receiver → transmitter, answer to an [`Frame::AuthChallenge`]: proof that the
    /// receiver holds the pairing key. Nothing else is served before it passes.
    AuthResponse {
        /// HMAC-SHA256 over both nonces, the device and the instance.
        proof: crate::auth::Proof,
    },
    /// Transmitter → receiver, instead of a `ServerHello`: the receiver is not served
    /// (its name is in use by another receiver, or invalid), and why. The connection
    /// closes after it.
    Refused {
        /// Why, for the receiver's log and status.
        reason: String,
    },
    /// Transmitter → receiver, answer to `ClientHello`.
    ServerHello {
        /// [`PROTOCOL_VERSION`] of the transmitter.
        protocol_version: u16,
        /// Stream rate, Hz.
        sample_rate: u32,
        /// Interleaved channels.
        channels: u16,
        /// Codec of `Audio` payloads.
        codec: Codec,
        /// Decoder output lags the PTS by this many samples (Opus look-ahead).
        codec_delay_samples: u32,
        /// PTS of sample index 0, µs (transmitter clock).
        epoch_us: i64,
        /// Playout delay the receivers should use, ms.
        playout_delay_ms: u32,
        /// Name of the stream this connection plays (source windows are asked for
        /// with `?stream=<name>`).
        stream: String,
    },
    /// Transmitter → receiver: one chunk of audio.
    Audio {
        /// Source sample index of the first frame in the chunk.
        sample_index: u64,
        /// Frames in the chunk.
        frames: u32,
        /// Encoded audio.
        payload: Vec<u8>,
    },
    /// Receiver → transmitter: clock-sync request.
    TimeRequest {
        /// Receiver clock at sending, µs.
        t1_us: i64,
    },
    /// Transmitter → receiver: clock-sync answer.
    TimeResponse {
        /// Echo of the request's `t1_us`.
        t1_us: i64,
        /// Transmitter clock when the request arrived, µs.
        t2_us: i64,
        /// Transmitter clock when the answer left, µs.
        t3_us: i64,
    },
    /// Transmitter → receiver: from the next `Audio` frame on, the connection carries
    /// another stream (the device moved to another group, or its group to another
    /// stream). Every stream of a transmitter shares one timeline (sample index `n` has
    /// the same PTS in all of them) and the playout delay, so the receiver keeps its
    /// clock sync and offset and only starts a new decoder and jitter buffer.
    StreamSwitch {
        /// Name of the new stream.
        stream: String,
        /// Codec of its `Audio` payloads.
        codec: Codec,
        /// Its decoder lag, samples.
        codec_delay_samples: u32,
        /// PTS of its sample index 0, µs (the same epoch as the hello's).
        epoch_us: i64,
    },
    /// Receiver → transmitter, on the stream connection after a `ServerHello` whose
    /// playout delay is too short for this device (its output latency, from its
    /// profile or its last offset, does not fit below the delay): the playout delay
    /// it needs, ms. The transmitter grows the delay of every stream to at least this
    /// and sends every connection a new `ServerHello` (same epoch), or answers with a
    /// `Refused` saying why it cannot. Transmitters before this frame ignore it.
    PlayoutDelayRequest {
        /// The playout delay the device needs, ms.
        playout_delay_ms: u32,
    },
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Bytes that are not a valid frame.
    #[error("malformed stream frame ({len} bytes): {reason}")]
    Malformed {
        /// Length of the bad frame.
        len: usize,
        /// Decoder's reason.
        reason: String,
    },
    /// Frame over [`MAX_FRAME_BYTES`].
    #[error("stream frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
}

impl Frame {
    /// Encodes the frame body (without the length prefix).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let v = postcard::to_stdvec(self).map_err(|e| WireError::Malformed {
            len: 0,
            reason: e.to_string(),
        })?;
        if v.len() > MAX_FRAME_BYTES {
            return Err(WireError::TooLarge(v.len()));
        }
        Ok(v)
    }

    /// Decodes a frame body. Never panics; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let (frame, rest) =
            postcard::take_from_bytes::<Frame>(bytes).map_err(|e| WireError::Malformed {
                len: bytes.len(),
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(WireError::Malformed {
                len: bytes.len(),
                reason: format!("{} trailing bytes", rest.len()),
            });
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::ClientHello {
                protocol_version: 2,
                device: "tv".into(),
                instance: 7,
                client_nonce: [3; 16],
            },
            Frame::AuthChallenge {
                server_nonce: [1; 16],
                server_proof: [2; 32],
            },
            Frame::AuthResponse { proof: [9; 32] },
            Frame::Refused {
                reason: "name in use".into(),
            },
            Frame::ClockHello {
                protocol_version: 2,
                device: "tv".into(),
                instance: 7,
                client_nonce: [4; 16],
            },
            Frame::ServerHello {
                protocol_version: 1,
                sample_rate: 48_000,
                channels: 2,
                codec: Codec::Opus,
                codec_delay_samples: 312,
                epoch_us: -5,
                playout_delay_ms: 1000,
                stream: "default".into(),
            },
            Frame::StreamSwitch {
                stream: "radio".into(),
                codec: Codec::Pcm16,
                codec_delay_samples: 0,
                epoch_us: 7,
            },
            Frame::Audio {
                sample_index: 960,
                frames: 960,
                payload: vec![1, 2, 3],
            },
            Frame::TimeRequest { t1_us: i64::MAX },
            Frame::TimeResponse {
                t1_us: 1,
                t2_us: 2,
                t3_us: 3,
            },
            Frame::PlayoutDelayRequest {
                playout_delay_ms: 2600,
            },
        ];
        for f in frames {
            assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[200, 1, 2]).is_err());
        let mut ok = Frame::TimeRequest { t1_us: 5 }.encode().unwrap();
        ok.push(0);
        assert!(Frame::decode(&ok)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
        // An Audio frame claiming a huge payload length must not allocate it.
        assert!(Frame::decode(&[2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let mut x: u64 = 1;
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Frame::decode(&bytes);
        }
    }
}
