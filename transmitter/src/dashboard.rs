//! The dashboard at `/`: HTML, CSS and JavaScript embedded in the binary
//! ([`rust_embed`], from `transmitter/dashboard/`), with the vendored uPlot chart
//! library (MIT, its licence beside it): nothing is fetched from the internet. It talks
//! to the control API and its WebSocket ([`crate::control`]).
//!
//! Unknown paths under `/api/` get a JSON 404; other unknown paths a plain one.

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_embed::RustEmbed;

/// The dashboard's files.
#[derive(RustEmbed)]
#[folder = "dashboard/"]
pub struct Assets;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// Serves `uri`'s file (`/` is `index.html`), or a 404.
pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no such route: /{path}") })),
        )
            .into_response();
    }
    let path = if path.is_empty() { "index.html" } else { path };
    match Assets::get(path) {
        Some(file) => {
            let mut resp = file.data.into_owned().into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
