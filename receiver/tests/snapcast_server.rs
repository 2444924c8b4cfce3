//! The Snapcast client connection against a real snapserver (Debian 12's `snapserver`
//! package, 0.26.0): started here as a child process with its own config, loopback
//! ports and a fresh data dir, streaming a looped PCM file (48000:16:2).
//!
//! Checks: ServerSettings (bufferMs 1000), a PCM CodecHeader read as 48000:16:2,
//! WireChunks 20 ms apart, a clock difference that agrees across samples and puts the
//! newest chunk's timestamp just behind the server's "now", and the client listed with
//! its Hello in the server's JSON-RPC `Server.GetStatus`.
//!
//! Needs `snapserver` on the PATH (scripts/setup.sh installs it); without it the test
//! fails.

use std::sync::Arc;
use std::time::Duration;

use syncstream_protocol::snapcast::{Hello, SampleFormat, StreamCodec};
use syncstream_receiver::snapcast::{run, ConnectionConfig, Event};
use syncstream_shared::time::{Clock, MonotonicClock};
use syncstream_testkit::snapserver::{have_snapserver, write_pcm_s16, SnapSource, Snapserver};
use tokio::sync::mpsc;
use tokio::time::Instant;

const CLIENT_ID: &str = "syncstream-snapcast-test";
const HOST_NAME: &str = "syncstream-test-host";
const RATE: u32 = 48_000;
/// Length of the looped source file, s (longer than the test reads chunks, so the
/// reopen at the file's end, which restarts the timestamps, does not come into it).
const SOURCE_SECONDS: u32 = 20;

/// A snapserver streaming a looped PCM source of a 440 Hz sine at −10 dBFS, and the
/// folder of its source file.
fn start_snapserver() -> (Snapserver, tempfile::TempDir) {
    assert!(
        have_snapserver(),
        "snapserver is not installed (scripts/setup.sh installs it: apt-get install snapserver)"
    );
    let dir = tempfile::tempdir().unwrap();
    let sine: Vec<f32> = (0..RATE * SOURCE_SECONDS)
        .flat_map(|i| {
            let v = 0.316 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / RATE as f64).sin();
            [v as f32; 2]
        })
        .collect();
    let file = dir.path().join("sine.raw");
    write_pcm_s16(&file, &sine).unwrap();
    let server = Snapserver::start(
        &[SnapSource {
            name: "default".into(),
            file,
            codec: "pcm".into(),
        }],
        1000,
    )
    .unwrap();
    // (The server reads the file while it runs: the folder lives as long.)
    (server, dir)
}

/// `Server.GetStatus` over HTTP POST /jsonrpc.
async fn server_status(http_port: u16) -> serde_json::Value {
    let body = r#"{"id":1,"jsonrpc":"2.0","method":"Server.GetStatus"}"#;
    let text = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http_port}/jsonrpc"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /jsonrpc")
        .text()
        .await
        .expect("read the JSON-RPC response");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON-RPC response {text:?}: {e}"))
}

