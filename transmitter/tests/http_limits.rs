//! The HTTP server is bounded (issue 14): connections that never send a request (200
//! half-open sockets used to stay open forever), that stop halfway through a head, or
//! that sit idle after a request are closed after the header timeout, while the API
//! keeps answering; bodies over the limit are refused before they are read.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use syncstream_shared::time::MonotonicClock;
use syncstream_transmitter::http::{HEADER_READ_TIMEOUT, MAX_REQUEST_BODY_BYTES};
use syncstream_transmitter::{start, MqttMode, Transmitter, TransmitterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{api_client, key};

fn silence() -> syncstream_transmitter::PullAudio {
    Box::new(|out: &mut [f32]| {
        out.fill(0.0);
        Ok(out.len() / 2)
    })
}

async fn transmitter() -> Transmitter {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = TransmitterConfig {
        stream_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        mqtt: MqttMode::Embedded(([127, 0, 0, 1], port).into()),
        buffer_seconds: 2.0,
        key: key(),
        ..Default::default()
    };
    start(cfg, silence(), Arc::new(MonotonicClock))
        .await
        .unwrap()
}

/// Whether the server closed `s` (EOF or reset), waiting until `deadline`.
async fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (408 or other): read on to the close
        }
    }
}

async fn get_status(tx: &Transmitter) -> reqwest::StatusCode {
    api_client()
        .get(format!("http://{}/api/v1/status", tx.http_addr))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(reqwest::StatusCode::SERVICE_UNAVAILABLE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_slow_and_idle_connections_are_closed() {
    let tx = transmitter().await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(tx.http_addr).await.unwrap());
    }
    // Half a request head, then nothing.
    let mut partial = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(tx.http_addr).await.unwrap();
        s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        partial.push(s);
    }
    // A keep-alive connection that made one request and then sits idle.
    let mut idle = TcpStream::connect(tx.http_addr).await.unwrap();
    let request = format!(
        "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        key().api_token()
    );
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Meanwhile the API answers.
    assert_eq!(get_status(&tx).await, reqwest::StatusCode::OK);

    let deadline = started + HEADER_READ_TIMEOUT + Duration::from_secs(5);
    let mut open = 0;
    for s in silent.iter_mut().chain(partial.iter_mut()) {
        if !closed_by(s, deadline).await {
            open += 1;
        }
    }
    assert_eq!(
        open,
        0,
        "connections without a request still open after {:?}",
        deadline - started
    );
    assert!(
        closed_by(&mut idle, deadline).await,
        "an idle keep-alive connection is closed"
    );
    assert!(
        started.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "not before the timeout"
    );
    assert_eq!(get_status(&tx).await, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_and_heads_are_refused() {
    let tx = transmitter().await;
    let client = api_client();
    let r = client
        .put(format!("http://{}/api/v1/devices/tv/volume", tx.http_addr))
        .body(vec![b' '; MAX_REQUEST_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    // A head of 100 kB: refused (431) or the connection closed, never served.
    let mut s = TcpStream::connect(tx.http_addr).await.unwrap();
    let mut req = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.resize(req.len() + 100_000, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    let _ = s.write_all(&req).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(100)])
    );
    assert_eq!(get_status(&tx).await, reqwest::StatusCode::OK);
}
