//! Serving signed update bundles (made by `syncstream release sign`) from a folder:
//!
//! - `GET /api/v1/updates/<file>.bundle`: the bundle file (`application/octet-stream`);
//!   404 for a file that is not there, 400 for a name that is not a plain
//!   `[A-Za-z0-9._-]+.bundle`. Errors are `{"error": "..."}`.
//! - every [`RESCAN`] the folder is read again; when the set of bundles changed (and on
//!   every MQTT connect) their manifests are announced, retained, on
//!   `syncstream/update` as `{"bundles":[{"version","target","url","size","sha256","signature"}]}`
//!   with relative URLs (devices resolve them against this server).
//!
//! The transmitter checks only the bundles' format (a file whose header is malformed is
//! logged and left out); signatures are the devices' business: they pin the key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path as UrlPath;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rumqttc::QoS;
use syncstream_protocol::mqtt::{self, BrokerUrl};
use syncstream_update::announce::{AnnouncedBundle, Announcement};
use syncstream_update::bundle::{self, MAGIC, MAX_BUNDLE_BYTES, MAX_MANIFEST_BYTES};
use tracing::warn;

/// How often the folder is read again.
pub const RESCAN: Duration = Duration::from_secs(2);

fn error(status: StatusCode, msg: impl ToString) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": msg.to_string() })),
    )
        .into_response()
}

/// Whether `name` is a plain bundle file name (no path, no dot-files).
fn plain_bundle_name(name: &str) -> bool {
    name.len() <= 200
        && name.ends_with(".bundle")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The HTTP routes serving the bundles in `dir`.
pub fn router(dir: PathBuf) -> Router {
    let dir = Arc::new(dir);
    Router::new().route(
        "/api/v1/updates/{file}",
        get(move |UrlPath(file): UrlPath<String>| {
            let dir = dir.clone();
            async move { serve(&dir, &file).await }
        }),
    )
}

async fn serve(dir: &Path, file: &str) -> Response {
    if !plain_bundle_name(file) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("'{file}' is not a bundle file name ([A-Za-z0-9._-]+.bundle)"),
        );
    }
    let path = dir.join(file);
    let file = file.to_string();
    let read = tokio::task::spawn_blocking(move || read_bundle(&path)).await;
    match read {
        Ok(Ok(Some(bytes))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no bundle {file}")),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{file}: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{file}: {e}")),
    }
}

/// The bundle at `path`; `None` if there is no such file.
fn read_bundle(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() <= MAX_BUNDLE_BYTES => {}
        Ok(m) if m.is_file() => return Err(format!("larger than {MAX_BUNDLE_BYTES} bytes")),
        _ => return Ok(None),
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| format!("cannot read it: {e}"))
}

/// The announcement of the bundles in `dir` (sorted by file name), and the problems
/// found: unreadable or malformed bundles are left out, a missing folder is an empty
/// list.
pub fn scan(dir: &Path) -> (Announcement, Vec<String>) {
    let mut problems = Vec::new();
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| plain_bundle_name(n))
            .collect(),
        Err(e) => {
            problems.push(format!("update bundles folder {}: {e}", dir.display()));
            Vec::new()
        }
    };
    names.sort();
    let mut bundles = Vec::new();
    for name in names {
        let path = dir.join(&name);
        match read_manifest(&path) {
            Ok(m) => bundles.push(AnnouncedBundle::new(
                &m,
                format!("{}{name}", syncstream_update::HTTP_PREFIX),
            )),
            Err(e) => problems.push(format!("update bundle {} left out: {e:#}", path.display())),
        }
    }
    (Announcement { bundles }, problems)
}

fn read_manifest(path: &Path) -> anyhow::Result<bundle::Manifest> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take((MAGIC.len() + MAX_MANIFEST_BYTES + 1) as u64)
        .read_to_end(&mut head)?;
    Ok(bundle::read_header(&head)?.0)
}

/// Announces the bundles of `dir` on `broker`, retained, and again whenever they
/// change; runs forever.
pub async fn announce(broker: BrokerUrl, dir: PathBuf) {
    let (client, eventloop) = mqtt::connect(&broker, "syncstream-tx-updates", None);
    let (first, mut problems) = scan(&dir);
    for p in &problems {
        warn!("{p}");
    }
    let current = Arc::new(Mutex::new(first));
    let publish = {
        let client = client.clone();
        move |a: &Announcement| {
            let payload = serde_json::to_vec(a).unwrap_or_default();
            if let Err(e) = client.try_publish(
                syncstream_update::UPDATE_TOPIC,
                QoS::AtLeastOnce,
                true,
                payload,
            ) {
                warn!("cannot announce updates: {e}");
            }
        }
    };
    {
        let (current, publish) = (current.clone(), publish.clone());
        tokio::spawn(mqtt::drive(
            client,
            eventloop,
            Vec::new(),
            move |_| publish(&current.lock().unwrap_or_else(|e| e.into_inner())),
            |_| {},
        ));
    }
    let mut tick = tokio::time::interval(RESCAN);
    loop {
        tick.tick().await;
        let (fresh, now) = scan(&dir);
        // Each problem is logged when it appears, not at every scan.
        for p in now.iter().filter(|p| !problems.contains(p)) {
            warn!("{p}");
        }
        problems = now;
        let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != fresh {
            tracing::info!("update bundles now: {}", describe(&fresh));
            *cur = fresh;
            publish(&cur);
        }
    }
}

fn describe(a: &Announcement) -> String {
    if a.bundles.is_empty() {
        return "none".into();
    }
    a.bundles
        .iter()
        .map(|b| format!("{} for {}", b.version, b.target))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_bundle_names_are_served() {
        assert!(plain_bundle_name(
            "syncstream-0.2.0-arm-unknown-linux-musleabihf.bundle"
        ));
        for bad in [
            "../etc/passwd",
            "a/b.bundle",
            ".hidden.bundle",
            "x.bin",
            "a b.bundle",
        ] {
            assert!(!plain_bundle_name(bad), "{bad}");
        }
    }

    #[test]
    fn scan_announces_good_bundles_and_leaves_bad_ones_out() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519_dalek_key();
        let m = bundle::sign(b"bin", "0.2.0", "x86_64-unknown-linux-gnu", &key).unwrap();
        std::fs::write(dir.path().join("good.bundle"), bundle::encode(&m, b"bin")).unwrap();
        std::fs::write(dir.path().join("bad.bundle"), b"not a bundle").unwrap();
        std::fs::write(dir.path().join("other.txt"), b"x").unwrap();
        let (a, problems) = scan(dir.path());
        assert_eq!(a.bundles.len(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("bad.bundle"), "{problems:?}");
        assert_eq!(a.bundles[0].url, "/api/v1/updates/good.bundle");
        assert_eq!(a.bundles[0].manifest(), m);
    }

    fn ed25519_dalek_key() -> syncstream_update::keys::SigningKey {
        syncstream_update::keys::SigningKey::from_bytes(&[3; 32])
    }
}
