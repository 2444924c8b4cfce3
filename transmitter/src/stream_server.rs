//! The audio stream server: sends timestamped audio chunks to every connected
//! receiver over TCP and answers their clock-sync requests (see
//! [`syncstream_protocol::wire`] for the protocol).
//!
//! A connection must say hello and pass the pairing-key handshake
//! ([`StreamAuth`]) within [`HELLO_TIMEOUT`], in a frame of at most
//! [`MAX_INBOUND_FRAME_BYTES`] (receivers send only hellos and clock-sync requests),
//! with a valid device name. A name that another receiver process (another `instance`)
//! is streaming under is refused with a [`Frame::Refused`] that says so; the same
//! process reconnecting replaces its old connection. A connection that sends nothing
//! for [`IDLE_TIMEOUT`] (receivers ask the time 20 times a second) is dropped, so a
//! receiver that vanished does not hold its name. A receiver that stops taking audio
//! (a write blocked for [`WRITE_STALL_TIMEOUT`], or a full broadcast backlog of 512
//! chunks) is dropped: every chunk is encoded once and broadcast, and each connection
//! writes on its own task, so a slow receiver never delays the others.
//!
//! A connection that opens with a [`Frame::ClockHello`] carries clock-sync exchanges
//! only ([`serve_clock`]): answered at once, never queued behind audio.
//!
//! Several named streams share one timeline ([`crate::streams`]); a [`Directory`] says
//! which device plays which. When that changes, the connection sends a
//! [`Frame::StreamSwitch`] and the new stream's recent chunks, and goes on with its
//! live chunks: the receiver keeps its clock sync and offset.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use syncstream_protocol::auth::StreamAuth;
use syncstream_protocol::codec::CHUNK_FRAMES;
use syncstream_protocol::wire::{Codec, Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use syncstream_shared::names::check_device_name;
use syncstream_shared::time::{Clock, STREAM_CHANNELS, STREAM_SAMPLE_RATE};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tracing::{debug, info, warn};

use crate::playout_delay::PlayoutDelay;

/// The stream receivers play unless told otherwise (the transmitter's `--source`).
pub const DEFAULT_STREAM: &str = "default";
/// Most receivers streaming at once (the controller's bound on devices).
pub const MAX_RECEIVERS: usize = crate::controller::MAX_DEVICES;
/// Most stream and clock connections open at once (each receiver has two); more are
/// closed at once.
pub const MAX_CONNECTIONS: usize = 4 * MAX_RECEIVERS;
/// How long a new connection may take to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver that sends nothing for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write to a receiver that cannot finish for this long (the receiver stopped
/// reading, or its link is too slow for the stream, so the kernel's socket buffers
/// are full) drops the receiver: its backlog is bounded by those buffers, and the
/// other receivers never wait for it (each has its own task). It can reconnect.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel send buffer of each connection, bytes (Linux doubles it for its own
/// book-keeping): about 2 s of the 128 kbit/s Opus stream, far more than any
/// hiccup of a working link needs. With the receiver's own receive buffer (128 KiB by
/// default) it bounds what a stalled receiver holds before [`WRITE_STALL_TIMEOUT`].
pub const SEND_BUFFER_BYTES: usize = 32 * 1024;
/// Largest frame a receiver may send, bytes.
pub const MAX_INBOUND_FRAME_BYTES: usize = 4096;

/// A length-delimited codec limited to [`MAX_FRAME_BYTES`].
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// The transmitter's hello for the stream `default` in `codec` whose decoder lags by
/// `codec_delay_samples`, with sample 0 at PTS `epoch_us` and a playout delay of
/// `playout_delay_ms` (the simulator's single stream).
pub fn server_hello(
    codec: Codec,
    codec_delay_samples: u32,
    epoch_us: i64,
    playout_delay_ms: u32,
) -> Frame {
    Frame::ServerHello {
        protocol_version: PROTOCOL_VERSION,
        sample_rate: STREAM_SAMPLE_RATE,
        channels: STREAM_CHANNELS,
        codec,
        codec_delay_samples,
        epoch_us,
        playout_delay_ms,
        stream: DEFAULT_STREAM.to_string(),
    }
}

/// Which connection a hello opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloKind {
    /// A stream connection ([`Frame::ClientHello`]): audio and clock sync.
    Stream,
    /// A clock-sync connection ([`Frame::ClockHello`]).
    Clock,
}

