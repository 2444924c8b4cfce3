//! Clock sync over real loopback TCP with injected network jitter, and a cut connection
//! that reconnects by itself and resynchronises.
//!
//! Bound: offset error p95 ≤ 50 µs with 0, 5 and 20 ms of jitter (the clock-sync
//! target), measured over 15 s after a 60 s warm-up (the time the fit's window takes to
//! fill; the estimate of the rate, and so of the offset now, improves until it is full).

mod common;

use std::sync::Arc;
use std::time::Duration;

use syncstream_audio::{BackendConfig, StreamFormat};
use syncstream_receiver::node::NodeSnapshot;
use syncstream_receiver::{Receiver, ReceiverConfig};
use syncstream_shared::profile::{DeviceProfile, OutputType};
use syncstream_shared::stats::percentile;
use syncstream_shared::time::{Clock, MonotonicClock};
use syncstream_transmitter::{MqttMode, TransmitterConfig};

fn tone() -> syncstream_transmitter::PullAudio {
    let mut n = 0u64;
    Box::new(move |out: &mut [f32]| {
        for f in out.chunks_exact_mut(2) {
            let v = 0.2 * (n as f32 * 0.05).sin();
            f[0] = v;
            f[1] = v;
            n += 1;
        }
        Ok(out.len() / 2)
    })
}

async fn transmitter() -> syncstream_transmitter::Transmitter {
    let cfg = TransmitterConfig {
        stream_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        mqtt: MqttMode::Embedded(([127, 0, 0, 1], common::free_port()).into()),
        ..Default::default()
    };
    syncstream_transmitter::start(cfg, tone(), Arc::new(MonotonicClock))
        .await
        .unwrap()
}

/// A real receiver (null output and microphone) streaming from `127.0.0.1:port`, with
/// the transmitter's broker: (receiver, its clock).
async fn probe_receiver(
    port: u16,
    tx: &syncstream_transmitter::Transmitter,
    name: &str,
) -> (Receiver, Arc<dyn Clock>) {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let backend = |channels| BackendConfig {
        device: None,
        format: StreamFormat {
            sample_rate: 48_000,
            channels,
        },
        clock: clock.clone(),
    };
    let sink = syncstream_audio::null::open_sink(&backend(2)).unwrap();
    let mic = syncstream_audio::null::open_microphone(&backend(1)).unwrap();
    let cfg = ReceiverConfig {
        device: name.into(),
        transmitter_host: "127.0.0.1".into(),
        stream_port: port,
        http_port: tx.http_addr.port(),
        broker: Some(tx.broker.clone()),
        snapserver: None,
        profile: DeviceProfile::default_for(OutputType::Analog),
        drift: Default::default(),
        state_dir: None,
        key: tx.key.clone(),
        voice: Default::default(),
    };
    let rx = syncstream_receiver::start(cfg, sink, mic, clock.clone())
        .await
        .unwrap();
    (rx, clock)
}

/// The receiver's clock-sync error now, µs (transmitter and receiver share the host
/// clock, so the true offset is 0).
fn clock_error_us(s: &NodeSnapshot, clock: &dyn Clock) -> Option<f64> {
    let now = clock.now_us() as f64;
    s.clock.map(|m| m.tx_from_local(now) - now)
}

/// One receiver core streaming through a jitter proxy; returns |offset error| samples
/// (µs) taken every 100 ms after a warm-up. Transmitter and receiver share the host
/// clock, so the true offset is 0.
async fn offset_errors(jitter_ms: f64) -> Vec<f64> {
    let tx = transmitter().await;
    let proxy =
        common::JitterProxy::start(tx.stream_addr, 0.2, jitter_ms, jitter_ms as u64 + 1).await;
    let (rx, clock) = probe_receiver(proxy.port, &tx, "probe").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut errors = Vec::new();
    for _ in 0..150 {
        if let Some(e) = clock_error_us(&rx.snapshot(), clock.as_ref()) {
            errors.push(e.abs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offset_error_p95_within_50_us_under_jitter() {
    let (a, b, c) = tokio::join!(offset_errors(0.0), offset_errors(5.0), offset_errors(20.0));
    for (jitter, errors) in [(0.0, a), (5.0, b), (20.0, c)] {
        assert!(
            errors.len() >= 140,
            "jitter {jitter} ms: only {} estimates",
            errors.len()
        );
        let p95 = percentile(&errors, 95.0).unwrap();
        println!("jitter {jitter} ms: offset error p95 {p95:.1} µs");
        let bound = 50.0;
        assert!(
            p95 <= bound,
            "jitter {jitter} ms: offset error p95 {p95:.1} µs (bound {bound} µs)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_connection_reconnects_and_resyncs() {
    let tx = transmitter().await;
    let proxy = common::JitterProxy::start(tx.stream_addr, 0.2, 0.0, 9).await;
    let (rx, clock) = probe_receiver(proxy.port, &tx, "probe").await;
    let wait_for = |what: &'static str, cond: Box<dyn Fn(&NodeSnapshot) -> bool + Send>| {
        let rx = &rx;
        async move {
            for _ in 0..300 {
                if cond(&rx.snapshot()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("timed out waiting for: {what}: {:?}", rx.snapshot());
        }
    };
    wait_for(
        "connected and playing with audio ahead",
        Box::new(|s| s.connected && s.audio.ahead_frames > 4800 && s.audio.frames > 0),
    )
    .await;
    proxy.cut();
    wait_for("the cut noticed", Box::new(|s| !s.connected)).await;
    // It comes back by itself, with a fresh clock estimate and audio.
    wait_for(
        "reconnected",
        Box::new(|s| s.connected && s.exchanges > 5 && s.audio.ahead_frames > 4800),
    )
    .await;
    let err = clock_error_us(&rx.snapshot(), clock.as_ref()).unwrap();
    assert!(err.abs() < 200.0, "clock offset after reconnect: {err} µs");
}
