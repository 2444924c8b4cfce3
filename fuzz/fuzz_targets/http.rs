//! The transmitter's HTTP inputs: the source-window query and the control API's
//! bodies. Every input is used both ways:
//!
//! - as the raw query of `GET /api/v1/window` (`http::WindowRequest::parse`, what the
//!   handler calls); a parsed request is served from a small production
//!   `RollingBuffer` (`window`), which must answer with exactly the samples asked for
//!   or an error;
//! - as the body of every control API route (`parse_body` / `optional_body` with the
//!   routes' own types: adjust, volume, mute, stream, test tone, calibrate, group),
//!   and what parses goes to the checks the control plane runs before changing
//!   anything (`ControlState::set_volume`, `set_muted`, `put_group`, the stream URI
//!   parser `StreamUri::parse`), which must accept or refuse with a 4xx.
//!
//! Checks: no panic; errors are client errors (400, 404, 409, 422).
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncstream_protocol::messages::{GroupRequest, TestToneRequest};
use syncstream_shared::time::us_to_samples;
use syncstream_transmitter::control::api::{
    optional_body, AdjustBody, MuteBody, StreamBody, VolumeBody,
};
use syncstream_transmitter::control::calibrate::CalibrateRequest;
use syncstream_transmitter::control::error::{parse_body, ApiError};
use syncstream_transmitter::control::state::{ControlState, Settings};
use syncstream_transmitter::http::WindowRequest;
use syncstream_transmitter::rolling_buffer::RollingBuffer;
use syncstream_transmitter::source::StreamUri;

const RATE: u32 = 48_000;
/// PTS of sample 0 of the test buffer, µs.
const EPOCH_US: i64 = 1_000_000;
/// The buffer windows are served from (`window` only reads it).
static BUFFER: std::sync::OnceLock<RollingBuffer> = std::sync::OnceLock::new();

fn client_error(e: &ApiError) {
    assert!(matches!(e.status.as_u16(), 400 | 404 | 409 | 422), "{e}");
}

fn window(query: &str) {
    let Ok(q) = WindowRequest::parse(query) else {
        return;
    };
    let b = BUFFER.get_or_init(|| {
        // 1 s buffered, samples 48 000..96 000 (PTS 2 s to 3 s).
        let mut b = RollingBuffer::new(RATE, 1.0, EPOCH_US);
        let chunk = vec![0.25f32; 2 * 960];
        for k in 0..100u64 {
            b.push_interleaved(k * 960, &chunk, 2);
        }
        b
    });
    if let Ok((first_us, samples)) = b.window(q.start_us, q.duration_ms) {
        let n = us_to_samples(q.duration_ms as i64 * 1000, RATE);
        assert_eq!(samples.len() as i64, n);
        let (oldest, newest) = b.span_us();
        assert!(first_us >= oldest && first_us < newest);
    }
}

fn bodies(body: &[u8]) {
    let mut st = ControlState::new(Settings::default());
    match parse_body::<AdjustBody>(body) {
        Ok(_b) => {}
        Err(e) => client_error(&e),
    }
    match parse_body::<VolumeBody>(body) {
        Ok(b) => {
            if let Err(e) = st.set_volume("tv", b.volume) {
                client_error(&e);
            } else {
                assert!((0.0..=1.0).contains(&st.device_settings("tv").volume));
            }
        }
        Err(e) => client_error(&e),
    }
    match parse_body::<MuteBody>(body) {
        Ok(b) => {
            if let Err(e) = st.set_muted("tv", b.muted) {
                client_error(&e);
            }
        }
        Err(e) => client_error(&e),
    }
    match parse_body::<StreamBody>(body) {
        Ok(b) => {
            let _ = StreamUri::parse(&b.uri).map_err(|e| format!("{e:#}"));
        }
        Err(e) => client_error(&e),
    }
    if let Err(e) = optional_body::<TestToneRequest>(body) {
        client_error(&e);
    }
    if let Err(e) = optional_body::<CalibrateRequest>(body) {
        client_error(&e);
    }
    match parse_body::<GroupRequest>(body) {
        Ok(g) => {
            for name in ["kitchen", "default"] {
                if let Err(e) = st.put_group(name, &g, &|s: &str| s == "default" || s == "radio") {
                    client_error(&e);
                }
            }
            let _ = st.groups_json();
            st.settings.check().expect("the state stays valid");
        }
        Err(e) => client_error(&e),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        window(query);
    }
    bodies(data);
});
