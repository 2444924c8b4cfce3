//! The Cast v2 control session with a Cast device (the sender side).
//!
//! Wire format (Cast v2): TLS on the device's port 8009; every message is a 4-byte
//! big-endian length followed by a protobuf `CastMessage` (protocol version, source
//! and destination ids, namespace, a UTF-8 JSON or binary payload). rust_cast's
//! [`MessageManager`] does the framing and the protobuf. Namespaces used:
//! `urn:x-cast:com.google.cast.tp.connection` (CONNECT/CLOSE of virtual connections),
//! `.tp.heartbeat` (PING/PONG), `.receiver` (LAUNCH, STOP, SET_VOLUME,
//! RECEIVER_STATUS) and `.media` (LOAD, MEDIA_STATUS).
//!
//! The session: connect (TLS; Cast devices present self-signed certificates, so the
//! certificate is not verified, as every Cast sender does), CONNECT to `receiver-0`,
//! LAUNCH the Default Media Receiver (app id `CC1AD845`), CONNECT to its transport
//! id, LOAD the stream URL (`audio/wav`, stream type LIVE, autoplay). Then a control
//! thread answers PINGs, sends its own every 5 s, applies volume commands and
//! watches for the session ending.
//!
//! rust_cast's `CastDevice` is not used as is: it blocks without a timeout on every
//! read, panics on a LAUNCH reply without applications and allocates whatever length
//! a peer announces. Here reads poll with a timeout ([`FrameStream`] only hands whole
//! frames to the message manager, so a timeout never splits one) and frames are
//! limited to 64 KiB.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rust_cast::errors::Error as CastError;
use rust_cast::message_manager::{CastMessage, CastMessagePayload, MessageManager};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use serde_json::{json, Value};

use super::discover::CastTarget;

/// Namespace of virtual connections (CONNECT, CLOSE).
pub const NS_CONNECTION: &str = "urn:x-cast:com.google.cast.tp.connection";
/// Namespace of the heartbeat (PING, PONG).
pub const NS_HEARTBEAT: &str = "urn:x-cast:com.google.cast.tp.heartbeat";
/// Namespace of the receiver platform (LAUNCH, STOP, SET_VOLUME, RECEIVER_STATUS).
pub const NS_RECEIVER: &str = "urn:x-cast:com.google.cast.receiver";
/// Namespace of media playback (LOAD, MEDIA_STATUS).
pub const NS_MEDIA: &str = "urn:x-cast:com.google.cast.media";
/// App id of Google's Default Media Receiver.
pub const DEFAULT_MEDIA_RECEIVER: &str = "CC1AD845";
const SENDER_ID: &str = "sender-0";
const RECEIVER_ID: &str = "receiver-0";
/// Largest Cast v2 message accepted (the protocol's limit).
const MAX_FRAME: usize = 64 * 1024;
/// How long a read waits before the control loop looks at its commands again.
const POLL: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
const VOLUME_TIMEOUT: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(5);
/// Silence (no message at all, despite our PINGs) after which the device is gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(20);

/// A TLS stream that hands its reader whole Cast frames only: a read either returns
/// bytes of a complete frame or fails without consuming anything (a timeout, so the
/// caller can poll), and frames over 64 KiB are an error.
pub struct FrameStream {
    tls: StreamOwned<ClientConnection, TcpStream>,
    pending: Vec<u8>,
    frame: Vec<u8>,
    pos: usize,
}

impl FrameStream {
    fn fill_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.pending.len() >= 4 {
                let len = u32::from_be_bytes([
                    self.pending[0],
                    self.pending[1],
                    self.pending[2],
                    self.pending[3],
                ]) as usize;
                if len > MAX_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a Cast message of {len} bytes (the limit is {MAX_FRAME})"),
                    ));
                }
                if self.pending.len() >= 4 + len {
                    self.frame.clear();
                    self.frame.extend(self.pending.drain(..4 + len));
                    self.pos = 0;
                    return Ok(true);
                }
            }
            let mut buf = [0u8; 4096];
            match self.tls.read(&mut buf) {
                Ok(0) if self.pending.is_empty() => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed in the middle of a message",
                    ))
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for FrameStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.frame.len() && !self.fill_frame()? {
            return Ok(0);
        }
        let n = buf.len().min(self.frame.len() - self.pos);
        buf[..n].copy_from_slice(&self.frame[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for FrameStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tls.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tls.flush()
    }
}

