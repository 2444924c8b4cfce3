//! The REST API under `/api/v1` (JSON), served by the transmitter's HTTP server. Every
//! body is parsed whole and checked before anything changes; errors are
//! `{"error": "..."}` with 400 (not JSON of the right shape, naming the field), 404
//! (no such device, group or stream), 409 (a conflict with the state) or 422 (a value
//! out of range or naming nothing).
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/devices` | | `{"devices":[device, ...]}` |
//! | `GET /api/v1/devices/{name}` | | device |
//! | `DELETE /api/v1/devices/{name}` | | `{"forgotten":name}`; 409 while it is online |
//! | `PUT /api/v1/devices/{name}/group` | `{"group":"upstairs"}` | the group |
//! | `PUT /api/v1/devices/{name}/adjust` | `{"manual_adjust_ms":5.0}` (±500) | device |
//! | `PUT /api/v1/devices/{name}/volume` | `{"volume":0.5}` (0..1) | device |
//! | `PUT /api/v1/devices/{name}/mute` | `{"muted":true}` | device |
//! | `POST /api/v1/devices/{name}/resync` | | `{"device":..,"resync":true}` |
//! | `POST /api/v1/devices/{name}/announce` | | `{"device":..,"announce":true}` |
//! | `POST /api/v1/devices/{name}/test_tone` | optional `{"signal":"sweep"}` | `{"device":..,"test_tone":true}` |
//! | `POST /api/v1/calibrate` | `{"devices":[..],"simultaneous":true}` (optional) | `{"started":true,"devices":[..]}` |
//! | `GET /api/v1/calibrate` | | progress and results |
//! | `GET /api/v1/groups` | | `{"groups":[{"name","stream","devices","volume","muted"}]}` |
//! | `PUT /api/v1/groups/{name}` | `{"stream":"radio","devices":["kitchen"],"volume":0.8,"muted":false,"rename":"new"}` (each optional) | the group |
//! | `DELETE /api/v1/groups/{name}` | | `{"deleted":name}` |
//! | `GET /api/v1/streams` | | `{"streams":[{"name","uri","source","added_at_runtime","groups"}]}` |
//! | `PUT /api/v1/streams/{name}` | `{"uri":"pipe:///tmp/radio"}` | `{"name","uri"}` |
//! | `DELETE /api/v1/streams/{name}` | | `{"deleted":name}` |
//! | `GET /api/v1/sync` | | the sync summary ([`super::sync_stats`]) |
//! | `GET /api/v1/ws` | | WebSocket ([`super::ws`]) |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use syncstream_protocol::messages::{GroupRequest, TestToneRequest};

use super::calibrate::CalibrateRequest;
use super::error::{parse_body, ApiError};
use super::ControlPlane;

type Plane = State<Arc<ControlPlane>>;

/// Body of `PUT /api/v1/devices/{name}/adjust`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    /// Manual trim, ms (the control plane checks ±500).
    pub manual_adjust_ms: f64,
}

/// Body of `PUT /api/v1/devices/{name}/group`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    /// The group to move the device into (it must exist).
    pub group: String,
}

/// Body of `PUT /api/v1/devices/{name}/volume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeBody {
    /// Linear volume (the control plane checks 0..=1).
    pub volume: f64,
}

/// Body of `PUT /api/v1/devices/{name}/mute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteBody {
    /// Muted or not.
    pub muted: bool,
}

/// Body of `PUT /api/v1/streams/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamBody {
    /// The stream's URI (checked by `StreamUri::parse` when the stream opens).
    pub uri: String,
}

fn answer(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parses a body that may be empty or only whitespace (then `T::default()`), else as
/// [`parse_body`] does.
///
/// Errors: a 400 naming the field, as [`parse_body`].
pub fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

async fn devices(State(p): Plane) -> Response {
    Json(p.devices_json()).into_response()
}

async fn device(State(p): Plane, Path(name): Path<String>) -> Response {
    answer(p.device_json(&name))
}

async fn forget(State(p): Plane, Path(name): Path<String>) -> Response {
    answer(p.forget_device(&name))
}

async fn set_group(State(p): Plane, Path(name): Path<String>, body: Bytes) -> Response {
    answer(parse_body::<GroupBody>(&body).and_then(|b| p.set_group(&name, &b.group)))
}

async fn adjust(State(p): Plane, Path(name): Path<String>, body: Bytes) -> Response {
    answer(parse_body::<AdjustBody>(&body).and_then(|b| p.set_adjust(&name, b.manual_adjust_ms)))
}

async fn volume(State(p): Plane, Path(name): Path<String>, body: Bytes) -> Response {
    answer(parse_body::<VolumeBody>(&body).and_then(|b| p.set_volume(&name, b.volume)))
}

async fn mute(State(p): Plane, Path(name): Path<String>, body: Bytes) -> Response {
    answer(parse_body::<MuteBody>(&body).and_then(|b| p.set_muted(&name, b.muted)))
}

async fn resync(State(p): Plane, Path(name): Path<String>) -> Response {
    answer(p.resync(&name))
}

async fn announce(State(p): Plane, Path(name): Path<String>) -> Response {
    answer(p.announce(&name))
}

async fn test_tone(State(p): Plane, Path(name): Path<String>, body: Bytes) -> Response {
    answer(optional_body::<TestToneRequest>(&body).and_then(|r| p.test_tone(&name, r)))
}

async fn calibrate(State(p): Plane, body: Bytes) -> Response {
    answer(optional_body::<CalibrateRequest>(&body).and_then(|r| p.calibrate(r)))
}

async fn calibration(State(p): Plane) -> Response {
    Json(p.calibration_json()).into_response()
}

async fn groups(State(p): Plane) -> Response {
    Json(p.groups_json()).into_response()
}

async fn put_group(State(p): Plane, Path(name): Path<String>, body: Bytes) -> Response {
    answer(parse_body::<GroupRequest>(&body).and_then(|r| p.put_group(&name, &r)))
}

async fn delete_group(State(p): Plane, Path(name): Path<String>) -> Response {
    answer(p.delete_group(&name))
}

async fn streams(State(p): Plane) -> Response {
    Json(p.streams_json()).into_response()
}

async fn put_stream(State(p): Plane, Path(name): Path<String>, body: Bytes) -> Response {
    let b = match parse_body::<StreamBody>(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    answer(p.put_stream(&name, &b.uri).await)
}

async fn delete_stream(State(p): Plane, Path(name): Path<String>) -> Response {
    answer(p.delete_stream(&name))
}

async fn sync(State(p): Plane) -> Response {
    Json(p.sync_json()).into_response()
}

/// The control API's routes (see the module docs).
pub fn router(plane: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{name}", get(device).delete(forget))
        .route("/api/v1/devices/{name}/group", put(set_group))
        .route("/api/v1/devices/{name}/adjust", put(adjust))
        .route("/api/v1/devices/{name}/volume", put(volume))
        .route("/api/v1/devices/{name}/mute", put(mute))
        .route("/api/v1/devices/{name}/resync", post(resync))
        .route("/api/v1/devices/{name}/announce", post(announce))
        .route("/api/v1/devices/{name}/test_tone", post(test_tone))
        .route("/api/v1/calibrate", post(calibrate).get(calibration))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/groups/{name}", put(put_group).delete(delete_group))
        .route("/api/v1/streams", get(streams))
        .route(
            "/api/v1/streams/{name}",
            put(put_stream).delete(delete_stream),
        )
        .route("/api/v1/sync", get(sync))
        .route("/api/v1/ws", get(super::ws::handler))
        .with_state(plane)
}