/// The client with id `id` in a `Server.GetStatus` response.
fn find_client<'a>(status: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status["result"]["server"]["groups"]
        .as_array()?
        .iter()
        .filter_map(|g| g["clients"].as_array())
        .flatten()
        .find(|c| c["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_a_real_snapserver() {
    let (server, _source_dir) = start_snapserver();
    let stream_port = server.stream_port;
    let http_port = server.http_port;

    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let (tx, mut rx) = mpsc::channel(1024);
    let config = ConnectionConfig {
        server: format!("127.0.0.1:{stream_port}"),
        hello: Hello::syncstream(CLIENT_ID, "02:00:00:00:00:17", HOST_NAME, "0.1.0-test"),
    };
    let connection = tokio::spawn(run(config, clock.clone(), tx));

    let mut settings = Vec::new();
    let mut codecs = Vec::new();
    // (chunk timestamp, client clock at arrival), µs.
    let mut chunks: Vec<(i64, i64)> = Vec::new();
    let mut samples: Vec<i64> = Vec::new();
    let mut diff_us = None;
    // 50 quick exchanges and two of the 1 s ones.
    let want_syncs = 52;
    let want_chunks = 50;
    let deadline = Instant::now() + Duration::from_secs(15);
    while samples.len() < want_syncs || chunks.len() < want_chunks {
        let event = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!(
                "connection ended: {}; log:\n{}",
                connection.await.unwrap(),
                server.log()
            ),
            Err(_) => panic!(
                "after 15 s: {} settings, {} codec headers, {} chunks, {} clock samples; log:\n{}",
                settings.len(),
                codecs.len(),
                chunks.len(),
                samples.len(),
                server.log()
            ),
        };
        match event {
            Event::ServerSettings(s) => settings.push(s),
            Event::CodecHeader { codec, .. } => codecs.push(codec),
            Event::WireChunk(c) => {
                assert!(!codecs.is_empty(), "a WireChunk before the CodecHeader");
                chunks.push((c.timestamp.to_micros(), clock.now_us()));
            }
            Event::TimeSync {
                sample_us,
                diff_us: d,
                rtt_us,
                ..
            } => {
                assert!(
                    (0..100_000).contains(&rtt_us),
                    "loopback round trip {rtt_us} µs"
                );
                samples.push(sample_us);
                diff_us = Some(d);
            }
        }
    }

    assert_eq!(settings.len(), 1, "ServerSettings: {settings:?}");
    assert_eq!(settings[0].buffer_ms, 1000);
    assert_eq!(
        codecs,
        vec![StreamCodec::Pcm(SampleFormat {
            rate_hz: 48_000,
            bits: 16,
            channels: 2
        })]
    );
    for pair in chunks.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 20_000, "chunk timestamps {pair:?}");
    }

    // The clock: on loopback every sample is the same difference to well under 1 ms.
    let last = &samples[samples.len() - 40..];
    let spread = last.iter().max().unwrap() - last.iter().min().unwrap();
    assert!(
        spread < 1_000,
        "spread {spread} µs of the last 40 samples {last:?}"
    );
    let diff_us = diff_us.unwrap();
    assert!(last.iter().all(|s| (s - diff_us).abs() < 1_000));
    // A chunk is sent about one chunk (20 ms) after its first sample was read: on the
    // server's clock, the newest chunk arrived a little after its timestamp.
    let (ts, arrived) = *chunks.last().unwrap();
    let age_us = arrived + diff_us - ts;
    println!(
        "{} chunks, {} clock samples; diff {diff_us} µs, spread of the last 40 {spread} µs, \
         newest chunk's age on arrival {age_us} µs",
        chunks.len(),
        samples.len()
    );
    assert!(
        (0..200_000).contains(&age_us),
        "newest chunk's age on arrival {age_us} µs (diff {diff_us} µs)"
    );

    // The server lists the client, with the Hello's fields, as connected.
    let deadline = Instant::now() + Duration::from_secs(5);
    let client = loop {
        let status = server_status(http_port).await;
        if let Some(c) = find_client(&status, CLIENT_ID) {
            if c["connected"] == true {
                break c.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "client {CLIENT_ID} not connected in Server.GetStatus: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(client["host"]["name"], HOST_NAME, "{client}");
    assert_eq!(client["host"]["mac"], "02:00:00:00:00:17", "{client}");
    assert_eq!(client["snapclient"]["name"], "SyncStream", "{client}");
    assert_eq!(client["snapclient"]["version"], "0.1.0-test", "{client}");
    assert_eq!(client["snapclient"]["protocolVersion"], 2, "{client}");

    assert!(!connection.is_finished(), "the connection ended on its own");
    connection.abort();
}

/// A server that answers each connection with one kind of bad input, in turn; counts
/// the connections it got.
async fn bad_server(
    listener: tokio::net::TcpListener,
    connections: Arc<std::sync::atomic::AtomicU32>,
) {
    use syncstream_protocol::snapcast::{
        Body, CodecHeader, Message, ServerSettings, Timeval, WireChunk,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let settings = Message::new(Body::ServerSettings(ServerSettings::default()))
        .encode()
        .unwrap();
    let pcm_header = {
        // RIFF/WAVE, 48000:16:2.
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&36u32.to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&48_000u32.to_le_bytes());
        w.extend_from_slice(&192_000u32.to_le_bytes());
        w.extend_from_slice(&4u16.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&0u32.to_le_bytes());
        Message::new(Body::CodecHeader(CodecHeader {
            codec: "pcm".into(),
            payload: w,
        }))
        .encode()
        .unwrap()
    };
    // A header (26 bytes) that announces `size` payload bytes of type `t`.
    let header = |t: u16, size: u32| {
        let mut h = vec![0u8; 26];
        h[0..2].copy_from_slice(&t.to_le_bytes());
        h[22..26].copy_from_slice(&size.to_le_bytes());
        h
    };
    let mut k = 0u32;
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut hello = [0u8; 512];
        let _ = socket.read(&mut hello).await;
        let bad: Vec<u8> = match k % 5 {
            // Truncated: a ServerSettings announcing 100 bytes, 10 sent, then closed.
            0 => [header(3, 100), vec![b'{'; 10]].concat(),
            // Absurd size: 4 GB of a WireChunk.
            1 => header(2, u32::MAX),
            // An unknown codec.
            2 => [
                settings.clone(),
                Message::new(Body::CodecHeader(CodecHeader {
                    codec: "mp3".into(),
                    payload: vec![1, 2, 3],
                }))
                .encode()
                .unwrap(),
            ]
            .concat(),
            // Absurd timestamps and a chunk of half a frame, then garbage JSON.
            3 => [
                settings.clone(),
                pcm_header.clone(),
                Message::new(Body::WireChunk(WireChunk {
                    timestamp: Timeval {
                        sec: i32::MIN,
                        usec: -999_999,
                    },
                    payload: vec![0; 960 * 4],
                }))
                .encode()
                .unwrap(),
                Message::new(Body::WireChunk(WireChunk {
                    timestamp: Timeval { sec: 100, usec: 0 },
                    payload: vec![0; 3],
                }))
                .encode()
                .unwrap(),
                [header(3, 4), b"{{{{".to_vec()].concat(),
            ]
            .concat(),
            // Random bytes.
            _ => syncstream_testkit::white_noise(2_000, u64::from(k), 1.0)
                .iter()
                .map(|v| (v * 127.0) as i8 as u8)
                .collect(),
        };
        let _ = socket.write_all(&bad).await;
        let _ = socket.flush().await;
        k += 1;
        // Closed when dropped (after the receiver had the bytes: it reads until it
        // fails on them, or sees the close).
        drop(socket);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_a_server_is_logged_and_reconnected_never_a_panic() {
    // The log, kept to check its lines (the receiver's tasks run on every worker
    // thread: the subscriber is the process's; no other test here sets one).
    let log = LogBuffer::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("the only global subscriber of this test binary");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(std::sync::atomic::AtomicU32::new(0));
    tokio::spawn(bad_server(listener, connections.clone()));
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let backend = |channels| syncstream_audio::BackendConfig {
        device: None,
        format: syncstream_audio::StreamFormat {
            sample_rate: RATE,
            channels,
        },
        clock: clock.clone(),
    };
    let rx = syncstream_receiver::start(
        syncstream_receiver::ReceiverConfig {
            device: "bad-server".into(),
            transmitter_host: String::new(),
            stream_port: 0,
            http_port: 0,
            broker: None,
            snapserver: Some(format!("127.0.0.1:{port}")),
            profile: syncstream_shared::profile::DeviceProfile::default_for(
                syncstream_shared::profile::OutputType::Analog,
            ),
            drift: Default::default(),
            state_dir: None,
            key: syncstream_protocol::auth::PairingKey::generate().unwrap(),
            voice: Default::default(),
        },
        syncstream_audio::null::open_sink(&backend(2)).unwrap(),
        syncstream_audio::null::open_microphone(&backend(1)).unwrap(),
        clock.clone(),
    )
    .await
    .unwrap();
    // Every kind twice: each ends its connection and the receiver connects again
    // (backoff 0.2 s doubling to 2 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    while connections.load(std::sync::atomic::Ordering::SeqCst) < 10 {
        assert!(
            Instant::now() < deadline,
            "the receiver stopped reconnecting after {} connections: {:?}",
            connections.load(std::sync::atomic::Ordering::SeqCst),
            rx.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = rx.snapshot();
    // The bad chunks were refused (not played), and the unknown codec named.
    assert!(s.counters.frames_rejected >= 2, "{:?}", s.counters);
    let log = log.text();
    for line in [
        "snapcast connection ended",
        "unknown codec \"mp3\"",
        "4294967295",
    ] {
        assert!(log.contains(line), "no log line with {line:?}:\n{log}");
    }
}

/// A log writer into memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
