//! The source-window HTTP server (axum).
//!
//! - `GET /api/v1/window?start_us=<i64>&duration_ms=<1..=10000>[&format=f32|wav][&stream=NAME]`:
//!   source audio for that span from the stream's rolling buffer (stream `default`
//!   unless named; 404 for an unknown stream), mono, 48 kHz. Default body:
//!   little-endian f32 samples (`application/octet-stream`), with the PTS of the first
//!   sample in the `x-syncstream-start-us` header and the rate in
//!   `x-syncstream-sample-rate`; `format=wav` returns a WAV file instead.
//!   Errors: 400 for bad parameters, 410 for a span older than the buffer, 425 for a
//!   span not yet buffered; the body is `{"error": "..."}`.
//! - `GET /api/v1/status`: JSON with the buffer span, the playout delay in effect
//!   (`playout_delay`: `ms`, `max_ms`, and `grown_for`, the device whose output latency
//!   made it grow), connected receivers and the sync controller's per-device state.
//!
//! [`serve`] bounds what a client can hold: a request head must arrive within
//! [`HEADER_READ_TIMEOUT`] (idle and half-open connections are closed after it) and
//! hold at most [`MAX_HEADER_BYTES`]; a body at most [`MAX_REQUEST_BODY_BYTES`]; a
//! request at most [`REQUEST_TIMEOUT`]; an answer the client stops reading at most
//! [`WRITE_STALL_TIMEOUT`] without progress; at most [`MAX_CONNECTIONS`] connections.

use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::controller::SyncController;
use crate::rolling_buffer::WindowError;
use crate::stream_server::{Directory, DEFAULT_STREAM};
use crate::streams::StreamSet;
use syncstream_shared::time::STREAM_SAMPLE_RATE;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The streams (their source audio).
    pub streams: Arc<StreamSet>,
    /// Connected receivers.
    pub hub: Arc<Directory>,
    /// Controller state.
    pub controller: Arc<Mutex<SyncController>>,
}

#[derive(Debug, Deserialize)]
struct WindowQuery {
    start_us: Option<String>,
    duration_ms: Option<String>,
    format: Option<String>,
    stream: Option<String>,
}

/// A parsed `GET /api/v1/window` query (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRequest {
    /// PTS the window starts at, µs (transmitter clock).
    pub start_us: i64,
    /// Length of the window, ms (not checked here: the rolling buffer allows
    /// 1..=[`crate::rolling_buffer::MAX_WINDOW_MS`]).
    pub duration_ms: u64,
    /// `format=wav`: a WAV file instead of raw little-endian f32 samples.
    pub wav: bool,
    /// The stream asked for (`None`: [`DEFAULT_STREAM`]).
    pub stream: Option<String>,
}

impl WindowRequest {
    /// Parses the raw query string of a window request (`start_us=...&duration_ms=...`,
    /// URL-encoded, without the `?`). Never panics.
    ///
    /// Errors (the text of the 400 answer): a query that is not URL-encoded pairs, a
    /// missing or non-integer `start_us` or `duration_ms`, or a `format` other than
    /// `f32` or `wav`.
    pub fn parse(query: &str) -> Result<Self, String> {
        let q: WindowQuery =
            serde_urlencoded::from_str(query).map_err(|e| format!("query: {e}"))?;
        let start_us = match q.start_us.as_deref().map(str::parse::<i64>) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(format!("start_us: {e}")),
            None => return Err("start_us is required (µs, transmitter clock)".into()),
        };
        let duration_ms = match q.duration_ms.as_deref().map(str::parse::<u64>) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(format!("duration_ms: {e}")),
            None => return Err("duration_ms is required".into()),
        };
        let wav = match q.format.as_deref() {
            None | Some("f32") => false,
            Some("wav") => true,
            Some(other) => {
                return Err(format!(
                    "format '{}' (expected f32 or wav)",
                    other.chars().take(64).collect::<String>()
                ))
            }
        };
        Ok(Self {
            start_us,
            duration_ms,
            wav,
            stream: q.stream,
        })
    }
}

