//! The `cast` backend: plays on a Chromecast / Google Cast device (feature `cast`).
//!
//! The receiver serves its output as an endless WAV over HTTP ([`stream`]) and has the
//! Cast device play it: a Cast v2 session ([`control`]: 4-byte big-endian length +
//! protobuf `CastMessage` over TLS on port 8009) launches the Default Media Receiver
//! and LOADs the stream URL. The device is found by friendly name over mDNS, or
//! given as `host[:port]` ([`discover`]).
//!
//! Timing: a render thread paced by the clock pulls 20 ms blocks (48 kHz stereo); a
//! block's DAC time is the moment it is handed to the stream. The Cast device's own
//! buffering (seconds) is latency the receiver's microphone measures and corrects,
//! like any other output's.
//!
//! Volume: [`Sink::has_hardware_volume`] is true; [`Sink::set_volume`] sets the Cast
//! device's own volume level and mute.

pub mod control;
pub mod discover;
pub mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use syncstream_shared::time::samples_to_us;

use super::{AudioError, BackendConfig, RenderFn, Sink, StreamFormat};
use control::Session;
use discover::CastTarget;
use stream::{HttpStream, PcmRing};

const BACKEND: &str = "cast";
/// Frames per render block (20 ms at 48 kHz).
pub const BLOCK_FRAMES: usize = 960;
/// Seconds of audio the stream's ring holds for HTTP clients.
const RING_SECONDS: usize = 4;
/// Environment variable with the HTTP stream's port (unset or 0: any free port).
pub const HTTP_PORT_ENV: &str = "SYNCSTREAM_CAST_HTTP_PORT";

/// The render thread: pulls a block every 20 ms of clock time into the ring.
struct RenderThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl RenderThread {
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for RenderThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Plays on a Cast device (see the module docs).
pub struct CastSink {
    cfg: BackendConfig,
    target: String,
    volume: Option<(f64, bool)>,
    http: Option<HttpStream>,
    render: Option<RenderThread>,
    session: Option<Session>,
}

/// Opens the `cast` sink for `cfg.device`: a Cast device's friendly name (mDNS) or
/// `host[:port]` / `ip[:port]` (port 8009 by default). Nothing is contacted until
/// [`Sink::start`]. Errors: no device given.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    let target = cfg
        .device
        .clone()
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| {
            AudioError::new(
                BACKEND,
                "(none)",
                "no Cast device given: set the target (a friendly name or host[:port])",
            )
        })?;
    Ok(Box::new(CastSink {
        cfg: cfg.clone(),
        target: target.trim().to_string(),
        volume: None,
        http: None,
        render: None,
        session: None,
    }))
}

impl CastSink {
    fn err(&self, reason: impl ToString) -> AudioError {
        AudioError::new(BACKEND, self.target.clone(), reason)
    }

    /// The HTTP stream's port while started.
    pub fn http_port(&self) -> Option<u16> {
        self.http.as_ref().map(HttpStream::port)
    }

    fn start_inner(&mut self, mut render: RenderFn) -> Result<(), AudioError> {
        let target: CastTarget =
            discover::resolve(&self.target, discover::MDNS_WAIT).map_err(|e| self.err(e))?;
        let port = match std::env::var(HTTP_PORT_ENV) {
            Ok(p) if !p.trim().is_empty() => p
                .trim()
                .parse::<u16>()
                .map_err(|_| self.err(format!("{HTTP_PORT_ENV}={p} is not a port number")))?,
            _ => 0,
        };
        let ring = Arc::new(PcmRing::new(RING_SECONDS * stream::RATE as usize));
        let http = HttpStream::start(ring.clone(), port)
            .map_err(|e| self.err(format!("cannot serve the HTTP stream on port {port}: {e}")))?;
        let local_ip = local_ip_towards(target.addr)
            .map_err(|e| self.err(format!("no local address routes to {}: {e}", target.addr)))?;
        let url = format!(
            "http://{}{}",
            std::net::SocketAddr::new(local_ip, http.port()),
            stream::PATH
        );
        self.http = Some(http);

        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let clock = self.cfg.clock.clone();
        let channels = stream::CHANNELS as usize;
        let handle = std::thread::Builder::new()
            .name("cast-render".into())
            .spawn(move || {
                let mut buf = vec![0.0f32; BLOCK_FRAMES * channels];
                let start = clock.now_us();
                let mut frames: i64 = 0;
                while !stop2.load(Ordering::Relaxed) {
                    render(&mut buf, start + samples_to_us(frames, stream::RATE));
                    ring.push(&buf);
                    frames += BLOCK_FRAMES as i64;
                    let wait = start + samples_to_us(frames, stream::RATE) - clock.now_us();
                    if wait > 0 {
                        std::thread::sleep(Duration::from_micros(wait as u64));
                    }
                }
            })
            .map_err(|e| self.err(format!("cannot start the render thread: {e}")))?;
        self.render = Some(RenderThread {
            stop,
            handle: Some(handle),
        });

        let session = Session::open(&target, &url).map_err(|e| self.err(e))?;
        if let Some((level, muted)) = self.volume {
            session.set_volume(level, muted).map_err(|e| self.err(e))?;
        }
        self.session = Some(session);
        Ok(())
    }
}

/// The local address the OS routes towards `peer` (a connected UDP socket's
/// address; nothing is sent).
fn local_ip_towards(peer: std::net::SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let bind: std::net::SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind)?;
    sock.connect(peer)?;
    Ok(sock.local_addr()?.ip())
}

impl Sink for CastSink {
    /// Finds the device, starts the HTTP stream and the render thread, and has the
    /// device play the stream. Errors (named `cast`, with the target): not found by
    /// mDNS, connection refused, TLS failure, LAUNCH or LOAD failed, port taken.
    fn start(&mut self, render: RenderFn) -> Result<(), AudioError> {
        self.stop()?;
        let r = self.start_inner(render);
        if r.is_err() {
            self.stop()?;
        }
        r
    }

    /// Ends the Cast session (STOP), then the render thread and the HTTP server.
    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some(mut s) = self.session.take() {
            s.stop();
        }
        if let Some(mut r) = self.render.take() {
            r.stop();
        }
        if let Some(mut h) = self.http.take() {
            h.stop();
        }
        Ok(())
    }

    /// 48 kHz stereo, whatever the configuration asks (the stream's format).
    fn format(&self) -> StreamFormat {
        StreamFormat {
            sample_rate: stream::RATE,
            channels: stream::CHANNELS,
        }
    }

    fn has_hardware_volume(&self) -> bool {
        true
    }

    /// Sets the Cast device's volume level (`volume`, 0..=1) and mute; before
    /// `start` the values are kept and applied once the session runs. Errors: the
    /// device rejected it, did not answer in 5 s, or the session has ended.
    fn set_volume(&mut self, volume: f64, muted: bool) -> Result<(), AudioError> {
        self.volume = Some((volume, muted));
        match &self.session {
            Some(s) => s.set_volume(volume, muted).map_err(|e| self.err(e)),
            None => Ok(()),
        }
    }

    /// Why the Cast session ended (the connection dropped, the app or session is
    /// gone, playback went IDLE with a reason), naming the device.
    fn failure(&self) -> Option<String> {
        self.session.as_ref().and_then(Session::failure)
    }
}

impl Drop for CastSink {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
