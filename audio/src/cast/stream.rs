//! The HTTP audio stream a Cast device plays: `GET /stream.wav` serves an endless WAV
//! (48 kHz, 2 channels, 16-bit little-endian PCM; RIFF and data sizes 0xFFFFFFFF)
//! followed by the live audio from the moment the client connects.
//!
//! The render thread writes into a [`PcmRing`], a preallocated lock-free broadcast
//! ring: it never blocks on or allocates for HTTP clients. Each client keeps its own
//! read position; a client that falls more than the ring's length behind skips ahead
//! and the frames it lost are counted ([`PcmRing::dropped_frames`]).
//!
//! The server is axum on a current-thread tokio runtime in its own thread.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

/// Sample rate of the stream, Hz.
pub const RATE: u32 = 48_000;
/// Channels of the stream (interleaved).
pub const CHANNELS: u16 = 2;
/// Path of the stream on the HTTP server.
pub const PATH: &str = "/stream.wav";
/// How long a client waits for new audio before it looks again.
const CLIENT_POLL: Duration = Duration::from_millis(10);

/// The 44-byte header of an endless WAV: PCM, [`RATE`] Hz, [`CHANNELS`] channels,
/// 16 bits; the RIFF and data chunk sizes are 0xFFFFFFFF ("unknown, streaming").
pub fn wav_header() -> [u8; 44] {
    let mut h = [0u8; 44];
    let block_align = CHANNELS * 2;
    let byte_rate = RATE * block_align as u32;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    h
}

/// Converts a sample (nominally -1..=1; clipped) to 16-bit PCM.
fn to_i16(x: f32) -> i16 {
    let x = if x.is_nan() { 0.0 } else { x.clamp(-1.0, 1.0) };
    (x * 32767.0).round() as i16
}

/// A single-writer, many-reader ring of stereo 16-bit frames (a seqlock per range:
/// every frame is an atomic, so a reader overtaken by the writer gets detectably
/// stale data, never undefined behaviour).
pub struct PcmRing {
    /// One stereo frame each: left in the low 16 bits, right in the high 16 bits.
    frames: Box<[AtomicU32]>,
    /// Frames the writer has started writing (announced before the data).
    writing: AtomicU64,
    /// Frames written and published.
    written: AtomicU64,
    /// Frames clients lost by falling behind.
    dropped: AtomicU64,
}

