//! A client connection to a Snapcast server's stream port (TCP, default 1704).
//!
//! [`run`] connects, sends a Hello (with a non-zero id and all nine keys: a 0.26 server
//! crashes on a Hello with a key missing), then keeps the clock in sync: [`QUICK_SYNCS`]
//! Time exchanges, each [`QUICK_SYNC_GAP`] after the previous reply, then one every
//! [`SYNC_PERIOD`]; a reply that takes over [`SYNC_TIMEOUT`] ends the connection.
//! Received messages go out in order as [`Event`]s: every ServerSettings (the reply to
//! Hello and one after each control change), every CodecHeader (at the start and on a
//! stream switch), WireChunks once a CodecHeader has arrived (a server sends chunks even
//! before the Hello is answered; they cannot be decoded without the header), and each
//! clock sample with the filtered difference.
//!
//! Any error ends the connection and is logged and returned: I/O, a malformed message,
//! a CodecHeader this crate cannot read, a Time reply too late, the server closing. Message
//! types it does not know are skipped. The caller reconnects.
//!
//! Times: the client clock is the [`Clock`] passed in (µs); Snapcast timevals carry it
//! as seconds and microseconds. Sources: the project's Snapcast research notes, 1.3,
//! 1.5, 1.6 and 1.8 (snapclient/snapserver 0.26 behaviour, checked against Debian 12's
//! snapserver).

use std::sync::Arc;
use std::time::Duration;

use syncstream_protocol::snapcast::{
    Body, CodecHeader, Decoder, Hello, Message, ServerSettings, SnapError, StreamCodec, Time,
    Timeval, WireChunk,
};
use syncstream_shared::time::Clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::clock::ServerClock;

/// Time exchanges right after connecting, before the slow period (snapclient: 50).
pub const QUICK_SYNCS: u32 = 50;
/// Wait after a reply before the next quick exchange (snapclient: 100 µs).
pub const QUICK_SYNC_GAP: Duration = Duration::from_micros(100);
/// Interval of the exchanges after the quick ones (snapclient: 1 s). SyncStream's clock
/// filter ([`crate::clock_sync`]) fits the offset *and* the rate over a window of
/// exchanges, and the clean ones (no queueing) decide it: ten a second give it enough
/// of them (a Time exchange is 60 bytes each way).
pub const SYNC_PERIOD: Duration = Duration::from_millis(100);
/// A Time reply later than this ends the connection (snapclient: 2 s, then reconnects).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the TCP connection to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Request id of the Hello. Time requests use 2..=[`MAX_REQUEST_ID`] and wrap back to 2.
pub const HELLO_ID: u16 = 1;
/// Largest request id (snapclient wraps at 9999).
pub const MAX_REQUEST_ID: u16 = 9999;
/// Bytes asked of the socket per read.
const READ_BYTES: usize = 64 * 1024;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The server's stream port, `HOST:PORT` (e.g. `"snapserver.local:1704"`).
    pub server: String,
    /// The Hello to introduce this client with (see `Hello::syncstream`).
    pub hello: Hello,
}

