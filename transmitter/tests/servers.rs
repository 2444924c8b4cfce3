//! The transmitter's servers over real sockets: source windows over HTTP (good and bad
//! requests) and the audio stream's handshake, audio and clock-sync answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use syncstream_protocol::auth::{PairingKey, StreamAuth};

use common::{api_client, key};
use syncstream_protocol::wire::{Frame, PROTOCOL_VERSION};
use syncstream_shared::time::{Clock, MonotonicClock};
use syncstream_transmitter::stream_server::frame_codec;
use syncstream_transmitter::{start, MqttMode, Transmitter, TransmitterConfig};
use tokio_util::codec::Framed;

/// A 1 kHz tone source.
fn tone() -> syncstream_transmitter::PullAudio {
    let mut n = 0u64;
    Box::new(move |out: &mut [f32]| {
        for f in out.chunks_exact_mut(2) {
            let v = 0.25 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 48_000.0).sin() as f32;
            f[0] = v;
            f[1] = v;
            n += 1;
        }
        Ok(out.len() / 2)
    })
}

type Conn = Framed<tokio::net::TcpStream, tokio_util::codec::LengthDelimitedCodec>;

/// Says hello on `framed` as `device`/`instance`, passes the handshake under `key`
/// and returns the transmitter's next frame (its hello, or a refusal).
async fn login(framed: &mut Conn, device: &str, instance: u64, key: PairingKey) -> Frame {
    let auth = StreamAuth::new(key);
    let client_nonce = syncstream_protocol::auth::nonce();
    let hello = Frame::ClientHello {
        protocol_version: PROTOCOL_VERSION,
        device: device.into(),
        instance,
        client_nonce,
    };
    framed
        .send(Bytes::from(hello.encode().unwrap()))
        .await
        .unwrap();
    let first = Frame::decode(&framed.next().await.unwrap().unwrap()).unwrap();
    let Frame::AuthChallenge {
        server_nonce,
        server_proof,
    } = first
    else {
        return first;
    };
    let answer = auth
        .respond(
            &client_nonce,
            &server_nonce,
            &server_proof,
            device,
            instance,
        )
        .unwrap_or(Frame::AuthResponse { proof: [0; 32] });
    framed
        .send(Bytes::from(answer.encode().unwrap()))
        .await
        .unwrap();
    Frame::decode(&framed.next().await.unwrap().unwrap()).unwrap()
}

async fn transmitter() -> Transmitter {
    transmitter_with_buffer(2.0).await
}

/// A transmitter of [`tone`] on loopback (embedded broker) keeping `buffer_seconds`.
async fn transmitter_with_buffer(buffer_seconds: f64) -> Transmitter {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = TransmitterConfig {
        stream_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        mqtt: MqttMode::Embedded(([127, 0, 0, 1], port).into()),
        buffer_seconds,
        key: key(),
        ..Default::default()
    };
    start(cfg, tone(), Arc::new(MonotonicClock)).await.unwrap()
}

