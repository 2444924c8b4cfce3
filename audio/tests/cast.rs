//! The `cast` output against the protocol boundary: a Cast v2 endpoint started here
//! (TLS with a self-signed certificate, 4-byte big-endian length + protobuf
//! `CastMessage` framing, JSON payloads) stands in for the Cast device; the HTTP
//! stream is played by a real client (ffmpeg).
#![cfg(feature = "cast")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};
use syncstream_audio::{find_sink, AudioError, BackendConfig, RenderInfo, Sink, StreamFormat};
use syncstream_shared::time::{Clock, MonotonicClock};

/// Cast v2's `CastMessage` (cast_channel.proto), written out by hand.
#[derive(Clone, PartialEq, prost::Message)]
struct CastMessage {
    #[prost(int32, optional, tag = "1")]
    protocol_version: Option<i32>,
    #[prost(string, optional, tag = "2")]
    source_id: Option<String>,
    #[prost(string, optional, tag = "3")]
    destination_id: Option<String>,
    #[prost(string, optional, tag = "4")]
    namespace: Option<String>,
    /// 0 = STRING, 1 = BINARY.
    #[prost(int32, optional, tag = "5")]
    payload_type: Option<i32>,
    #[prost(string, optional, tag = "6")]
    payload_utf8: Option<String>,
    #[prost(bytes = "vec", optional, tag = "7")]
    payload_binary: Option<Vec<u8>>,
}

const NS_CONNECTION: &str = "urn:x-cast:com.google.cast.tp.connection";
const NS_HEARTBEAT: &str = "urn:x-cast:com.google.cast.tp.heartbeat";
const NS_RECEIVER: &str = "urn:x-cast:com.google.cast.receiver";
const NS_MEDIA: &str = "urn:x-cast:com.google.cast.media";
const SESSION: &str = "session-1234";
const TRANSPORT: &str = "transport-1234";

/// A message the endpoint received: namespace, source, destination, payload.
#[derive(Debug, Clone)]
struct Recorded {
    namespace: String,
    source: String,
    destination: String,
    json: Value,
}

/// A Cast device's protocol endpoint on 127.0.0.1 (one connection at a time).
struct Endpoint {
    port: u16,
    messages: Arc<Mutex<Vec<Recorded>>>,
    close: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    fn start() -> Endpoint {
        Self::start_on("127.0.0.1")
    }

    /// An endpoint listening on `ip` (any free port).
    fn start_on(ip: &str) -> Endpoint {
        let key = rcgen::generate_simple_self_signed(vec!["cast-device.local".to_string()])
            .expect("certificate");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![key.cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let close = Arc::new(AtomicBool::new(false));
        let (m2, c2) = (messages.clone(), close.clone());
        let thread = std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { return };
                if c2.load(Ordering::Relaxed) {
                    return;
                }
                serve(sock, config.clone(), &m2, &c2);
                if c2.load(Ordering::Relaxed) {
                    return;
                }
            }
        });
        Endpoint {
            port,
            messages,
            close,
            thread: Some(thread),
        }
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.messages.lock().unwrap().clone()
    }

    /// Messages of `typ` on `namespace`.
    fn of_type(&self, namespace: &str, typ: &str) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|m| m.namespace == namespace && m.json["type"] == typ)
            .collect()
    }

    /// Drops the connection (as a device that went away) and stops accepting.
    fn close(&mut self) {
        self.close.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.close();
    }
}

fn receiver_status(request_id: &Value, apps: bool, level: f64, muted: bool) -> Value {
    let applications = if apps {
        json!([{
            "appId": "CC1AD845",
            "displayName": "Default Media Receiver",
            "sessionId": SESSION,
            "transportId": TRANSPORT,
            "statusText": "",
            "namespaces": [{"name": NS_MEDIA}, {"name": NS_CONNECTION}],
        }])
    } else {
        json!([])
    };
    json!({
        "type": "RECEIVER_STATUS",
        "requestId": request_id,
        "status": {"applications": applications, "volume": {"level": level, "muted": muted}},
    })
}