fn error(status: StatusCode, msg: impl ToString) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": msg.to_string() })),
    )
        .into_response()
}

async fn window(State(st): State<HttpState>, RawQuery(query): RawQuery) -> Response {
    let q = match WindowRequest::parse(query.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (start_us, duration_ms, wav) = (q.start_us, q.duration_ms, q.wav);
    let name = q.stream.as_deref().unwrap_or(DEFAULT_STREAM);
    let Some(buffer) = st.streams.buffer(name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "stream: no stream named '{}'",
                name.chars().take(64).collect::<String>()
            ),
        );
    };
    let result = buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .window(start_us, duration_ms);
    let (first_us, samples) = match result {
        Ok(v) => v,
        Err(e @ WindowError::BadDuration(_)) => return error(StatusCode::BAD_REQUEST, e),
        Err(e @ WindowError::TooOld { .. }) => return error(StatusCode::GONE, e),
        Err(e @ WindowError::NotYetAvailable { .. }) => return error(StatusCode::TOO_EARLY, e),
    };
    let body = if wav {
        wav_bytes(&samples)
    } else {
        samples
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    // Counted by tools/arm_cost/receiver_cost.sh (measurement traffic per receiver).
    tracing::debug!(
        bytes = body.len(),
        start_us,
        duration_ms,
        "source window served"
    );
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if wav {
            "audio/wav"
        } else {
            "application/octet-stream"
        }),
    );
    h.insert("x-syncstream-start-us", HeaderValue::from(first_us));
    h.insert(
        "x-syncstream-sample-rate",
        HeaderValue::from(STREAM_SAMPLE_RATE),
    );
    resp
}

fn wav_bytes(samples: &[f32]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: STREAM_SAMPLE_RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut cur = std::io::Cursor::new(Vec::new());
    if let Ok(mut w) = hound::WavWriter::new(&mut cur, spec) {
        for &s in samples {
            let _ = w.write_sample(s);
        }
        let _ = w.finalize();
    }
    cur.into_inner()
}

async fn status(State(st): State<HttpState>) -> Response {
    let (oldest_us, newest_us) = st
        .streams
        .buffer(DEFAULT_STREAM)
        .map(|b| {
            b.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .span_us()
        })
        .unwrap_or((0, 0));
    let devices = st
        .controller
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .snapshot();
    let playout = st.hub.playout();
    let grown_for = playout
        .grown_for()
        .map(|(device, needed_ms)| serde_json::json!({ "device": device, "needed_ms": needed_ms }));
    Json(serde_json::json!({
        "buffer": { "oldest_us": oldest_us, "newest_us": newest_us, "sample_rate": STREAM_SAMPLE_RATE },
        "playout_delay": {
            "ms": playout.current_ms(),
            "max_ms": playout.max_ms(),
            "grown_for": grown_for,
        },
        "receivers": st.hub.clients(),
        "streams": st.streams.list(),
        "devices": devices,
    }))
    .into_response()
}

/// How long a client may take to send a request's head; also how long an idle
/// keep-alive connection (or one that never sends anything) stays open.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a request may take, its body included (a slow body gets 408).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest request body, bytes (bigger ones get 413 before they are read); the
/// control API's own limit ([`crate::control::error::MAX_BODY_BYTES`]) is below it.
pub const MAX_REQUEST_BODY_BYTES: usize = 256 * 1024;
/// Largest request head (request line and headers), bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most HTTP connections open at once (WebSockets included); more are closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a write to a client may make no progress (it stopped reading: its
/// windows of seconds of audio, pipelined, would otherwise hold a connection slot and
/// their buffers for ever) before the connection is closed (issue 14).
pub const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection whose writes fail with `TimedOut` once one has waited
/// [`WRITE_STALL_TIMEOUT`] without the client taking a byte; any progress restarts
/// the clock. Reads pass through.
struct StallGuard<T> {
    io: T,
    /// Runs while a write waits (`None`: the last write made progress).
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    fn new(io: T) -> Self {
        Self { io, stalled: None }
    }

