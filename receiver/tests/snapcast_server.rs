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