/// Serves one connection until the peer leaves or `close` is set.
fn serve(
    sock: TcpStream,
    config: Arc<ServerConfig>,
    messages: &Mutex<Vec<Recorded>>,
    close: &AtomicBool,
) {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let conn = ServerConnection::new(config).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let mut pending = Vec::new();
    let (mut level, mut muted, mut running) = (1.0, false, false);
    loop {
        if close.load(Ordering::Relaxed) {
            return;
        }
        let mut buf = [0u8; 4096];
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        while pending.len() >= 4 {
            let len = u32::from_be_bytes(pending[..4].try_into().unwrap()) as usize;
            if pending.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = pending.drain(..4 + len).collect();
            let msg = CastMessage::decode(&frame[4..]).expect("a valid CastMessage");
            assert_eq!(msg.protocol_version, Some(0), "CASTV2_1_0");
            assert_eq!(msg.payload_type, Some(0), "STRING payload");
            let json: Value = serde_json::from_str(msg.payload_utf8.as_deref().unwrap()).unwrap();
            let rec = Recorded {
                namespace: msg.namespace.unwrap_or_default(),
                source: msg.source_id.unwrap_or_default(),
                destination: msg.destination_id.unwrap_or_default(),
                json,
            };
            messages.lock().unwrap().push(rec.clone());
            let rid = rec.json["requestId"].clone();
            let reply = match (
                rec.namespace.as_str(),
                rec.json["type"].as_str().unwrap_or(""),
            ) {
                (NS_HEARTBEAT, "PING") => {
                    Some((NS_HEARTBEAT, "receiver-0", json!({"type": "PONG"})))
                }
                (NS_RECEIVER, "GET_STATUS") => Some((
                    NS_RECEIVER,
                    "receiver-0",
                    receiver_status(&rid, running, level, muted),
                )),
                (NS_RECEIVER, "LAUNCH") => {
                    running = rec.json["appId"] == "CC1AD845";
                    Some((
                        NS_RECEIVER,
                        "receiver-0",
                        receiver_status(&rid, running, level, muted),
                    ))
                }
                (NS_RECEIVER, "STOP") => {
                    running = false;
                    Some((
                        NS_RECEIVER,
                        "receiver-0",
                        receiver_status(&rid, running, level, muted),
                    ))
                }
                (NS_RECEIVER, "SET_VOLUME") => {
                    if let Some(l) = rec.json["volume"]["level"].as_f64() {
                        level = l;
                    }
                    if let Some(m) = rec.json["volume"]["muted"].as_bool() {
                        muted = m;
                    }
                    Some((
                        NS_RECEIVER,
                        "receiver-0",
                        receiver_status(&rid, running, level, muted),
                    ))
                }
                (NS_MEDIA, "LOAD") => Some((
                    NS_MEDIA,
                    TRANSPORT,
                    json!({
                        "type": "MEDIA_STATUS",
                        "requestId": rid,
                        "status": [{
                            "mediaSessionId": 1,
                            "playbackRate": 1,
                            "playerState": "PLAYING",
                            "currentTime": 0,
                            "supportedMediaCommands": 15,
                            "volume": {"level": 1, "muted": false},
                            "media": rec.json["media"],
                        }],
                    }),
                )),
                _ => None,
            };
            if let Some((ns, src, payload)) = reply {
                let out = CastMessage {
                    protocol_version: Some(0),
                    source_id: Some(src.to_string()),
                    destination_id: Some(rec.source.clone()),
                    namespace: Some(ns.to_string()),
                    payload_type: Some(0),
                    payload_utf8: Some(payload.to_string()),
                    payload_binary: None,
                }
                .encode_to_vec();
                let mut framed = (out.len() as u32).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if tls.write_all(&framed).and_then(|_| tls.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

fn config(device: String) -> BackendConfig {
    BackendConfig {
        device: Some(device),
        format: StreamFormat {
            sample_rate: 48_000,
            channels: 2,
        },
        clock: Arc::new(MonotonicClock),
    }
}

fn open(device: String) -> Box<dyn Sink> {
    find_sink("cast").expect("the cast backend is registered")(&config(device)).unwrap()
}

fn silence() -> syncstream_audio::RenderFn {
    Box::new(|buf: &mut [f32], _| {
        buf.fill(0.0);
        RenderInfo::default()
    })
}

/// Waits (bounded) until `f` holds.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The stream URL the sink LOADed.
fn loaded_url(ep: &Endpoint) -> String {
    let loads = ep.of_type(NS_MEDIA, "LOAD");
    assert_eq!(loads.len(), 1, "one LOAD: {loads:?}");
    loads[0].json["media"]["contentId"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn session_launches_loads_the_stream_sets_volume_and_reports_a_dropped_connection() {
    let mut ep = Endpoint::start();
    let target = format!("127.0.0.1:{}", ep.port);
    let mut sink = open(target.clone());
    assert!(sink.has_hardware_volume());
    assert_eq!(sink.format().sample_rate, 48_000);
    sink.start(silence()).unwrap();

    // CONNECT to receiver-0, LAUNCH of the Default Media Receiver.
    let connects = ep.of_type(NS_CONNECTION, "CONNECT");
    assert!(
        connects.iter().any(|m| m.destination == "receiver-0"),
        "{connects:?}"
    );
    let launches = ep.of_type(NS_RECEIVER, "LAUNCH");
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].json["appId"], "CC1AD845");
    assert!(launches[0].json["requestId"].as_u64().is_some());
    // Then CONNECT to the app's transport and a LOAD there.
    assert!(connects
        .iter()
        .chain(ep.of_type(NS_CONNECTION, "CONNECT").iter())
        .any(|m| m.destination == TRANSPORT));
    let load = ep.of_type(NS_MEDIA, "LOAD").remove(0);
    assert_eq!(load.destination, TRANSPORT);
    assert_eq!(load.json["sessionId"], SESSION);
    assert_eq!(load.json["media"]["contentType"], "audio/wav");
    assert_eq!(load.json["media"]["streamType"], "LIVE");
    assert_eq!(load.json["autoplay"], true);
    let url = loaded_url(&ep);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/stream.wav"),
        "{url}"
    );

    // The URL is reachable and serves an endless WAV.
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches("/stream.wav");
    let mut http = TcpStream::connect(hostport).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(http, "GET /stream.wav HTTP/1.1\r\nHost: {hostport}\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"data") {
        let n = http.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-type: audio/wav"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(!text.contains("content-length"), "{text}");
    let riff = got
        .windows(4)
        .position(|w| w == b"RIFF")
        .expect("a RIFF header");
    assert_eq!(&got[riff + 4..riff + 8], &[0xff; 4]);
    drop(http);

    // Volume and mute map to the receiver's SET_VOLUME.
    sink.set_volume(0.3, false).unwrap();
    let vols = ep.of_type(NS_RECEIVER, "SET_VOLUME");
    assert!(vols.iter().all(|m| m.destination == "receiver-0"));
    assert!(
        vols.iter()
            .any(|m| (m.json["volume"]["level"].as_f64().unwrap_or(-1.0) - 0.3).abs() < 1e-9),
        "{vols:?}"
    );
    assert!(
        vols.iter().any(|m| m.json["volume"]["muted"] == false),
        "{vols:?}"
    );
    sink.set_volume(0.5, true).unwrap();
    let vols = ep.of_type(NS_RECEIVER, "SET_VOLUME");
    assert!(
        vols.iter().any(|m| m.json["volume"]["muted"] == true),
        "{vols:?}"
    );
    assert_eq!(sink.failure(), None);

    // The device goes away: failure() names it.
    ep.close();
    wait_until("failure()", Duration::from_secs(5), || {
        sink.failure().is_some()
    });
    let why = sink.failure().unwrap();
    assert!(why.contains(&target), "{why}");
    let err = sink.set_volume(0.2, false).unwrap_err();
    assert_eq!(err.backend, "cast");
    sink.stop().unwrap();
}

#[test]
fn stop_ends_the_session() {
    let ep = Endpoint::start();
    let mut sink = open(format!("127.0.0.1:{}", ep.port));
    sink.start(silence()).unwrap();
    let url = loaded_url(&ep);
    sink.stop().unwrap();
    let stops = ep.of_type(NS_RECEIVER, "STOP");
    assert_eq!(stops.len(), 1, "{:?}", ep.recorded());
    assert_eq!(stops[0].json["sessionId"], SESSION);
    // The HTTP server is gone too.
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches("/stream.wav");
    assert!(TcpStream::connect(hostport).is_err());
}

#[test]
fn errors_name_the_backend_the_target_and_the_reason() {
    // Connection refused: a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let err: AudioError = open(target.clone()).start(silence()).unwrap_err();
    assert_eq!(err.backend, "cast");
    assert_eq!(err.device, target);
    assert!(err.reason.to_lowercase().contains("refused"), "{err}");

    // Not a Cast device: a plain TCP server that closes at once (TLS fails).
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (s, _) = plain.accept().unwrap();
        drop(s);
    });
    let err = open(format!("127.0.0.1:{port}"))
        .start(silence())
        .unwrap_err();
    assert!(err.reason.contains("TLS"), "{err}");
    t.join().unwrap();

    // No device given.
    let err = find_sink("cast").unwrap()(&BackendConfig {
        device: None,
        ..config(String::new())
    })
    .err()
    .unwrap();
    assert_eq!(err.backend, "cast");
}

/// Samples per second of a 1 kHz sine at −6 dBFS, rendered by the sink and decoded by
/// ffmpeg from the HTTP stream.
#[test]
fn ffmpeg_plays_the_stream_as_a_gapless_1khz_tone() {
    let ep = Endpoint::start();
    let mut sink = open(format!("127.0.0.1:{}", ep.port));
    let amplitude = 10f64.powf(-6.0 / 20.0);
    let seen: Arc<Mutex<Vec<(i64, i64)>>> = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
    let seen2 = seen.clone();
    let clock = MonotonicClock;
    let mut phase = 0u64;
    sink.start(Box::new(move |buf: &mut [f32], dac| {
        for fr in buf.chunks_exact_mut(2) {
            let x = (amplitude
                * (2.0 * std::f64::consts::PI * 1000.0 * phase as f64 / 48_000.0).sin())
                as f32;
            fr[0] = x;
            fr[1] = x;
            phase = (phase + 1) % 48;
        }
        seen2.lock().unwrap().push((dac, clock.now_us()));
        RenderInfo::default()
    }))
    .unwrap();
    let url = loaded_url(&ep);

    let out = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            &url,
            "-t",
            "2",
            "-f",
            "s16le",
            "-ac",
            "2",
            "-ar",
            "48000",
            "-",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("ffmpeg (needed: scripts/setup.sh installs it) could not run: {e}")
        });
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sink.stop().unwrap();

    let samples: Vec<f64> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f64 / 32768.0)
        .collect();
    let left: Vec<f64> = samples.iter().step_by(2).copied().collect();
    let right: Vec<f64> = samples.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(left.len(), 96_000, "2 s of audio");
    assert_eq!(left, right);

    // Frequency: rising zero crossings over the 2 s.
    let crossings = left
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    assert!(
        (1999..=2001).contains(&crossings),
        "{crossings} rising zero crossings in 2 s"
    );
    // Level: within 1 dB of −6 dBFS (peak of the sine, from its RMS).
    let rms = (left.iter().map(|x| x * x).sum::<f64>() / left.len() as f64).sqrt();
    let level_db = 20.0 * (rms * 2f64.sqrt()).log10();
    assert!((level_db + 6.0).abs() < 1.0, "level {level_db:.2} dBFS");
    // No gaps: every sample continues the sine (x[n+1] = 2cos(w) x[n] - x[n-1]).
    let c = 2.0 * (2.0 * std::f64::consts::PI * 1000.0 / 48_000.0).cos();
    let worst = left
        .windows(3)
        .map(|w| (w[2] - (c * w[1] - w[0])).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 0.001,
        "a discontinuity of {worst} (a gap or a jump in the stream)"
    );

    // DAC times: 960 frames (20 ms at 48 kHz) apart, keeping pace with real time.
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 100, "{} blocks rendered", seen.len());
    assert!(seen.windows(2).all(|w| w[1].0 - w[0].0 == 20_000));
    let (first, last) = (seen[1], seen[seen.len() - 1]);
    let dac_span = (last.0 - first.0) as f64;
    let real_span = (last.1 - first.1) as f64;
    assert!(
        (dac_span / real_span - 1.0).abs() < 0.01,
        "DAC time advanced {dac_span} µs in {real_span} µs of real time"
    );
}

