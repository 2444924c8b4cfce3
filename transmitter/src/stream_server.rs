//! The audio stream server: sends timestamped audio chunks to every connected
//! receiver over TCP and answers their clock-sync requests (see
//! [`syncstream_protocol::wire`] for the protocol).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use syncstream_protocol::wire::{Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use syncstream_shared::time::Clock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};

/// A length-delimited codec limited to [`MAX_FRAME_BYTES`].
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// An encoded audio chunk ready to send.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    /// Source sample index of its first frame.
    pub sample_index: u64,
    /// Encoded `Frame::Audio` body.
    pub frame: Bytes,
}

/// State shared between the pacer (producer) and the client connections.
pub struct StreamHub {
    hello: Frame,
    tx: broadcast::Sender<EncodedChunk>,
    /// Recent chunks, so a receiver that connects can start within its playout delay.
    history: Mutex<VecDeque<EncodedChunk>>,
    history_len: usize,
    clients: Mutex<Vec<String>>,
}

impl StreamHub {
    /// A hub that greets receivers with `hello` (a `Frame::ServerHello`) and keeps the
    /// last `history_chunks` chunks for late joiners.
    pub fn new(hello: Frame, history_chunks: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(512);
        Arc::new(Self {
            hello,
            tx,
            history: Mutex::new(VecDeque::new()),
            history_len: history_chunks,
            clients: Mutex::new(Vec::new()),
        })
    }

    /// Publishes one chunk to every connected receiver.
    pub fn publish(&self, chunk: EncodedChunk) {
        {
            let mut h = self.history.lock().unwrap();
            h.push_back(chunk.clone());
            while h.len() > self.history_len {
                h.pop_front();
            }
        }
        let _ = self.tx.send(chunk);
    }

    /// Names of the connected receivers.
    pub fn clients(&self) -> Vec<String> {
        self.clients.lock().unwrap().clone()
    }
}

/// Accepts receivers on `listener` forever.
pub async fn serve(listener: TcpListener, hub: Arc<StreamHub>, clock: Arc<dyn Clock>) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let hub = hub.clone();
                let clock = clock.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_client(sock, peer, hub, clock).await {
                        info!(%peer, "stream client left: {e:#}");
                    }
                });
            }
            Err(e) => {
                warn!("accepting a stream client failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle_client(
    sock: TcpStream,
    peer: SocketAddr,
    hub: Arc<StreamHub>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let (mut sink, mut stream) = Framed::new(sock, frame_codec()).split();
    let first = stream.next().await.context("closed before its hello")??;
    let device = match Frame::decode(&first)? {
        Frame::ClientHello {
            protocol_version,
            device,
        } => {
            if protocol_version != PROTOCOL_VERSION {
                anyhow::bail!("protocol version {protocol_version} (we speak {PROTOCOL_VERSION})");
            }
            device
        }
        other => anyhow::bail!("expected a ClientHello, got {other:?}"),
    };
    info!(%peer, device, "receiver connected");
    hub.clients.lock().unwrap().push(device.clone());
    let result = async {
        sink.send(Bytes::from(hub.hello.encode()?)).await?;
        let mut live = hub.tx.subscribe();
        let backlog: Vec<EncodedChunk> = hub.history.lock().unwrap().iter().cloned().collect();
        let mut last_sent = None;
        for c in backlog {
            sink.feed(c.frame.clone()).await?;
            last_sent = Some(c.sample_index);
        }
        sink.flush().await?;
        let (time_tx, mut time_rx) = mpsc::channel::<(i64, i64)>(64);
        // Reader: time requests (t2 stamped on arrival).
        let reader_clock = clock.clone();
        let reader = async move {
            while let Some(frame) = stream.next().await {
                let bytes = frame?;
                let t2 = reader_clock.now_us();
                match Frame::decode(&bytes) {
                    Ok(Frame::TimeRequest { t1_us }) => {
                        let _ = time_tx.try_send((t1_us, t2));
                    }
                    Ok(other) => debug!("ignoring unexpected frame from receiver: {other:?}"),
                    Err(e) => warn!("malformed frame from receiver: {e}"),
                }
            }
            anyhow::Ok(())
        };
        // Writer: time responses first (t3 stamped just before sending), then audio.
        let writer = async move {
            loop {
                tokio::select! {
                    biased;
                    Some((t1_us, t2_us)) = time_rx.recv() => {
                        let t3_us = clock.now_us();
                        sink.send(Bytes::from(Frame::TimeResponse { t1_us, t2_us, t3_us }.encode()?)).await?;
                    }
                    chunk = live.recv() => match chunk {
                        Ok(c) => {
                            if last_sent.is_some_and(|l| c.sample_index <= l) { continue; }
                            last_sent = Some(c.sample_index);
                            sink.send(c.frame).await?;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => warn!("receiver too slow, skipped {n} chunks"),
                        Err(broadcast::error::RecvError::Closed) => return anyhow::Ok(()),
                    },
                }
            }
        };
        tokio::select! {
            r = reader => r,
            r = writer => r,
        }
    }
    .await;
    hub.clients.lock().unwrap().retain(|d| d != &device);
    result
}
