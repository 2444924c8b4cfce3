//! Voice diagnostics end to end (docs/voice.md), with the real processes: a
//! transmitter whose stream is silent (a named pipe nobody writes) and a receiver
//! playing into a WAV file. `POST /api/v1/devices/kitchen/announce` goes out as the
//! `announce` command on MQTT; the receiver synthesises its announcement with
//! espeak-ng (installed by scripts/setup.sh: this test fails without it) and plays it
//! through its output, where the music was silent: seconds of speech at its set
//! level, then silence again.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::procs::{http_get, poll, Receiver, ReceiverOpts, Transmitter, TransmitterOpts};

/// Frames of 10 ms at 48 kHz, stereo.
const FRAME: usize = 480 * 2;

/// `POST path` with the API token of the default key; the status code and body.
fn http_post(port: u16, path: &str) -> (u16, String) {
    let token = common::default_key().api_token();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// The samples written so far to a WAV file the `wav` output is still writing (32-bit
/// float; the header's sizes are only set when the file is closed, so the samples
/// are read up to the end of the bytes).
fn samples_so_far(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let Some(at) = bytes.windows(4).position(|w| w == b"data") else {
        return Vec::new();
    };
    bytes[(at + 8).min(bytes.len())..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Level of each 10 ms frame, dBFS (RMS).
fn frame_levels(x: &[f32]) -> Vec<f64> {
    x.chunks_exact(FRAME)
        .map(|f| {
            let ms = f.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / f.len() as f64;
            10.0 * ms.max(1e-20).log10()
        })
        .collect()
}

/// A frame above this level is speech, dBFS.
const SPEECH_DBFS: f64 = -40.0;

#[test]
fn an_announcement_from_the_api_is_heard_on_the_receivers_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut tx_opts = TransmitterOpts::new(dir.path());
    tx_opts.source = format!("pipe://{}", dir.path().join("silence.fifo").display());
    let tx = Transmitter::start(tx_opts);
    let wav = dir.path().join("kitchen.wav");
    let mut rx_opts = ReceiverOpts::new("kitchen", &tx.opts);
    rx_opts.wav_output = Some(wav.clone());
    let rx = Receiver::start(rx_opts);
    let api = tx.opts.http_port;

    let playing = poll(Duration::from_secs(40), || {
        let body = http_get(api, "/api/v1/devices/kitchen").ok()?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        (v["state"] == "playing").then_some(())
    });
    assert!(
        playing.is_some(),
        "kitchen does not play:\n{}",
        rx.proc.log_tail(30)
    );
    // The music is silent: everything written so far is.
    let before = samples_so_far(&wav);
    assert!(before.len() > 48_000, "{} samples written", before.len());
    assert!(
        before.iter().all(|s| s.abs() < 1e-6),
        "the stream is not silent"
    );

    assert_eq!(http_post(api, "/api/v1/devices/ghost/announce").0, 404);
    let (code, body) = http_post(api, "/api/v1/devices/kitchen/announce");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"device": "kitchen", "announce": true})
    );

    // Wait until the speech is over: sound, then 1.5 s of silence written after it.
    let levels = poll(Duration::from_secs(40), || {
        let levels = frame_levels(&samples_so_far(&wav));
        let last = levels.iter().rposition(|l| *l > SPEECH_DBFS)?;
        (levels.len() - last > 150).then_some(levels)
    })
    .unwrap_or_else(|| panic!("no announcement on the output:\n{}", rx.proc.log_tail(30)));
    let first = levels.iter().position(|l| *l > SPEECH_DBFS).unwrap();
    let last = levels.iter().rposition(|l| *l > SPEECH_DBFS).unwrap();
    let span_s = (last + 1 - first) as f64 * 0.01;
    let voiced = levels[first..=last]
        .iter()
        .filter(|l| **l > SPEECH_DBFS)
        .count();
    let samples = samples_so_far(&wav);
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    let peak_dbfs = 20.0 * (peak as f64).log10();
    println!(
        "speech: {span_s:.2} s from {:.2} s, {voiced} voiced 10 ms frames ({:.2} s), peak \
         {peak_dbfs:.1} dBFS",
        first as f64 * 0.01,
        voiced as f64 * 0.01
    );
    // "Kitchen online, drift ..., offset ... milliseconds" lasts seconds.
    assert!(span_s > 2.0, "{span_s} s of speech");
    assert!(voiced as f64 * 0.01 > 1.0, "{voiced} voiced frames");
    // At its set level (−6 dBFS peak), well above the silent music.
    assert!((-7.0..=-5.0).contains(&peak_dbfs), "peak {peak_dbfs} dBFS");
    // Silence before it (the music, up to the speech's soft onset) and after it.
    assert!(levels[..first.saturating_sub(50)]
        .iter()
        .all(|l| *l < -100.0));
    assert!(levels[last + 1..].iter().all(|l| *l < SPEECH_DBFS));
    let log = rx.proc.log_tail(200);
    assert!(log.contains("Kitchen online"), "{log}");
}