    /// `poll` of a write made progress (or failed): the clock stops. It waits: the
    /// clock runs, and once it ran out the write fails.
    fn watch<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<R>>,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::future::Future;
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {WRITE_STALL_TIMEOUT:?}"),
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `app` with the request limits: [`MAX_REQUEST_BODY_BYTES`] and [`REQUEST_TIMEOUT`].
pub fn with_limits(app: Router) -> Router {
    app.layer(axum::middleware::from_fn(request_timeout))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
}

async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {REQUEST_TIMEOUT:?}"),
        ),
    }
}

/// Serves `app` (see [`with_limits`]) on `listener` over HTTP/1.1 with WebSocket
/// upgrades, forever: a connection must send each request head within
/// [`HEADER_READ_TIMEOUT`] (so idle and half-open connections are closed), a head may
/// hold at most [`MAX_HEADER_BYTES`], a client that stops reading is dropped after
/// [`WRITE_STALL_TIMEOUT`], and at most [`MAX_CONNECTIONS`] are open.
///
/// Errors: none; a failed accept is logged and retried.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) {
    accept_loop(listener, "HTTP", move |stream, peer| {
        serve_connection(stream, app.clone(), peer)
    })
    .await
}

/// Accepts connections on `listener` forever and runs `handle` on each in a task of
/// its own, at most [`MAX_CONNECTIONS`] at once (more are closed at once); `what`
/// names the service in logs. A failed accept is logged and retried after 100 ms.
pub async fn accept_loop<F, Fut>(listener: tokio::net::TcpListener, what: &'static str, handle: F)
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("{what}: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "{what}: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let connection = handle(stream, peer);
        tokio::spawn(async move {
            let _slot = slot;
            connection.await;
        });
    }
}

/// Serves one accepted connection (`io`: TCP, or TLS over it) from `peer` with `app`:
/// HTTP/1.1 with WebSocket upgrades, [`HEADER_READ_TIMEOUT`] per request head, heads of
/// at most [`MAX_HEADER_BYTES`], dropped when the client stops reading for
/// [`WRITE_STALL_TIMEOUT`]. Returns when the connection closes.
pub async fn serve_connection<I>(io: I, app: Router, peer: std::net::SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let io = hyper_util::rt::TokioIo::new(StallGuard::new(io));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES);
    if let Err(e) = builder.serve_connection(io, service).with_upgrades().await {
        tracing::debug!(%peer, "HTTP connection: {e}");
    }
}

/// The router with every route.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/api/v1/window", get(window))
        .route("/api/v1/status", get(status))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_queries_parse_or_name_the_problem() {
        let q =
            WindowRequest::parse("start_us=-5&duration_ms=100&format=wav&stream=radio").unwrap();
        assert_eq!(
            q,
            WindowRequest {
                start_us: -5,
                duration_ms: 100,
                wav: true,
                stream: Some("radio".into())
            }
        );
        assert!(
            !WindowRequest::parse("duration_ms=1&start_us=0")
                .unwrap()
                .wav
        );
        for (query, needle) in [
            ("", "start_us is required"),
            ("start_us=1", "duration_ms is required"),
            ("start_us=x&duration_ms=1", "start_us"),
            ("start_us=1&duration_ms=-1", "duration_ms"),
            ("start_us=1&duration_ms=1&format=mp3", "format 'mp3'"),
            ("start_us=1&start_us=2&duration_ms=1", "query"),
        ] {
            let e = WindowRequest::parse(query).unwrap_err();
            assert!(e.contains(needle), "{query}: {e}");
        }
    }
}