#[tokio::test]
async fn windows_in_the_buffer_are_served_and_others_refused() {
    let tx = transmitter().await;
    let base = format!("http://{}", tx.http_addr);
    let http = api_client();
    // Wait (bounded) until 300 ms of audio are buffered.
    let mut newest = 0;
    for _ in 0..200 {
        let (_, n) = tx.buffer.lock().unwrap().span_us();
        newest = n;
        if n - tx.epoch_us >= 300_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start_us = newest - 250_000;
    let r = http
        .get(format!(
            "{base}/api/v1/window?start_us={start_us}&duration_ms=200"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: i64 = r.headers()["x-syncstream-start-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((first - start_us).abs() <= 21);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 9600 * 4);
    let x: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!((peak - 0.25).abs() < 0.01, "tone peak {peak}");

    let wav = http
        .get(format!(
            "{base}/api/v1/window?start_us={start_us}&duration_ms=100&format=wav"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wav.status(), 200);
    assert_eq!(&wav.bytes().await.unwrap()[..4], b"RIFF");

    for (query, status) in [
        (
            format!("start_us={}&duration_ms=100", tx.epoch_us - 10_000_000),
            410,
        ),
        (
            format!("start_us={}&duration_ms=100", newest + 5_000_000),
            425,
        ),
        (format!("start_us={start_us}&duration_ms=0"), 400),
        (format!("start_us={start_us}&duration_ms=99999999999"), 400),
        (format!("start_us={start_us}&duration_ms=-5"), 400),
        ("start_us=soon&duration_ms=100".to_string(), 400),
        ("duration_ms=100".to_string(), 400),
        (
            format!("start_us={start_us}&duration_ms=100&format=mp3"),
            400,
        ),
        (format!("start_us={}&duration_ms=100", i64::MIN), 410),
    ] {
        let r = http
            .get(format!("{base}/api/v1/window?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{query}");
        let err: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(
            err["error"].as_str().is_some_and(|s| !s.is_empty()),
            "{query}"
        );
    }
    let status = http
        .get(format!("{base}/api/v1/status"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert!(status["buffer"]["newest_us"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn stream_handshake_audio_and_clock_sync() {
    let tx = transmitter().await;
    let clock = MonotonicClock;
    let sock = tokio::net::TcpStream::connect(tx.stream_addr)
        .await
        .unwrap();
    let mut framed = Framed::new(sock, frame_codec());
    // Garbage first is refused (with a reason) and the connection closed, not a crash.
    let bad = tokio::net::TcpStream::connect(tx.stream_addr)
        .await
        .unwrap();
    let mut bad = Framed::new(bad, frame_codec());
    bad.send(Bytes::from_static(b"\xff\xff\xff")).await.unwrap();
    if let Some(Ok(b)) = bad.next().await {
        let f = Frame::decode(&b).unwrap();
        assert!(matches!(f, Frame::Refused { .. }), "{f:?}");
        assert!(bad.next().await.is_none_or(|r| r.is_err()));
    }

    // A receiver with another pairing key is refused, saying why, and gets no audio.
    let stranger = tokio::net::TcpStream::connect(tx.stream_addr)
        .await
        .unwrap();
    let mut stranger = Framed::new(stranger, frame_codec());
    let other = PairingKey::parse(&"01".repeat(32)).unwrap();
    let answer = login(&mut stranger, "probe", 9, other).await;
    assert!(
        matches!(answer, Frame::Refused { ref reason } if reason.contains("not paired")),
        "{answer:?}"
    );
    assert!(stranger.next().await.is_none_or(|r| r.is_err()));

    let first = login(&mut framed, "probe", 1, key()).await;
    let Frame::ServerHello {
        epoch_us,
        sample_rate,
        channels,
        ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!((epoch_us, sample_rate, channels), (tx.epoch_us, 48_000, 2));
    let t1 = clock.now_us();
    framed
        .send(Bytes::from(
            Frame::TimeRequest { t1_us: t1 }.encode().unwrap(),
        ))
        .await
        .unwrap();
    let (mut audio, mut answered) = (0, false);
    let mut last_index = None;
    while !(answered && audio >= 10) {
        let f = Frame::decode(&framed.next().await.unwrap().unwrap()).unwrap();
        match f {
            Frame::Audio {
                sample_index,
                frames,
                ..
            } => {
                assert_eq!(frames, 960);
                if let Some(l) = last_index {
                    assert_eq!(sample_index, l + 960, "chunks must be contiguous");
                }
                last_index = Some(sample_index);
                audio += 1;
            }
            Frame::TimeResponse {
                t1_us,
                t2_us,
                t3_us,
            } => {
                let t4 = clock.now_us();
                assert_eq!(t1_us, t1);
                // Same process, same clock: the transmitter's stamps lie between ours.
                assert!(t1 <= t2_us && t2_us <= t3_us && t3_us <= t4);
                answered = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Connects and says hello as `device`/`instance`; returns the connection and the
/// transmitter's first answer.
async fn hello_as(
    tx: &Transmitter,
    device: &str,
    instance: u64,
) -> (
    Framed<tokio::net::TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    Frame,
) {
    let sock = tokio::net::TcpStream::connect(tx.stream_addr)
        .await
        .unwrap();
    let mut framed = Framed::new(sock, frame_codec());
    let first = login(&mut framed, device, instance, key()).await;
    (framed, first)
}

#[tokio::test]
async fn a_second_receiver_with_a_name_in_use_is_refused() {
    let tx = transmitter().await;
    let (mut first, hello) = hello_as(&tx, "kitchen", 1).await;
    assert!(matches!(hello, Frame::ServerHello { .. }));
    // Another process with the same name: refused, saying where the first one is.
    let (_, answer) = hello_as(&tx, "kitchen", 2).await;
    match answer {
        Frame::Refused { reason } => {
            assert!(
                reason.contains("'kitchen' is already streaming from 127.0.0.1"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The first one still streams.
    let next = Frame::decode(&first.next().await.unwrap().unwrap()).unwrap();
    assert!(matches!(next, Frame::Audio { .. }), "{next:?}");
    // The same process reconnecting replaces its old connection.
    let (_, again) = hello_as(&tx, "kitchen", 1).await;
    assert!(matches!(again, Frame::ServerHello { .. }));
    let mut closed = false;
    for _ in 0..500 {
        match first.next().await {
            None | Some(Err(_)) => {
                closed = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    assert!(closed, "the stale connection was closed");
    assert_eq!(tx.hub_clients(), vec!["kitchen".to_string()]);
}

#[tokio::test]
async fn invalid_names_and_silent_connections_are_refused() {
    let tx = transmitter().await;
    for bad in ["a/b", "", "x y"] {
        let (_, answer) = hello_as(&tx, bad, 1).await;
        assert!(
            matches!(answer, Frame::Refused { ref reason } if reason.contains("device name")),
            "{bad}: {answer:?}"
        );
    }
    let huge = "k".repeat(100_000);
    let sock = tokio::net::TcpStream::connect(tx.stream_addr)
        .await
        .unwrap();
    let mut framed = Framed::new(sock, frame_codec());
    let hello = Frame::ClientHello {
        protocol_version: PROTOCOL_VERSION,
        device: huge,
        instance: 1,
        client_nonce: [0; 16],
    };
    let _ = framed.send(Bytes::from(hello.encode().unwrap())).await;
    assert!(
        framed.next().await.is_none_or(|r| r.is_err()),
        "an oversized hello is dropped"
    );
    // A connection that never says hello is closed after the hello timeout.
    let sock = tokio::net::TcpStream::connect(tx.stream_addr)
        .await
        .unwrap();
    let mut silent = Framed::new(sock, frame_codec());
    let started = std::time::Instant::now();
    assert!(silent.next().await.is_none_or(|r| r.is_err()));
    assert!(started.elapsed() >= syncstream_transmitter::stream_server::HELLO_TIMEOUT);
    assert!(tx.hub_clients().is_empty());
}

/// Two streams on one timeline: a receiver plays `default`, its group moves to `b`
/// (through the control API), and the same connection gets a `StreamSwitch` naming
/// `b` and then `b`'s recent chunks (contiguous, on the same sample timeline) without
/// reconnecting; source windows of both streams are served by name.
#[tokio::test]
async fn a_group_move_switches_the_stream_on_the_same_connection() {
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
    let sources = vec![
        syncstream_transmitter::NamedSource::default_stream(tone(), "tone", "tone"),
        syncstream_transmitter::NamedSource {
            name: "b".into(),
            uri: "tone:///?name=b".into(),
            description: "tone".into(),
            pull: tone(),
        },
    ];
    let tx = syncstream_transmitter::start_streams(cfg, sources, Arc::new(MonotonicClock))
        .await
        .unwrap();
    let sock = tokio::net::TcpStream::connect(tx.stream_addr)
        .await
        .unwrap();
    let mut framed = Framed::new(sock, frame_codec());
    let first = login(&mut framed, "kitchen", 1, key()).await;
    assert!(
        matches!(first, Frame::ServerHello { ref stream, .. } if stream == "default"),
        "{first:?}"
    );
    // The control plane knows the device from its status (as MQTT would bring it);
    // its group moves to stream b through the API.
    tx.control.on_mqtt(
        "syncstream/status/kitchen",
        br#"{"device":"kitchen","state":"playing"}"#,
    );
    let http = api_client();
    let base = format!("http://{}/api/v1", tx.http_addr);
    let r = http
        .put(format!("{base}/groups/up"))
        .body(r#"{"stream":"b","devices":["kitchen"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (mut switched, mut after, mut last) = (false, 0, None::<u64>);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while after < 10 {
        let b = tokio::time::timeout_at(deadline, framed.next())
            .await
            .expect("frames after the move")
            .unwrap()
            .unwrap();
        match Frame::decode(&b).unwrap() {
            Frame::StreamSwitch {
                stream, epoch_us, ..
            } => {
                assert_eq!((stream.as_str(), epoch_us), ("b", tx.epoch_us));
                switched = true;
                last = None;
            }
            Frame::Audio { sample_index, .. } if switched => {
                if let Some(l) = last {
                    assert_eq!(sample_index, l + 960, "chunks of b must be contiguous");
                }
                last = Some(sample_index);
                after += 1;
            }
            Frame::ServerHello { .. } => panic!("a switch is not a new hello"),
            _ => {}
        }
    }
    for stream in ["default", "b"] {
        let (oldest, newest) = tx.streams.buffer(stream).unwrap().lock().unwrap().span_us();
        assert!(newest > oldest);
        let r = http
            .get(format!(
                "{base}/window?stream={stream}&start_us={}&duration_ms=10",
                newest - 20_000
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{stream}");
    }
    let r = http
        .get(format!(
            "{base}/window?stream=nope&start_us=0&duration_ms=10"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A receiver that needs a longer playout delay asks on its stream connection: every
/// connection gets a new hello with the grown delay (the need plus a margin) and the
/// chunks its span needs; the status shows it and why; a need above the maximum is
/// refused to that receiver alone, with the numbers.
#[tokio::test]
async fn a_playout_delay_request_grows_the_delay_for_every_receiver() {
    // The delay may grow to the buffer less 3 s: 5 s.
    let tx = transmitter_with_buffer(8.0).await;
    // Bounded wait until 2.5 s of audio exist, so a 2.3 s backlog can be full.
    for _ in 0..1000 {
        let (_, newest) = tx.buffer.lock().unwrap().span_us();
        if newest - tx.epoch_us >= 2_500_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut kitchen, hello) = hello_as(&tx, "kitchen", 1).await;
    assert!(
        matches!(
            hello,
            Frame::ServerHello {
                playout_delay_ms: 1000,
                ..
            }
        ),
        "{hello:?}"
    );
    let (mut cast, hello) = hello_as(&tx, "cast", 2).await;
    assert!(matches!(
        hello,
        Frame::ServerHello {
            playout_delay_ms: 1000,
            ..
        }
    ));
    let send = |f: Frame| Bytes::from(f.encode().unwrap());
    cast.send(send(Frame::PlayoutDelayRequest {
        playout_delay_ms: 2050,
    }))
    .await
    .unwrap();
    for (name, conn) in [("kitchen", &mut kitchen), ("cast", &mut cast)] {
        let mut last_before = None;
        let delay = loop {
            match Frame::decode(&conn.next().await.unwrap().unwrap()).unwrap() {
                Frame::Audio { sample_index, .. } => last_before = Some(sample_index),
                Frame::ServerHello {
                    playout_delay_ms,
                    epoch_us,
                    ..
                } => {
                    assert_eq!(epoch_us, tx.epoch_us, "{name}: the same timeline");
                    break playout_delay_ms;
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        };
        // 2050 ms and a tenth for wander, rounded up to 100 ms.
        assert_eq!(delay, 2300, "{name}");
        let Frame::Audio { sample_index, .. } =
            Frame::decode(&conn.next().await.unwrap().unwrap()).unwrap()
        else {
            panic!("{name}: audio follows the hello")
        };
        let last_before = last_before.expect("audio before the new hello");
        assert!(
            sample_index + 2200 * 48 <= last_before,
            "{name}: the backlog spans the new delay: first {sample_index}, newest before \
             {last_before}"
        );
    }
    let status = status_of(&tx).await;
    assert_eq!(status["playout_delay"]["ms"], 2300, "{status}");
    assert_eq!(status["playout_delay"]["max_ms"], 5000, "{status}");
    assert_eq!(status["playout_delay"]["grown_for"]["device"], "cast");
    // More than the maximum: refused to the one that asked, with the numbers.
    cast.send(send(Frame::PlayoutDelayRequest {
        playout_delay_ms: 6000,
    }))
    .await
    .unwrap();
    let reason = loop {
        match Frame::decode(&cast.next().await.unwrap().unwrap()).unwrap() {
            Frame::Refused { reason } => break reason,
            Frame::Audio { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        reason.contains("6000") && reason.contains("5000") && reason.contains("--max-playout"),
        "{reason}"
    );
    let status = status_of(&tx).await;
    assert_eq!(status["playout_delay"]["ms"], 2300, "{status}");
}

async fn status_of(tx: &Transmitter) -> serde_json::Value {
    let body = api_client()
        .get(format!("http://{}/api/v1/status", tx.http_addr))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}