/// A receiver's hello, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Which connection it opens.
    pub kind: HelloKind,
    /// The device name (valid).
    pub device: String,
    /// The receiver process's instance.
    pub instance: u64,
    /// The nonce for the handshake.
    pub client_nonce: syncstream_protocol::auth::Nonce,
}

/// A receiver's hello, checked: its kind, device name, process instance and nonce.
///
/// Errors: not a hello, another protocol version, or an invalid name; the message is
/// what the receiver is told.
pub fn check_hello(frame: &Frame) -> Result<Hello, String> {
    let (kind, protocol_version, device, instance, client_nonce) = match frame {
        Frame::ClientHello {
            protocol_version,
            device,
            instance,
            client_nonce,
        } => (
            HelloKind::Stream,
            protocol_version,
            device,
            instance,
            client_nonce,
        ),
        Frame::ClockHello {
            protocol_version,
            device,
            instance,
            client_nonce,
        } => (
            HelloKind::Clock,
            protocol_version,
            device,
            instance,
            client_nonce,
        ),
        _ => return Err("the first frame must be a ClientHello".into()),
    };
    if *protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {protocol_version}; this transmitter speaks {PROTOCOL_VERSION}"
        ));
    }
    check_device_name(device).map_err(|e| e.to_string())?;
    Ok(Hello {
        kind,
        device: device.clone(),
        instance: *instance,
        client_nonce: *client_nonce,
    })
}

/// An encoded audio chunk ready to send.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    /// Source sample index of its first frame.
    pub sample_index: u64,
    /// Encoded `Frame::Audio` body.
    pub frame: Bytes,
}

/// A connected receiver.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    /// Its process instance.
    pub instance: u64,
    /// Its address.
    pub peer: SocketAddr,
    /// Told to close when the same instance reconnects.
    kick: Arc<Notify>,
    /// Identifies the connection.
    connection: u64,
}

/// One stream's side of the server: its hello, the live chunks (broadcast to the
/// connections playing it) and the recent ones for receivers that join or switch.
pub struct StreamHub {
    name: String,
    codec: Codec,
    codec_delay_samples: u32,
    epoch_us: i64,
    playout: Arc<PlayoutDelay>,
    tx: broadcast::Sender<EncodedChunk>,
    /// Recent chunks, so a receiver that connects can start within its playout delay
    /// (as many as the largest delay it may grow to needs).
    history: Mutex<VecDeque<EncodedChunk>>,
    history_len: usize,
}

/// Stream chunks that span `playout_delay_ms`, plus two: what a hub keeps and sends a
/// receiver that joins.
pub fn chunks_for_ms(playout_delay_ms: u32) -> usize {
    (playout_delay_ms as usize * STREAM_SAMPLE_RATE as usize / 1000).div_ceil(CHUNK_FRAMES) + 2
}