/// What the connection hands on, in the order the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A ServerSettings (buffer, latency, volume, mute); the latest one applies.
    ServerSettings(ServerSettings),
    /// A CodecHeader and what it says; the WireChunks after it use this codec (one stray
    /// chunk of the previous codec may still follow a stream switch).
    CodecHeader {
        /// The header as received.
        header: CodecHeader,
        /// The codec and, for PCM and Opus, its sample format.
        codec: StreamCodec,
    },
    /// An encoded chunk; its timestamp is the server clock of its first sample.
    WireChunk(WireChunk),
    /// One Time exchange was completed.
    TimeSync {
        /// This exchange's `server − client` clock difference, µs.
        sample_us: i64,
        /// The filtered difference after it (median of the window), µs.
        diff_us: i64,
        /// Round trip of the exchange on the client clock, µs.
        rtt_us: i64,
        /// The exchange's four timestamps as NTP names them (RFC 5905, 8): request
        /// sent (client clock), request received (server clock: `t1 + c2s`), reply
        /// sent (server clock), reply received (client clock), µs.
        t_us: [i64; 4],
    },
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The TCP connection could not be opened.
    #[error("snapcast server {server}: connect failed: {reason}")]
    Connect {
        /// `HOST:PORT`.
        server: String,
        /// Why.
        reason: String,
    },
    /// Reading from or writing to the socket failed.
    #[error("snapcast connection: {op} failed: {source}")]
    Io {
        /// `"read"` or `"write"`.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("snapcast connection: closed by the server")]
    Closed,
    /// A message could not be decoded or encoded, or a CodecHeader could not be read.
    #[error("snapcast connection: {0}")]
    Protocol(#[from] SnapError),
    /// A Time request went unanswered.
    #[error("snapcast connection: Time request {id}: no reply within {timeout_ms} ms")]
    TimeSyncTimeout {
        /// The request's id.
        id: u16,
        /// [`SYNC_TIMEOUT`], ms.
        timeout_ms: u128,
    },
    /// The receiver of the events was dropped.
    #[error("snapcast connection: the event receiver was dropped")]
    EventsClosed,
}

/// The Time request waiting for its reply.
struct Pending {
    id: u16,
    /// Client clock at send, µs.
    sent_us: i64,
    deadline: Instant,
}

/// Connects to `config.server` and runs the connection until it fails (see the module
/// docs); the error is logged as a warning and returned. Events go to `events`:
/// ServerSettings, CodecHeaders and clock samples wait for room; a WireChunk that finds
/// the channel full is dropped (with a warning), so that a slow consumer never holds up
/// the clock sync.
pub async fn run(
    config: ConnectionConfig,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<Event>,
) -> ConnectionError {
    let err = run_inner(&config, clock.as_ref(), &events).await;
    tracing::warn!(server = %config.server, "snapcast connection ended: {err}");
    err
}

async fn run_inner(
    config: &ConnectionConfig,
    clock: &dyn Clock,
    events: &mpsc::Sender<Event>,
) -> ConnectionError {
    let mut stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&config.server)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return ConnectionError::Connect {
                    server: config.server.clone(),
                    reason: e.to_string(),
                }
            }
            Err(_) => {
                return ConnectionError::Connect {
                    server: config.server.clone(),
                    reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                }
            }
        };
    // Small messages (Time requests) must leave at once.
    let _ = stream.set_nodelay(true);
    tracing::info!(server = %config.server, id = %config.hello.id, "snapcast: connected");

    let hello = Message {
        id: HELLO_ID,
        ..Message::new(Body::Hello(config.hello.clone()))
    };
    if let Err(e) = send(&mut stream, hello, clock).await {
        return e;
    }

    let mut decoder = Decoder::new();
    let mut read_buf = vec![0u8; READ_BYTES];
    let mut server_clock = ServerClock::new();
    let mut have_codec = false;
    let mut dropped_chunks: u64 = 0;
    let mut syncs_done: u32 = 0;
    let mut next_id = HELLO_ID;
    let mut pending: Option<Pending> = None;
    let mut next_sync = Instant::now();

    loop {
        let wake = pending.as_ref().map_or(next_sync, |p| p.deadline);
        tokio::select! {
            read = stream.read(&mut read_buf) => {
                let n = match read {
                    Ok(0) => return ConnectionError::Closed,
                    Ok(n) => n,
                    Err(source) => return ConnectionError::Io { op: "read", source },
                };
                // Client clock at receipt, for every message completed by this read.
                let received_us = clock.now_us();
                decoder.push(&read_buf[..n]);
                loop {
                    let msg = match decoder.next_message() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => return e.into(),
                    };
                    match msg.body {
                        Body::ServerSettings(s) => {
                            tracing::debug!(?s, "snapcast: ServerSettings");
                            if events.send(Event::ServerSettings(s)).await.is_err() {
                                return ConnectionError::EventsClosed;
                            }
                        }
                        Body::CodecHeader(header) => {
                            let codec = match header.stream_codec() {
                                Ok(c) => c,
                                Err(e) => return e.into(),
                            };
                            tracing::info!(?codec, "snapcast: CodecHeader");
                            have_codec = true;
                            if events.send(Event::CodecHeader { header, codec }).await.is_err() {
                                return ConnectionError::EventsClosed;
                            }
                        }
                        Body::WireChunk(chunk) => {
                            if !have_codec {
                                continue;
                            }
                            match events.try_send(Event::WireChunk(chunk)) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    dropped_chunks += 1;
                                    if dropped_chunks.is_power_of_two() {
                                        tracing::warn!(dropped_chunks, "snapcast: event channel full, WireChunk dropped");
                                    }
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => {
                                    return ConnectionError::EventsClosed;
                                }
                            }
                        }
                        Body::Time(Time { latency }) => {
                            let Some(p) = pending.as_ref().filter(|p| p.id == msg.refers_to) else {
                                tracing::debug!(refers_to = msg.refers_to, "snapcast: Time reply to no pending request, ignored");
                                continue;
                            };
                            let c2s_us = latency.to_micros();
                            let s2c_us = received_us - msg.sent.to_micros();
                            let rtt_us = received_us - p.sent_us;
                            let t_us = [p.sent_us, p.sent_us.saturating_add(c2s_us), msg.sent.to_micros(), received_us];
                            let sample_us = server_clock.add_exchange(received_us, c2s_us, s2c_us);
                            let diff_us = server_clock.diff_us().unwrap_or(sample_us);
                            pending = None;
                            syncs_done = syncs_done.saturating_add(1);
                            next_sync = Instant::now() + if syncs_done < QUICK_SYNCS {
                                QUICK_SYNC_GAP
                            } else {
                                SYNC_PERIOD
                            };
                            if events.send(Event::TimeSync { sample_us, diff_us, rtt_us, t_us }).await.is_err() {
                                return ConnectionError::EventsClosed;
                            }
                        }
                        other => {
                            tracing::debug!(type_id = other.type_id(), "snapcast: message ignored");
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some(p) = &pending {
                    return ConnectionError::TimeSyncTimeout {
                        id: p.id,
                        timeout_ms: SYNC_TIMEOUT.as_millis(),
                    };
                }
                next_id = if next_id >= MAX_REQUEST_ID { 2 } else { next_id + 1 };
                let request = Message {
                    id: next_id,
                    ..Message::new(Body::Time(Time { latency: Timeval::ZERO }))
                };
                let sent_us = match send(&mut stream, request, clock).await {
                    Ok(t) => t,
                    Err(e) => return e,
                };
                pending = Some(Pending {
                    id: next_id,
                    sent_us,
                    deadline: Instant::now() + SYNC_TIMEOUT,
                });
            }
        }
    }
}