/// mDNS: a Cast device announced as `_googlecast._tcp.local.` with TXT `fn` is found
/// by its friendly name, and the sink plays on it; an unknown name's error lists it.
#[test]
fn a_device_is_found_by_its_friendly_name_over_mdns() {
    use syncstream_audio::cast::discover::{resolve, SERVICE_TYPE};
    let ep = Endpoint::start_on("0.0.0.0");
    let name = format!("SyncStream Test Speaker {}", std::process::id());
    let mdns = mdns_sd::ServiceDaemon::new().unwrap();
    let info = mdns_sd::ServiceInfo::new(
        SERVICE_TYPE,
        &format!("Test-Speaker-{}", std::process::id()),
        "syncstream-test-speaker.local.",
        (),
        ep.port,
        &[("fn", name.as_str()), ("md", "Test Speaker")][..],
    )
    .unwrap()
    .enable_addr_auto();
    mdns.register(info).unwrap();

    let found = resolve(&name, Duration::from_secs(5)).unwrap();
    assert_eq!(found.addr.port(), ep.port);
    assert_eq!(found.name, name);
    let err = resolve("No Such Speaker", Duration::from_secs(3)).unwrap_err();
    assert!(
        err.contains("No Such Speaker") && err.contains(&name),
        "{err}"
    );

    // The sink, given the friendly name, plays on it.
    let mut sink = open(name.clone());
    sink.start(silence()).unwrap();
    assert_eq!(ep.of_type(NS_MEDIA, "LOAD").len(), 1);
    sink.stop().unwrap();
    let _ = mdns.shutdown();
}
