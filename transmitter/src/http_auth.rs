//! Who may use the HTTP API: the API token ([`PairingKey::api_token`]) as
//! `Authorization: Bearer <token>`, or as `?token=<token>` where a header cannot be set
//! (the dashboard's WebSocket).
//!
//! - Every change (any method but GET and HEAD) under `/api/` needs the token.
//! - Reads under `/api/` need it too, unless the transmitter was started with
//!   `--open-read` (status, devices, groups and the live view readable by anyone on
//!   the network); the source windows (`/api/v1/window`: the audio itself) need it
//!   always.
//! - The dashboard's own files (HTML, CSS, JavaScript: no data) and the signed update
//!   bundles (`/api/v1/updates/`) are served to anyone; the dashboard asks for the token (once per browser)
//!   and keeps it.
//!
//! A request without a valid token gets `401` with a JSON error naming what is missing
//! and `WWW-Authenticate: Bearer` (RFC 6750).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use syncstream_protocol::auth::PairingKey;

/// Where the signed update bundles are served (open: each is verified by its
/// Ed25519 signature).
pub const UPDATES_PREFIX: &str = "/api/v1/updates/";

/// The HTTP API's access rule.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    key: PairingKey,
    open_read: bool,
}

impl ApiAccess {
    /// Tokens checked against `key`; `open_read`: reads (but the source windows) are
    /// open to anyone.
    pub fn new(key: PairingKey, open_read: bool) -> Self {
        Self { key, open_read }
    }

    /// Whether a request for `path` with `method` needs the token.
    pub fn needs_token(&self, method: &Method, path: &str) -> bool {
        if !path.starts_with("/api/") {
            return false;
        }
        let read = method == Method::GET || method == Method::HEAD;
        // Signed update bundles: verified by their signature, fetched by receivers'
        // update agents.
        if read && path.starts_with(UPDATES_PREFIX) {
            return false;
        }
        !(read && self.open_read && path != "/api/v1/window")
    }
}

/// The token a request carries: its `Authorization: Bearer` header, else its `token`
/// query parameter.
fn token_of(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    })
}

async fn check(State(access): State<Arc<ApiAccess>>, req: Request, next: Next) -> Response {
    if !access.needs_token(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let reason = match token_of(&req) {
        Some(t) if access.key.check_api_token(&t) => return next.run(req).await,
        Some(_) => "the API token is wrong (it is derived from the pairing key; see docs/security.md)",
        None => "this request needs the API token: send `Authorization: Bearer <token>` (the transmitter prints it at start; `syncstream key token` shows it)",
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({ "error": reason })),
    )
        .into_response()
}

/// `app` behind the access rule `access`.
pub fn protect(app: Router, access: ApiAccess) -> Router {
    app.layer(axum::middleware::from_fn_with_state(
        Arc::new(access),
        check,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, put};
    use tower::ServiceExt;

    fn key() -> PairingKey {
        PairingKey::parse(&"5a".repeat(32)).unwrap()
    }

    fn app(open_read: bool) -> Router {
        let app = Router::new()
            .route("/api/v1/status", get(|| async { "status" }))
            .route("/api/v1/window", get(|| async { "audio" }))
            .route("/api/v1/devices/{d}/mute", put(|| async { "muted" }))
            .route("/api/v1/updates/{f}", get(|| async { "bundle" }))
            .route("/index.html", get(|| async { "page" }));
        protect(app, ApiAccess::new(key(), open_read))
    }

    async fn status(app: Router, method: &str, uri: &str, auth: Option<&str>) -> StatusCode {
        let mut r = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        app.oneshot(r.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn changes_and_reads_need_the_token_unless_reads_are_open() {
        let good = format!("Bearer {}", key().api_token());
        let wrong = format!("Bearer {}", "0".repeat(32));
        for open in [false, true] {
            let a = app(open);
            assert_eq!(
                status(a.clone(), "PUT", "/api/v1/devices/tv/mute", None).await,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                status(a.clone(), "PUT", "/api/v1/devices/tv/mute", Some(&wrong)).await,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                status(a.clone(), "PUT", "/api/v1/devices/tv/mute", Some(&good)).await,
                StatusCode::OK
            );
            let read = status(a.clone(), "GET", "/api/v1/status", None).await;
            assert_eq!(read == StatusCode::OK, open, "{read}");
            // The audio never without the token; the page always.
            assert_eq!(
                status(a.clone(), "GET", "/api/v1/window", None).await,
                StatusCode::UNAUTHORIZED
            );
            let q = format!("/api/v1/window?token={}", key().api_token());
            assert_eq!(status(a.clone(), "GET", &q, None).await, StatusCode::OK);
            assert_eq!(
                status(a.clone(), "GET", "/index.html", None).await,
                StatusCode::OK
            );
            assert_eq!(
                status(a.clone(), "GET", "/api/v1/updates/a.bundle", None).await,
                StatusCode::OK
            );
        }
    }
}