impl PcmRing {
    /// A ring of `capacity_frames` stereo frames (all allocated here).
    pub fn new(capacity_frames: usize) -> Self {
        let capacity_frames = capacity_frames.max(1);
        Self {
            frames: (0..capacity_frames).map(|_| AtomicU32::new(0)).collect(),
            writing: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn capacity(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Appends interleaved stereo f32 samples (converted to 16-bit). Called by the
    /// single render thread only; never blocks and never allocates.
    pub fn push(&self, interleaved: &[f32]) {
        let n = (interleaved.len() / 2) as u64;
        let w = self.written.load(Ordering::Relaxed);
        self.writing.store(w + n, Ordering::Relaxed);
        fence(Ordering::Release);
        let cap = self.capacity();
        for (i, fr) in interleaved.chunks_exact(2).enumerate() {
            let l = to_i16(fr[0]) as u16 as u32;
            let r = to_i16(fr[1]) as u16 as u32;
            self.frames[((w + i as u64) % cap) as usize].store(l | (r << 16), Ordering::Relaxed);
        }
        self.written.store(w + n, Ordering::Release);
    }

    /// Frames published so far (the position a new client starts from).
    pub fn written_frames(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Frames clients lost because they read too slowly.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Appends the frames from `*pos` to the newest (as little-endian 16-bit PCM
    /// bytes) to `out` and advances `*pos`. A reader more than the ring behind
    /// skips ahead; the frames it skipped are counted as dropped.
    pub fn read_into(&self, pos: &mut u64, out: &mut Vec<u8>) {
        let cap = self.capacity();
        let w = self.written.load(Ordering::Acquire);
        if w <= *pos {
            return;
        }
        if w - *pos > cap {
            let skip_to = w - cap;
            self.dropped.fetch_add(skip_to - *pos, Ordering::Relaxed);
            *pos = skip_to;
        }
        let start = out.len();
        for p in *pos..w {
            let v = self.frames[(p % cap) as usize].load(Ordering::Relaxed);
            out.extend_from_slice(&v.to_le_bytes());
        }
        // Frames the writer may have overwritten while they were copied.
        fence(Ordering::Acquire);
        let writing = self.writing.load(Ordering::Relaxed);
        let valid_from = writing.saturating_sub(cap);
        if valid_from > *pos {
            let torn = (valid_from - *pos).min(w - *pos);
            self.dropped.fetch_add(torn, Ordering::Relaxed);
            out.drain(start..start + torn as usize * 4);
        }
        *pos = w;
    }
}

struct ServerState {
    ring: Arc<PcmRing>,
    stop: Arc<AtomicBool>,
}

/// The HTTP server that serves [`PATH`].
pub struct HttpStream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpStream {
    /// Binds `0.0.0.0:port` (0: any free port) and serves `ring` in a thread.
    /// Errors: the port is taken, or no thread/runtime could be started.
    pub fn start(ring: Arc<PcmRing>, port: u16) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(ServerState {
            ring,
            stop: stop.clone(),
        });
        let app = Router::new()
            .route(PATH, get(serve_stream))
            .with_state(state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cast-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                tracing::warn!("cast: HTTP stream server ended: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                // Dropping the runtime ends every client connection.
            })?;
        Ok(Self {
            addr,
            stop,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops the server and ends every client's stream.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpStream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One client's stream: the WAV header, then the live PCM from the ring.
async fn serve_stream(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let pos = state.ring.written_frames();
    tracing::info!("cast: a client connected to {PATH}");
    let header = Bytes::copy_from_slice(&wav_header());
    let pcm = futures::stream::unfold((state, pos), |(state, mut pos)| async move {
        let mut buf = Vec::new();
        loop {
            if state.stop.load(Ordering::Relaxed) {
                return None;
            }
            state.ring.read_into(&mut pos, &mut buf);
            if !buf.is_empty() {
                return Some((Ok::<_, io::Error>(Bytes::from(buf)), (state, pos)));
            }
            tokio::time::sleep(CLIENT_POLL).await;
        }
    });
    let body = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, io::Error>(header) }),
        pcm,
    );
    (
        [
            (header::CONTENT_TYPE, "audio/wav"),
            (header::CACHE_CONTROL, "no-cache, no-store"),
        ],
        Body::from_stream(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_reads_what_was_pushed_and_counts_overruns() {
        let ring = PcmRing::new(4);
        let mut pos = 0;
        let mut out = Vec::new();
        ring.push(&[0.5, -0.5, 1.0, -1.0]);
        ring.read_into(&mut pos, &mut out);
        assert_eq!(pos, 2);
        assert_eq!(
            out,
            [16384i16, -16384, 32767, -32767]
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<u8>>()
        );
        // 6 frames more: the reader is 6 behind a ring of 4 and loses 2.
        ring.push(&[0.0; 12]);
        out.clear();
        ring.read_into(&mut pos, &mut out);
        assert_eq!(pos, 8);
        assert_eq!(out.len(), 4 * 4);
        assert_eq!(ring.dropped_frames(), 2);
    }

    #[test]
    fn header_is_an_endless_48k_stereo_16bit_wav() {
        let h = wav_header();
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(&h[4..8], &[0xff; 4]);
        assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 48_000);
        assert_eq!(u32::from_le_bytes(h[28..32].try_into().unwrap()), 192_000);
        assert_eq!(&h[40..44], &[0xff; 4]);
    }
}