/// Accepts the device's certificate (Cast devices' certificates are self-signed
/// device certificates; Cast senders do not verify them against a CA) but checks
/// the handshake signatures made with it.
#[derive(Debug)]
struct CastCertVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for CastCertVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects TCP and completes the TLS handshake.
fn connect_tls(addr: SocketAddr) -> Result<FrameStream, String> {
    let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(CONNECT_TIMEOUT))
        .and_then(|_| sock.set_write_timeout(Some(CONNECT_TIMEOUT)))
        .map_err(|e| format!("socket to {addr}: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CastCertVerifier(provider)))
        .with_no_client_auth();
    let conn = ClientConnection::new(Arc::new(config), ServerName::from(addr.ip()))
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    }
    tls.sock
        .set_read_timeout(Some(POLL))
        .map_err(|e| format!("socket to {addr}: {e}"))?;
    Ok(FrameStream {
        tls,
        pending: Vec::new(),
        frame: Vec::new(),
        pos: 0,
    })
}

/// A received message: namespace, source id and JSON payload.
struct Incoming {
    namespace: String,
    source: String,
    json: Value,
}

impl Incoming {
    fn typ(&self) -> &str {
        self.json.get("type").and_then(Value::as_str).unwrap_or("")
    }
    fn request_id(&self) -> Option<u64> {
        self.json.get("requestId").and_then(Value::as_u64)
    }
}

/// The connection: the message manager plus heartbeat bookkeeping.
struct Conn {
    mm: MessageManager<FrameStream>,
    last_rx: Instant,
    last_ping: Instant,
}

impl Conn {
    fn send(&self, namespace: &str, destination: &str, json: &Value) -> Result<(), String> {
        self.mm
            .send(CastMessage {
                namespace: namespace.to_string(),
                source: SENDER_ID.to_string(),
                destination: destination.to_string(),
                payload: CastMessagePayload::String(json.to_string()),
            })
            .map_err(|e| format!("sending to the device failed: {e}"))
    }

    /// Sends `json` with a fresh `requestId`, which it returns.
    fn request(&self, namespace: &str, destination: &str, mut json: Value) -> Result<u64, String> {
        let id = u64::from(self.mm.generate_request_id().get());
        json["requestId"] = json!(id);
        self.send(namespace, destination, &json)?;
        Ok(id)
    }

    /// Waits up to the poll period for one message; answers PINGs and sends ours.
    /// Errors: the connection is gone (closed, reset, TLS error, silent too long).
    fn poll(&mut self) -> Result<Option<Incoming>, String> {
        let now = Instant::now();
        if now.duration_since(self.last_ping) >= PING_EVERY {
            self.last_ping = now;
            self.send(NS_HEARTBEAT, RECEIVER_ID, &json!({"type": "PING"}))?;
        }
        if now.duration_since(self.last_rx) >= SILENCE_LIMIT {
            return Err(format!(
                "no message from the device for {} s (heartbeat lost)",
                SILENCE_LIMIT.as_secs()
            ));
        }
        let msg = match self.mm.receive() {
            Ok(m) => m,
            Err(CastError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(CastError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err("the device closed the connection".into())
            }
            Err(CastError::Protobuf(e)) => {
                tracing::warn!("cast: ignoring a malformed message: {e}");
                self.last_rx = Instant::now();
                return Ok(None);
            }
            Err(e) => return Err(format!("connection lost: {e}")),
        };
        self.last_rx = Instant::now();
        let CastMessagePayload::String(text) = msg.payload else {
            return Ok(None);
        };
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!(
                "cast: ignoring a message that is not JSON on {}",
                msg.namespace
            );
            return Ok(None);
        };
        let m = Incoming {
            namespace: msg.namespace,
            source: msg.source,
            json,
        };
        if m.namespace == NS_HEARTBEAT && m.typ() == "PING" {
            self.send(NS_HEARTBEAT, &m.source, &json!({"type": "PONG"}))?;
            return Ok(None);
        }
        Ok(Some(m))
    }

    /// Polls until `f` maps a message to a result (or an error), or `timeout` passes.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Incoming) -> Option<Result<T, String>>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(m) = self.poll()? {
                if let Some(r) = f(&m) {
                    return r;
                }
            }
        }
        Err(format!("no answer to {what} in {} s", timeout.as_secs()))
    }
}

/// The application entry `app_id` of a RECEIVER_STATUS, as (sessionId, transportId).
fn find_app(
    status: &Value,
    app_id: Option<&str>,
    session: Option<&str>,
) -> Option<(String, String)> {
    status
        .get("status")?
        .get("applications")?
        .as_array()?
        .iter()
        .find(|a| {
            app_id.is_none_or(|id| a.get("appId").and_then(Value::as_str) == Some(id))
                && session.is_none_or(|s| a.get("sessionId").and_then(Value::as_str) == Some(s))
        })
        .and_then(|a| {
            Some((
                a.get("sessionId")?.as_str()?.to_string(),
                a.get("transportId")?.as_str()?.to_string(),
            ))
        })
}

