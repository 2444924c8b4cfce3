//! The stream client: connects to the transmitter, keeps the clock in sync, decodes
//! audio into the jitter buffer, and reconnects with backoff when the connection is
//! lost (playout then runs dry and fades to silence, and picks up in sync on return).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use syncstream_protocol::codec::AudioDecoder;
use syncstream_protocol::wire::{Frame, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use syncstream_shared::time::Clock;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{info, warn};

use crate::core::SharedCore;
use crate::playout::StreamParams;

/// Interval between clock-sync requests (20 a second, ~1.2 kB/s both ways: the more
/// exchanges, the more of them cross a jittery network without queueing, and those are
/// the ones clock sync relies on).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);

/// Runs the client forever: connect, stream, and on any error reconnect after a
/// backoff of 0.2 s doubling up to 5 s.
pub async fn run(addr: String, core: SharedCore, clock: Arc<dyn Clock>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = std::time::Instant::now();
        match session(&addr, &core, &clock).await {
            Ok(()) => info!("transmitter closed the stream"),
            Err(e) => warn!("stream from {addr}: {e:#}"),
        }
        core.lock().unwrap().connected = false;
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(addr: &str, core: &SharedCore, clock: &Arc<dyn Clock>) -> anyhow::Result<()> {
    let sock = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    sock.set_nodelay(true)?;
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec();
    let (mut sink, mut stream) = Framed::new(sock, codec).split();
    let device = core.lock().unwrap().device.clone();
    sink.send(Bytes::from(
        Frame::ClientHello {
            protocol_version: PROTOCOL_VERSION,
            device,
        }
        .encode()?,
    ))
    .await?;
    let hello = stream.next().await.context("closed before its hello")??;
    let (params, codec) = match Frame::decode(&hello)? {
        Frame::ServerHello {
            protocol_version,
            sample_rate,
            channels,
            codec,
            codec_delay_samples,
            epoch_us,
            playout_delay_ms,
        } => {
            if protocol_version != PROTOCOL_VERSION {
                bail!(
                    "transmitter speaks protocol {protocol_version}, we speak {PROTOCOL_VERSION}"
                );
            }
            if channels != 2 {
                bail!("stream has {channels} channels; receivers play stereo streams");
            }
            (
                StreamParams {
                    sample_rate,
                    channels: channels as usize,
                    epoch_us,
                    codec_delay_samples,
                    playout_delay_us: playout_delay_ms as i64 * 1000,
                },
                codec,
            )
        }
        other => bail!("expected a ServerHello, got {other:?}"),
    };
    let mut decoder = AudioDecoder::new(codec, params.sample_rate, params.channels as u16)?;
    {
        let mut c = core.lock().unwrap();
        c.clock.reset();
        c.jitter_buffer.clear();
        c.playout.set_stream(params);
        c.connected = true;
    }
    info!(%addr, ?codec, "streaming");
    // Clock-sync requests from their own task.
    let sync_clock = clock.clone();
    let requester = async move {
        loop {
            let t1_us = sync_clock.now_us();
            sink.send(Bytes::from(Frame::TimeRequest { t1_us }.encode()?))
                .await?;
            tokio::time::sleep(SYNC_INTERVAL).await;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let reader = async {
        let mut pcm = Vec::new();
        while let Some(frame) = stream.next().await {
            let bytes = frame?;
            let t4_us = clock.now_us();
            match Frame::decode(&bytes) {
                Ok(Frame::TimeResponse {
                    t1_us,
                    t2_us,
                    t3_us,
                }) => {
                    core.lock()
                        .unwrap()
                        .clock
                        .add_exchange(t1_us, t2_us, t3_us, t4_us);
                }
                Ok(Frame::Audio {
                    sample_index,
                    frames,
                    payload,
                }) => {
                    if frames as usize > params.sample_rate as usize {
                        warn!("audio chunk of {frames} frames is too long; dropped");
                        continue;
                    }
                    match decoder.decode(&payload, frames as usize, &mut pcm) {
                        Ok(()) => {
                            // Decoder output i of this chunk holds source sample
                            // sample_index + i − codec delay; the playout accounts for that.
                            core.lock()
                                .unwrap()
                                .jitter_buffer
                                .push(sample_index as i64, &pcm);
                        }
                        Err(e) => warn!("chunk {sample_index}: {e}"),
                    }
                }
                Ok(other) => warn!("unexpected frame from transmitter: {other:?}"),
                Err(e) => warn!("{e}"),
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = requester => r,
        r = reader => r,
    }
}