impl StreamHub {
    /// The hub of stream `name`, in `codec` (decoder lag `codec_delay_samples`), sample
    /// 0 at PTS `epoch_us`, announcing the delay of `playout`, keeping enough recent
    /// chunks for late joiners at the largest delay `playout` may grow to.
    pub fn new(
        name: &str,
        codec: Codec,
        codec_delay_samples: u32,
        epoch_us: i64,
        playout: Arc<PlayoutDelay>,
    ) -> Arc<Self> {
        let (tx, _) = broadcast::channel(512);
        let history_len = chunks_for_ms(playout.max_ms());
        Arc::new(Self {
            name: name.to_string(),
            codec,
            codec_delay_samples,
            epoch_us,
            playout,
            tx,
            history: Mutex::new(VecDeque::with_capacity(history_len + 1)),
            history_len,
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hello a receiver playing this stream gets.
    pub fn hello(&self) -> Frame {
        Frame::ServerHello {
            protocol_version: PROTOCOL_VERSION,
            sample_rate: STREAM_SAMPLE_RATE,
            channels: STREAM_CHANNELS,
            codec: self.codec,
            codec_delay_samples: self.codec_delay_samples,
            epoch_us: self.epoch_us,
            playout_delay_ms: self.playout.current_ms(),
            stream: self.name.clone(),
        }
    }

    /// The frame that moves a connection to this stream.
    pub fn switch_frame(&self) -> Frame {
        Frame::StreamSwitch {
            stream: self.name.clone(),
            codec: self.codec,
            codec_delay_samples: self.codec_delay_samples,
            epoch_us: self.epoch_us,
        }
    }

    /// Publishes one chunk to every connection playing this stream.
    pub fn publish(&self, chunk: EncodedChunk) {
        {
            let mut h = lock(&self.history);
            h.push_back(chunk.clone());
            while h.len() > self.history_len {
                h.pop_front();
            }
        }
        let _ = self.tx.send(chunk);
    }

    /// The recent chunks that span the playout delay in effect (oldest first).
    fn backlog(&self) -> Vec<EncodedChunk> {
        let want = chunks_for_ms(self.playout.current_ms());
        let h = lock(&self.history);
        h.iter()
            .skip(h.len().saturating_sub(want))
            .cloned()
            .collect()
    }
}

/// Device → stream assignments (devices not named play [`DEFAULT_STREAM`]).
pub type Routes = Arc<BTreeMap<String, String>>;

/// The stream server's directory: the streams' hubs, which device plays which stream,
/// and the connected receivers. A change of routes reaches every connection, which
/// switches its receiver when its stream changed ([`Frame::StreamSwitch`]).
pub struct Directory {
    playout: Arc<PlayoutDelay>,
    hubs: Mutex<BTreeMap<String, Arc<StreamHub>>>,
    routes: watch::Sender<Routes>,
    clients: Mutex<BTreeMap<String, ClientEntry>>,
    next_connection: std::sync::atomic::AtomicU64,
}

impl Directory {
    /// An empty directory whose streams share the playout delay `playout`.
    pub fn new(playout: Arc<PlayoutDelay>) -> Arc<Self> {
        Arc::new(Self {
            playout,
            hubs: Mutex::new(BTreeMap::new()),
            routes: watch::channel(Routes::default()).0,
            clients: Mutex::new(BTreeMap::new()),
            next_connection: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// The playout delay every stream announces.
    pub fn playout(&self) -> &Arc<PlayoutDelay> {
        &self.playout
    }

    /// Adds (or replaces) a stream's hub.
    pub fn add_hub(&self, hub: Arc<StreamHub>) {
        lock(&self.hubs).insert(hub.name.clone(), hub);
        self.routes.send_modify(|_| {});
    }

    /// Removes a stream's hub; its receivers move to their route's fallback.
    pub fn remove_hub(&self, name: &str) {
        lock(&self.hubs).remove(name);
        self.routes.send_modify(|_| {});
    }

    /// Sets which device plays which stream (others play [`DEFAULT_STREAM`]).
    pub fn set_routes(&self, routes: BTreeMap<String, String>) {
        self.routes.send_replace(Arc::new(routes));
    }

    /// The hub `device` plays: its assigned stream, else [`DEFAULT_STREAM`], else the
    /// first stream; `None` without streams.
    pub fn route(&self, device: &str) -> Option<Arc<StreamHub>> {
        let routes = self.routes.borrow().clone();
        let hubs = lock(&self.hubs);
        routes
            .get(device)
            .and_then(|s| hubs.get(s))
            .or_else(|| hubs.get(DEFAULT_STREAM))
            .or_else(|| hubs.values().next())
            .cloned()
    }

    /// Names of the connected receivers.
    pub fn clients(&self) -> Vec<String> {
        lock(&self.clients).keys().cloned().collect()
    }

    /// Registers a receiver that said hello as `device`/`instance` from `peer`.
    ///
    /// Errors: another instance streams under that name (the message says from where),
    /// or [`MAX_RECEIVERS`] others stream already.
    fn register(
        &self,
        device: &str,
        instance: u64,
        peer: SocketAddr,
    ) -> Result<(u64, Arc<Notify>), String> {
        let mut clients = lock(&self.clients);
        if !clients.contains_key(device) && clients.len() >= MAX_RECEIVERS {
            return Err(format!(
                "this transmitter already serves {MAX_RECEIVERS} receivers, the most it can"
            ));
        }
        if let Some(old) = clients.get(device) {
            if old.instance != instance {
                return Err(format!(
                    "a receiver named '{device}' is already streaming from {}; give this one \
                     another --name",
                    old.peer
                ));
            }
            // The same receiver reconnecting: its old connection is stale.
            old.kick.notify_one();
        }
        let connection = self
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kick = Arc::new(Notify::new());
        clients.insert(
            device.to_string(),
            ClientEntry {
                instance,
                peer,
                kick: kick.clone(),
                connection,
            },
        );
        Ok((connection, kick))
    }

    fn unregister(&self, device: &str, connection: u64) {
        let mut clients = lock(&self.clients);
        if clients
            .get(device)
            .is_some_and(|c| c.connection == connection)
        {
            clients.remove(device);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts receivers on `listener` until the future is dropped; the connections are
/// owned by it, so dropping it (a transmitter that stops) ends every one of them.
///
/// Every connection must pass the pairing-key handshake `auth` (see
/// [`syncstream_protocol::auth::StreamAuth`]) before anything is served on it.
pub async fn serve(
    listener: TcpListener,
    dir: Arc<Directory>,
    auth: Arc<StreamAuth>,
    clock: Arc<dyn Clock>,
) {
    let mut clients = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) if clients.len() >= MAX_CONNECTIONS => {
                    warn!(%peer, "{MAX_CONNECTIONS} stream connections open; closing a new one");
                    drop(sock);
                }
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    // A fixed send buffer (no autotuning up to megabytes): a receiver
                    // that stops reading blocks the writes after seconds, not minutes.
                    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(SEND_BUFFER_BYTES);
                    let dir = dir.clone();
                    let auth = auth.clone();
                    let clock = clock.clone();
                    clients.spawn(async move {
                        if let Err(e) = handle_client(sock, peer, dir, auth, clock).await {
                            info!(%peer, "stream client left: {e:#}");
                        }
                    });
                }
                Err(e) => {
                    warn!("accepting a stream client failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
}

/// Sends a [`Frame::Refused`] with `reason` (best effort) and fails with it.
async fn refuse<S>(sink: &mut S, what: &str, reason: String) -> anyhow::Result<()>
where
    S: futures::Sink<Bytes, Error = std::io::Error> + Unpin,
{
    let _ = sink
        .send(Bytes::from(
            Frame::Refused {
                reason: reason.clone(),
            }
            .encode()?,
        ))
        .await;
    anyhow::bail!("{what} refused: {reason}")
}

async fn handle_client(
    sock: TcpStream,
    peer: SocketAddr,
    dir: Arc<Directory>,
    auth: Arc<StreamAuth>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let (read_half, write_half) = sock.into_split();
    let inbound = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_INBOUND_FRAME_BYTES)
        .new_codec();
    let mut frames = FramedRead::new(read_half, inbound);
    let mut sink = FramedWrite::new(write_half, frame_codec());
    // The hello and the handshake together must fit in HELLO_TIMEOUT.
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let first = tokio::time::timeout_at(deadline, frames.next())
        .await
        .map_err(|_| anyhow::anyhow!("no hello within {HELLO_TIMEOUT:?}"))?
        .context("closed before its hello")??;
    let hello = match Frame::decode(&first)
        .map_err(|e| e.to_string())
        .and_then(|f| check_hello(&f))
    {
        Ok(h) => h,
        Err(reason) => return refuse(&mut sink, "hello", reason).await,
    };
    let (challenge, server_nonce) =
        auth.challenge(&hello.client_nonce, &hello.device, hello.instance);
    sink.send(Bytes::from(challenge.encode()?)).await?;
    let answer = tokio::time::timeout_at(deadline, frames.next())
        .await
        .map_err(|_| anyhow::anyhow!("no handshake answer within {HELLO_TIMEOUT:?}"))?
        .context("closed during the handshake")??;
    let checked = match Frame::decode(&answer) {
        Ok(Frame::AuthResponse { proof }) => auth.check_response(
            &hello.client_nonce,
            &server_nonce,
            &proof,
            &hello.device,
            hello.instance,
        ),
        Ok(_) => Err("the answer to an AuthChallenge must be an AuthResponse".into()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(reason) = checked {
        warn!(%peer, device = hello.device, "{reason}");
        return refuse(&mut sink, "handshake", reason).await;
    }
    let Hello {
        kind,
        device,
        instance,
        ..
    } = hello;
    if kind == HelloKind::Clock {
        debug!(%peer, device, "clock-sync connection");
        return serve_clock(frames, sink, clock).await;
    }
    let (connection, kick) = match dir.register(&device, instance, peer) {
        Ok(v) => v,
        Err(reason) => {
            warn!(%peer, device, "{reason}");
            return refuse(&mut sink, "receiver", reason).await;
        }
    };
    info!(%peer, device, "receiver connected");
    let result = async {
        let mut routes = dir.routes.subscribe();
        let mut stream = dir
            .route(&device)
            .context("the transmitter has no stream")?;
        send_within(&mut sink, Bytes::from(stream.hello().encode()?)).await?;
        let mut live = stream.tx.subscribe();
        let mut last_sent = send_backlog(&mut sink, &stream).await?;
        let mut delay = dir.playout.subscribe();
        delay.mark_unchanged();
        let (time_tx, mut time_rx) = mpsc::channel::<(i64, i64)>(64);
        let (refuse_tx, mut refuse_rx) = mpsc::channel::<String>(1);
        let (playout, who) = (dir.playout.clone(), device.clone());
        // Reader: time requests (t2 stamped on arrival); silence means the receiver left.
        let reader_clock = clock.clone();
        let reader = async move {
            loop {
                let frame = match tokio::time::timeout(IDLE_TIMEOUT, frames.next()).await {
                    Ok(Some(f)) => f?,
                    Ok(None) => return anyhow::Ok(()),
                    Err(_) => anyhow::bail!("nothing from the receiver for {IDLE_TIMEOUT:?}"),
                };
                let t2 = reader_clock.now_us();
                match Frame::decode(&frame) {
                    Ok(Frame::TimeRequest { t1_us }) => {
                        let _ = time_tx.try_send((t1_us, t2));
                    }
                    Ok(Frame::PlayoutDelayRequest { playout_delay_ms }) => {
                        // A grant reaches every connection (this one too) as a new
                        // hello; a refusal goes to this receiver only.
                        if let Err(reason) = playout.request(&who, playout_delay_ms) {
                            warn!(device = who, "{reason}");
                            let _ = refuse_tx.try_send(reason);
                        }
                    }
                    Ok(_) => debug!("ignoring an unexpected frame from a receiver"),
                    Err(e) => debug!("malformed frame from a receiver: {e}"),
                }
            }
        };
        // Writer: time responses first (t3 stamped just before sending), then a switch
        // of stream, then audio.
        let router = dir.clone();
        let name = device.clone();
        let writer = async move {
            loop {
                tokio::select! {
                    biased;
                    Some((t1_us, t2_us)) = time_rx.recv() => {
                        let t3_us = clock.now_us();
                        send_within(&mut sink, Bytes::from(Frame::TimeResponse { t1_us, t2_us, t3_us }.encode()?)).await?;
                    }
                    Some(reason) = refuse_rx.recv() => {
                        send_within(&mut sink, Bytes::from(Frame::Refused { reason: reason.clone() }.encode()?)).await?;
                        anyhow::bail!("refused: {reason}");
                    }
                    changed = delay.changed() => {
                        if changed.is_err() { return anyhow::Ok(()); }
                        // The playout delay grew: the same stream again with the new
                        // delay, from the chunks its span needs.
                        let p = *delay.borrow_and_update();
                        debug!(device = name, playout_delay_ms = p, "new playout delay");
                        send_within(&mut sink, Bytes::from(stream.hello().encode()?)).await?;
                        last_sent = send_backlog(&mut sink, &stream).await?;
                    }
                    changed = routes.changed() => {
                        if changed.is_err() { return anyhow::Ok(()); }
                        let Some(next) = router.route(&name) else { continue };
                        if next.name != stream.name {
                            info!(device = name, from = stream.name, to = next.name, "switching stream");
                            stream = next;
                            live = stream.tx.subscribe();
                            send_within(&mut sink, Bytes::from(stream.switch_frame().encode()?)).await?;
                            last_sent = send_backlog(&mut sink, &stream).await?;
                        }
                    }
                    chunk = live.recv() => match chunk {
                        Ok(c) => {
                            if last_sent.is_some_and(|l| c.sample_index <= l) { continue; }
                            last_sent = Some(c.sample_index);
                            send_within(&mut sink, c.frame).await?;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            anyhow::bail!("the receiver is too slow for the stream ({n} chunks behind): dropped")
                        }
                        Err(broadcast::error::RecvError::Closed) => return anyhow::Ok(()),
                    },
                }
            }
        };
        tokio::select! {
            r = reader => r,
            r = writer => r,
            _ = kick.notified() => Ok(()),
        }
    }
    .await;
    dir.unregister(&device, connection);
    result
}

/// `write`, or an error when the receiver has not taken it within
/// [`WRITE_STALL_TIMEOUT`] (`what` names it in the error).
async fn within_stall_timeout<T>(
    what: &str,
    write: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(WRITE_STALL_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the receiver took no {what} for {WRITE_STALL_TIMEOUT:?} (stopped reading, or too slow): dropped"
            ))
        })
}

/// Sends `frame` within [`WRITE_STALL_TIMEOUT`].
async fn send_within(
    sink: &mut FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    frame: Bytes,
) -> anyhow::Result<()> {
    within_stall_timeout("frame", async { Ok(sink.send(frame).await?) }).await
}

/// Sends `stream`'s recent chunks; returns the sample index of the last one.
///
/// Errors: the connection failed, or stalled for [`WRITE_STALL_TIMEOUT`].
async fn send_backlog(
    sink: &mut FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    stream: &StreamHub,
) -> anyhow::Result<Option<u64>> {
    within_stall_timeout("backlog", async {
        let mut last_sent = None;
        for c in stream.backlog() {
            sink.feed(c.frame.clone()).await?;
            last_sent = Some(c.sample_index);
        }
        SinkExt::<Bytes>::flush(sink).await?;
        Ok(last_sent)
    })
    .await
}

/// A clock-sync connection: answers every `TimeRequest` at once (t2 stamped on
/// arrival, t3 just before sending), until the receiver leaves or is silent for
/// [`IDLE_TIMEOUT`].
async fn serve_clock(
    mut stream: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
            Ok(Some(f)) => f?,
            Ok(None) => return Ok(()),
            Err(_) => anyhow::bail!("nothing from the receiver for {IDLE_TIMEOUT:?}"),
        };
        let t2_us = clock.now_us();
        match Frame::decode(&frame) {
            Ok(Frame::TimeRequest { t1_us }) => {
                let t3_us = clock.now_us();
                let answer = Frame::TimeResponse {
                    t1_us,
                    t2_us,
                    t3_us,
                };
                send_within(&mut sink, Bytes::from(answer.encode()?)).await?;
            }
            Ok(_) => debug!("ignoring an unexpected frame on a clock connection"),
            Err(e) => debug!("malformed frame on a clock connection: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: hellos under ever new names cannot register receivers without bound.
    #[test]
    fn receivers_are_bounded() {
        let dir = Directory::new(Arc::new(PlayoutDelay::new(1000, 1000)));
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        for k in 0..MAX_RECEIVERS {
            dir.register(&format!("r{k}"), k as u64, peer).unwrap();
        }
        let e = dir.register("one-more", 1, peer).unwrap_err();
        assert!(e.contains(&MAX_RECEIVERS.to_string()), "{e}");
        // A known receiver reconnecting still gets in; and after one leaves, a new one.
        dir.register("r3", 3, peer).unwrap();
        let (connection, _) = dir.register("r4", 4, peer).unwrap();
        dir.unregister("r4", connection);
        dir.register("one-more", 1, peer).unwrap();
        assert_eq!(dir.clients().len(), MAX_RECEIVERS);
    }
}