/// Why a MEDIA_STATUS says playback ended (IDLE with an idle reason), if it does.
fn media_ended(m: &Incoming) -> Option<String> {
    m.json.get("status")?.as_array()?.iter().find_map(|s| {
        let state = s.get("playerState").and_then(Value::as_str)?;
        let reason = s.get("idleReason").and_then(Value::as_str)?;
        (state == "IDLE").then(|| format!("playback stopped (IDLE, {reason})"))
    })
}

fn reason_of(m: &Incoming) -> String {
    let mut r = m.typ().to_string();
    for key in ["reason", "detailedErrorCode"] {
        if let Some(v) = m.json.get(key) {
            r.push_str(&format!(" {key}={v}"));
        }
    }
    r
}

enum Command {
    SetVolume {
        level: f64,
        muted: bool,
        reply: mpsc::Sender<Result<(), String>>,
    },
    Stop,
}

/// A running Cast session: the Default Media Receiver playing our stream, watched by
/// a control thread.
pub struct Session {
    device: String,
    commands: mpsc::Sender<Command>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    /// Connects to `target`, launches the Default Media Receiver and LOADs `url`
    /// (audio/wav, LIVE, autoplay), waiting up to 20 s for each step; then starts the
    /// control thread. Errors say which step failed and why (connection refused, TLS
    /// handshake, LAUNCH_ERROR, LOAD_FAILED, no answer, ...).
    pub fn open(target: &CastTarget, url: &str) -> Result<Session, String> {
        let stream = connect_tls(target.addr)?;
        let mut conn = Conn {
            mm: MessageManager::new(stream),
            last_rx: Instant::now(),
            last_ping: Instant::now(),
        };
        conn.send(
            NS_CONNECTION,
            RECEIVER_ID,
            &json!({"type": "CONNECT", "origin": {}, "userAgent": "SyncStream"}),
        )?;
        let launch = conn.request(
            NS_RECEIVER,
            RECEIVER_ID,
            json!({"type": "LAUNCH", "appId": DEFAULT_MEDIA_RECEIVER}),
        )?;
        let (session_id, transport_id) = conn.wait_for(LAUNCH_TIMEOUT, "LAUNCH", |m| {
            if m.namespace != NS_RECEIVER {
                return None;
            }
            match m.typ() {
                "RECEIVER_STATUS" => find_app(&m.json, Some(DEFAULT_MEDIA_RECEIVER), None).map(Ok),
                "LAUNCH_ERROR" | "INVALID_REQUEST" if m.request_id() == Some(launch) => {
                    Some(Err(format!(
                        "LAUNCH of the Default Media Receiver failed: {}",
                        reason_of(m)
                    )))
                }
                _ => None,
            }
        })?;
        conn.send(
            NS_CONNECTION,
            &transport_id,
            &json!({"type": "CONNECT", "origin": {}, "userAgent": "SyncStream"}),
        )?;
        let load = conn.request(
            NS_MEDIA,
            &transport_id,
            json!({
                "type": "LOAD",
                "sessionId": session_id,
                "media": {
                    "contentId": url,
                    "contentType": "audio/wav",
                    "streamType": "LIVE",
                    "metadata": {"metadataType": 0, "title": "SyncStream"},
                },
                "autoplay": true,
                "currentTime": 0,
            }),
        )?;
        conn.wait_for(LOAD_TIMEOUT, "LOAD", |m| {
            if m.namespace != NS_MEDIA || m.request_id() != Some(load) {
                return None;
            }
            match m.typ() {
                "MEDIA_STATUS" => Some(match media_ended(m) {
                    Some(why) => Err(format!("LOAD of {url} failed: {why}")),
                    None => Ok(()),
                }),
                _ => Some(Err(format!("LOAD of {url} failed: {}", reason_of(m)))),
            }
        })?;
        tracing::info!(
            "cast: \"{}\" ({}) plays {url} (session {session_id})",
            target.name,
            target.addr
        );
        let device = format!("Cast device \"{}\" ({})", target.name, target.addr);
        let failure = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel();
        let control = Control {
            conn,
            session_id,
            transport_id,
            device: device.clone(),
            failure: failure.clone(),
            pending: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("cast-control".into())
            .spawn(move || control.run(rx))
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(Session {
            device,
            commands: tx,
            failure,
            thread: Some(thread),
        })
    }

    /// Sets the device's volume `level` (0..=1) and mute, waiting up to 5 s for the
    /// device to confirm (RECEIVER_STATUS). Errors: the session ended, the device
    /// rejected the request, or no answer.
    pub fn set_volume(&self, level: f64, muted: bool) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        let level = if level.is_finite() {
            level.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.commands
            .send(Command::SetVolume {
                level,
                muted,
                reply,
            })
            .map_err(|_| self.ended())?;
        match answer.recv_timeout(VOLUME_TIMEOUT + POLL * 4) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err("no answer to SET_VOLUME".into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    fn ended(&self) -> String {
        self.failure()
            .unwrap_or_else(|| format!("the session with {} has ended", self.device))
    }

    /// Why the session ended on the device's side (naming the device), or `None`.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Stops the app on the device (STOP), closes the connection and the thread.
    pub fn stop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
    }
}

struct PendingVolume {
    ids: Vec<u64>,
    reply: mpsc::Sender<Result<(), String>>,
    deadline: Instant,
}

struct Control {
    conn: Conn,
    session_id: String,
    transport_id: String,
    device: String,
    failure: Arc<Mutex<Option<String>>>,
    pending: Vec<PendingVolume>,
}

impl Control {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let why = loop {
            match commands.try_recv() {
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    self.end_session();
                    return;
                }
                Ok(Command::SetVolume {
                    level,
                    muted,
                    reply,
                }) => match self.send_volume(level, muted) {
                    Ok(ids) => self.pending.push(PendingVolume {
                        ids,
                        reply,
                        deadline: Instant::now() + VOLUME_TIMEOUT,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e.clone()));
                        break e;
                    }
                },
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            self.pending.retain(|p| {
                let keep = now < p.deadline;
                if !keep {
                    let _ = p.reply.send(Err("no answer to SET_VOLUME".into()));
                }
                keep
            });
            match self.conn.poll() {
                Ok(Some(m)) => {
                    if let Some(why) = self.handle(&m) {
                        break why;
                    }
                }
                Ok(None) => {}
                Err(e) => break e,
            }
        };
        let why = format!("{}: {why}", self.device);
        tracing::warn!("cast: {why}");
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(why.clone());
        }
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(why.clone()));
        }
        // Keep the thread until stop(), so set_volume reports the failure.
        while let Ok(cmd) = commands.recv() {
            match cmd {
                Command::Stop => return,
                Command::SetVolume { reply, .. } => {
                    let _ = reply.send(Err(why.clone()));
                }
            }
        }
    }

    /// SET_VOLUME with the level, then SET_VOLUME with the mute (the protocol takes
    /// one of the two per request).
    fn send_volume(&self, level: f64, muted: bool) -> Result<Vec<u64>, String> {
        let a = self.conn.request(
            NS_RECEIVER,
            RECEIVER_ID,
            json!({"type": "SET_VOLUME", "volume": {"level": level}}),
        )?;
        let b = self.conn.request(
            NS_RECEIVER,
            RECEIVER_ID,
            json!({"type": "SET_VOLUME", "volume": {"muted": muted}}),
        )?;
        Ok(vec![a, b])
    }

    /// Handles one message; `Some(reason)` when the session has ended.
    fn handle(&mut self, m: &Incoming) -> Option<String> {
        if let Some(id) = m.request_id() {
            let rejected = m.typ() == "INVALID_REQUEST";
            if let Some(i) = self.pending.iter().position(|p| p.ids.contains(&id)) {
                if rejected {
                    let p = self.pending.remove(i);
                    let _ = p
                        .reply
                        .send(Err(format!("SET_VOLUME rejected: {}", reason_of(m))));
                } else if m.typ() == "RECEIVER_STATUS" {
                    let p = &mut self.pending[i];
                    p.ids.retain(|x| *x != id);
                    if p.ids.is_empty() {
                        let p = self.pending.remove(i);
                        let _ = p.reply.send(Ok(()));
                    }
                }
            }
        }
        match (m.namespace.as_str(), m.typ()) {
            (NS_CONNECTION, "CLOSE") if m.source == self.transport_id || m.source == RECEIVER_ID => {
                Some("the device closed the session's connection".into())
            }
            (NS_RECEIVER, "RECEIVER_STATUS") => {
                find_app(&m.json, None, Some(&self.session_id)).is_none().then(|| {
                    format!(
                        "the Cast session {} ended on the device (another app or sender took over, or it was stopped)",
                        self.session_id
                    )
                })
            }
            (NS_MEDIA, "MEDIA_STATUS") => media_ended(m),
            (NS_MEDIA, "LOAD_FAILED" | "LOAD_CANCELLED" | "ERROR") => {
                Some(format!("the device reported {}", reason_of(m)))
            }
            _ => None,
        }
    }

    /// STOP the app and CLOSE the virtual connections; answers are not awaited.
    fn end_session(&mut self) {
        let _ = self.conn.request(
            NS_RECEIVER,
            RECEIVER_ID,
            json!({"type": "STOP", "sessionId": self.session_id}),
        );
        let _ = self
            .conn
            .send(NS_CONNECTION, &self.transport_id, &json!({"type": "CLOSE"}));
        let _ = self
            .conn
            .send(NS_CONNECTION, RECEIVER_ID, &json!({"type": "CLOSE"}));
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err("the output stopped".into()));
        }
    }
}
