//! The control API's errors: a status (400, 404, 409, 422) and a message that names the
//! field or thing and the reason, sent as `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer of the control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong, naming the field.
    pub message: String,
}

impl ApiError {
    /// 400: a body that is not JSON of the right shape.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    /// 404: no such device, group or stream.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    /// 409: the request conflicts with the state (a name taken, the default group).
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    /// 422: well-formed, but a value is out of range or names nothing.
    pub fn unprocessable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, m)
    }
    fn new(status: StatusCode, m: impl Into<String>) -> Self {
        Self {
            status,
            message: m.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Parses a JSON request body into `T`; errors are 400s naming the field
/// (`volume: invalid type: string "loud", expected f64`).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::bad_request(format!(
            "a body of {} bytes is over the limit of {MAX_BODY_BYTES}",
            body.len()
        )));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(if path == "." {
            format!("body: {}", e.inner())
        } else {
            format!("{path}: {}", e.inner())
        })
    })
}

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