/// Stamps `msg.sent` with the client clock, writes it, and returns that time (µs).
async fn send(
    stream: &mut TcpStream,
    mut msg: Message,
    clock: &dyn Clock,
) -> Result<i64, ConnectionError> {
    let now_us = clock.now_us();
    msg.sent = Timeval::from_micros(now_us)?;
    let bytes = msg.encode()?;
    stream
        .write_all(&bytes)
        .await
        .map_err(|source| ConnectionError::Io {
            op: "write",
            source,
        })?;
    Ok(now_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_protocol::snapcast::audio_format::wav_header;
    use syncstream_protocol::snapcast::{BaseHeader, SampleFormat};
    use syncstream_shared::time::MonotonicClock;
    use tokio::net::TcpListener;

    fn chunk(sec: i32) -> Vec<u8> {
        Message::new(Body::WireChunk(WireChunk {
            timestamp: Timeval { sec, usec: 0 },
            payload: vec![0; 8],
        }))
        .encode()
        .unwrap()
    }

    /// A fake server: the Hello comes first with id 1; a chunk before the CodecHeader
    /// is dropped; an oversized header ends the connection with that error.
    #[tokio::test]
    async fn hello_codec_header_chunks_and_a_malformed_header() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = ConnectionConfig {
            server: listener.local_addr().unwrap().to_string(),
            hello: Hello::syncstream("test-id", "02:00:00:00:00:01", "host", "1.0"),
        };
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(run(config, Arc::new(MonotonicClock), tx));
        let (mut sock, _) = listener.accept().await.unwrap();

        let mut decoder = Decoder::new();
        let mut buf = [0u8; 4096];
        let first = loop {
            if let Some(m) = decoder.next_message().unwrap() {
                break m;
            }
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before its Hello");
            decoder.push(&buf[..n]);
        };
        assert_eq!(first.id, HELLO_ID);
        match first.body {
            Body::Hello(h) => assert_eq!(h.id, "test-id"),
            other => panic!("first message {other:?}"),
        }

        let format = SampleFormat {
            rate_hz: 48_000,
            bits: 16,
            channels: 2,
        };
        let header = CodecHeader {
            codec: "pcm".to_string(),
            payload: wav_header(format).to_vec(),
        };
        let mut out = chunk(1);
        out.extend(
            Message::new(Body::CodecHeader(header.clone()))
                .encode()
                .unwrap(),
        );
        out.extend(chunk(2));
        out.extend(
            BaseHeader {
                msg_type: 2,
                size: 2_000_000,
                ..BaseHeader::default()
            }
            .encode(),
        );
        sock.write_all(&out).await.unwrap();

        assert_eq!(
            rx.recv().await,
            Some(Event::CodecHeader {
                header,
                codec: StreamCodec::Pcm(format)
            })
        );
        match rx.recv().await {
            Some(Event::WireChunk(c)) => assert_eq!(c.timestamp.sec, 2),
            other => panic!("expected the second chunk, got {other:?}"),
        }
        match task.await.unwrap() {
            ConnectionError::Protocol(e) => assert!(e.is_fatal(), "{e}"),
            other => panic!("ended with {other}"),
        }
    }

    #[tokio::test]
    async fn connection_refused_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = ConnectionConfig {
            server: format!("127.0.0.1:{port}"),
            hello: Hello::syncstream("test-id", "02:00:00:00:00:01", "host", "1.0"),
        };
        let (tx, _rx) = mpsc::channel(1);
        let err = run(config, Arc::new(MonotonicClock), tx).await;
        assert!(matches!(err, ConnectionError::Connect { .. }), "{err}");
    }
}
