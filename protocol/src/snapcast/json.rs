//! The JSON message bodies: [`ServerSettings`] (type 3), [`Hello`] (type 5) and
//! [`ClientInfo`] (type 7). On the wire each is a u32 little-endian length and compact
//! UTF-8 JSON text without a NUL (`common/message/json_message.hpp`, v0.26.0).
//!
//! Decoding ignores unknown keys (newer servers add some, e.g. a Hello's `Auth`), checks
//! every known key's type, and refuses out-of-range values with an error naming the key.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::SnapError;

/// Largest `bufferMs` accepted in [`ServerSettings`], ms (10 minutes; snapserver's
/// default `stream.buffer` is 1000). A sanity bound, not a Snapcast limit.
pub const MAX_BUFFER_MS: i32 = 600_000;
/// Smallest `latency` accepted in [`ServerSettings`], ms: snapserver clamps a client's
/// latency to `[-10000, stream.buffer]` (`server/server.cpp`, `Client.SetLatency`).
pub const MIN_LATENCY_MS: i32 = -10_000;
/// The `SnapStreamProtocolVersion` snapclient 0.26 sends in its [`Hello`].
pub const HELLO_PROTOCOL_VERSION: u32 = 2;

/// Type 3, server → client: playback settings. The first answers the Hello
/// (`refersTo` = its id); more follow after every volume, latency, name or mute change.
///
/// JSON keys `bufferMs`, `latency`, `volume`, `muted`; a missing key reads as
/// 0 / 0 / 100 / false (`common/message/server_settings.hpp`); unknown keys are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// `bufferMs`: the server's end-to-end buffer, ms, `0..=`[`MAX_BUFFER_MS`].
    pub buffer_ms: i32,
    /// `latency`: this client's configured latency, ms, subtracted from the buffer
    /// (positive plays earlier), [`MIN_LATENCY_MS`]`..=`[`MAX_BUFFER_MS`].
    pub latency_ms: i32,
    /// `volume`: percent, `0..=100`.
    pub volume: u8,
    /// `muted`: the client's own mute or its group's.
    pub muted: bool,
}

impl Default for ServerSettings {
    /// The values of missing keys: 0 ms, 0 ms, 100 %, not muted.
    fn default() -> Self {
        ServerSettings {
            buffer_ms: 0,
            latency_ms: 0,
            volume: 100,
            muted: false,
        }
    }
}

/// Type 5, client → server, the first message: who the client is.
///
/// Always encoded with all nine keys: snapserver 0.26 aborts on a Hello that lacks any
/// of the six string keys (`common/message/hello.hpp` reads them without defaults).
/// Decoding requires those six too; `Instance` defaults to 1, `ID` to `MAC`,
/// `SnapStreamProtocolVersion` to 1 (the server's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// `MAC`: shown as `host.mac`.
    pub mac: String,
    /// `HostName`: shown as `host.name`.
    pub host_name: String,
    /// `Version`: shown as `snapclient.version`.
    pub version: String,
    /// `ClientName`: shown as `snapclient.name`.
    pub client_name: String,
    /// `OS`: shown as `host.os`.
    pub os: String,
    /// `Arch`: shown as `host.arch`.
    pub arch: String,
    /// `Instance`: the server's client id is `ID` when 1, else `ID#<Instance>`.
    pub instance: u32,
    /// `ID`: the unique client id the server keeps settings under.
    pub id: String,
    /// `SnapStreamProtocolVersion` ([`HELLO_PROTOCOL_VERSION`] for a 0.26 client).
    pub protocol_version: u32,
}

impl Hello {
    /// A SyncStream Hello: client id `id`, `ClientName` "SyncStream", this build's
    /// OS and architecture, instance 1, protocol version 2.
    pub fn syncstream(id: &str, mac: &str, host_name: &str, version: &str) -> Hello {
        Hello {
            mac: mac.to_string(),
            host_name: host_name.to_string(),
            version: version.to_string(),
            client_name: "SyncStream".to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            instance: 1,
            id: id.to_string(),
            protocol_version: HELLO_PROTOCOL_VERSION,
        }
    }
}

/// Type 7, client → server (optional): the client's own volume changed. The server
/// stores it and notifies control clients; it sends no ServerSettings back.
///
/// JSON `{"volume":<0..100>,"muted":<bool>}`; missing keys read as 100 / false
/// (`common/message/client_info.hpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// `volume`: percent, `0..=100`.
    pub volume: u8,
    /// `muted`.
    pub muted: bool,
}

impl ServerSettings {
    /// The compact JSON text sent as the payload's string.
    ///
    /// Errors: [`SnapError::Invalid`] naming the field when a value is out of range.
    pub fn to_json(&self) -> Result<String, SnapError> {
        check_server_settings(
            self.buffer_ms as i64,
            self.latency_ms as i64,
            self.volume as i64,
        )?;
        Ok(serde_json::json!({
            "bufferMs": self.buffer_ms,
            "latency": self.latency_ms,
            "muted": self.muted,
            "volume": self.volume,
        })
        .to_string())
    }

    /// Parses the JSON text (the payload's string, without its length).
    ///
    /// Errors: [`SnapError::Invalid`]: `"ServerSettings JSON"` for text that is not a
    /// JSON object or a key of the wrong type (the reason names the key);
    /// `"ServerSettings.<key>"` for a value out of range.
    pub fn from_json(text: &[u8]) -> Result<ServerSettings, SnapError> {
        let j: ServerSettingsJson = parse_json(text, "ServerSettings JSON")?;
        check_server_settings(j.buffer_ms, j.latency, j.volume)?;
        Ok(ServerSettings {
            buffer_ms: j.buffer_ms as i32,
            latency_ms: j.latency as i32,
            volume: j.volume as u8,
            muted: j.muted,
        })
    }
}

impl Hello {
    /// The compact JSON text with all nine keys.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "Arch": self.arch,
            "ClientName": self.client_name,
            "HostName": self.host_name,
            "ID": self.id,
            "Instance": self.instance,
            "MAC": self.mac,
            "OS": self.os,
            "SnapStreamProtocolVersion": self.protocol_version,
            "Version": self.version,
        })
        .to_string()
    }

    /// Parses the JSON text (see the type's docs for required keys and defaults).
    ///
    /// Errors: [`SnapError::Invalid`] `"Hello JSON"` naming the missing or mistyped key.
    pub fn from_json(text: &[u8]) -> Result<Hello, SnapError> {
        let j: HelloJson = parse_json(text, "Hello JSON")?;
        Ok(Hello {
            id: j.id.unwrap_or_else(|| j.mac.clone()),
            mac: j.mac,
            host_name: j.host_name,
            version: j.version,
            client_name: j.client_name,
            os: j.os,
            arch: j.arch,
            instance: j.instance,
            protocol_version: j.protocol_version,
        })
    }
}

impl ClientInfo {
    /// The compact JSON text.
    ///
    /// Errors: [`SnapError::Invalid`] `"ClientInfo.volume"` when over 100.
    pub fn to_json(&self) -> Result<String, SnapError> {
        check_volume(self.volume as i64, "ClientInfo.volume")?;
        Ok(serde_json::json!({ "muted": self.muted, "volume": self.volume }).to_string())
    }

    /// Parses the JSON text (missing keys read as 100 / false).
    ///
    /// Errors: [`SnapError::Invalid`]: `"ClientInfo JSON"` for text that is not a JSON
    /// object or a key of the wrong type, `"ClientInfo.volume"` for a value out of range.
    pub fn from_json(text: &[u8]) -> Result<ClientInfo, SnapError> {
        let j: ClientInfoJson = parse_json(text, "ClientInfo JSON")?;
        check_volume(j.volume, "ClientInfo.volume")?;
        Ok(ClientInfo {
            volume: j.volume as u8,
            muted: j.muted,
        })
    }
}

#[derive(Deserialize)]
struct ServerSettingsJson {
    #[serde(rename = "bufferMs", default)]
    buffer_ms: i64,
    #[serde(default)]
    latency: i64,
    #[serde(default = "full_volume")]
    volume: i64,
    #[serde(default)]
    muted: bool,
}

#[derive(Deserialize)]
struct ClientInfoJson {
    #[serde(default = "full_volume")]
    volume: i64,
    #[serde(default)]
    muted: bool,
}

#[derive(Deserialize)]
struct HelloJson {
    #[serde(rename = "MAC")]
    mac: String,
    #[serde(rename = "HostName")]
    host_name: String,
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "ClientName")]
    client_name: String,
    #[serde(rename = "OS")]
    os: String,
    #[serde(rename = "Arch")]
    arch: String,
    #[serde(rename = "Instance", default = "one")]
    instance: u32,
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "SnapStreamProtocolVersion", default = "one")]
    protocol_version: u32,
}

fn full_volume() -> i64 {
    100
}

fn one() -> u32 {
    1
}

/// Parses JSON text that must be an object; the error names the key that failed.
fn parse_json<T: DeserializeOwned>(text: &[u8], field: &'static str) -> Result<T, SnapError> {
    let json: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| SnapError::invalid(field, format!("not valid JSON: {e}")))?;
    if !json.is_object() {
        // serde would otherwise take an array as the struct's fields in order.
        return Err(SnapError::invalid(field, "not a JSON object"));
    }
    serde_path_to_error::deserialize(json).map_err(|e| {
        let reason = if e.path().to_string() == "." {
            e.inner().to_string()
        } else {
            format!("{}: {}", e.path(), e.inner())
        };
        SnapError::invalid(field, reason)
    })
}

fn check_volume(volume: i64, field: &'static str) -> Result<(), SnapError> {
    if !(0..=100).contains(&volume) {
        return Err(SnapError::invalid(
            field,
            format!("{volume} is outside 0..=100 percent"),
        ));
    }
    Ok(())
}

fn check_server_settings(buffer_ms: i64, latency: i64, volume: i64) -> Result<(), SnapError> {
    if !(0..=MAX_BUFFER_MS as i64).contains(&buffer_ms) {
        return Err(SnapError::invalid(
            "ServerSettings.bufferMs",
            format!("{buffer_ms} ms is outside 0..={MAX_BUFFER_MS} ms"),
        ));
    }
    if !(MIN_LATENCY_MS as i64..=MAX_BUFFER_MS as i64).contains(&latency) {
        return Err(SnapError::invalid(
            "ServerSettings.latency",
            format!("{latency} ms is outside {MIN_LATENCY_MS}..={MAX_BUFFER_MS} ms"),
        ));
    }
    check_volume(volume, "ServerSettings.volume")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapcast::body::Body;
    use crate::snapcast::header::types;
    use crate::snapcast::{Message, HEADER_BYTES};

    fn json_payload(text: &str) -> Vec<u8> {
        let mut p = (text.len() as u32).to_le_bytes().to_vec();
        p.extend_from_slice(text.as_bytes());
        p
    }

    #[test]
    fn hello_sends_all_nine_keys() {
        let m = Message::new(Body::Hello(Hello::syncstream("id", "mac", "host", "1")));
        let b = m.encode().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b[HEADER_BYTES + 4..]).unwrap();
        let obj = v.as_object().unwrap();
        for key in [
            "MAC",
            "HostName",
            "Version",
            "ClientName",
            "OS",
            "Arch",
            "Instance",
            "ID",
            "SnapStreamProtocolVersion",
        ] {
            assert!(obj.contains_key(key), "missing {key}");
        }
        assert_eq!(obj.len(), 9);
        assert_eq!(v["SnapStreamProtocolVersion"], 2);
        assert_eq!(v["Instance"], 1);
        assert_eq!(v["ClientName"], "SyncStream");
    }

    #[test]
    fn hello_decoding_defaults_and_required_keys() {
        let p = json_payload(
            r#"{"MAC":"m","HostName":"h","Version":"v","ClientName":"c","OS":"o","Arch":"a"}"#,
        );
        let Body::Hello(h) = Body::decode(types::HELLO, &p).unwrap() else {
            panic!()
        };
        assert_eq!((h.id.as_str(), h.instance, h.protocol_version), ("m", 1, 1));
        let e = Body::decode(types::HELLO, &json_payload(r#"{"MAC":"m"}"#)).unwrap_err();
        assert!(e.to_string().contains("Hello JSON"), "{e}");
        assert!(e.to_string().contains("HostName"), "{e}");
    }

    #[test]
    fn server_settings_defaults_and_ranges() {
        let s = Body::decode(types::SERVER_SETTINGS, &json_payload("{}")).unwrap();
        assert_eq!(s, Body::ServerSettings(ServerSettings::default()));
        let s = Body::decode(
            types::SERVER_SETTINGS,
            &json_payload(r#"{"bufferMs":1000,"latency":25,"muted":false,"volume":42,"new":[1]}"#),
        )
        .unwrap();
        assert_eq!(
            s,
            Body::ServerSettings(ServerSettings {
                buffer_ms: 1000,
                latency_ms: 25,
                volume: 42,
                muted: false
            })
        );
        for (json, field) in [
            (r#"{"volume":101}"#, "ServerSettings.volume"),
            (r#"{"volume":-1}"#, "ServerSettings.volume"),
            (r#"{"volume":1e300}"#, "ServerSettings JSON"),
            (r#"{"bufferMs":-1}"#, "ServerSettings.bufferMs"),
            (r#"{"bufferMs":99999999999}"#, "ServerSettings.bufferMs"),
            (r#"{"latency":-10001}"#, "ServerSettings.latency"),
            (r#"{"muted":"yes"}"#, "ServerSettings JSON"),
            (r#"{"volume":"50"}"#, "ServerSettings JSON"),
            (r#"[1,2]"#, "ServerSettings JSON"),
            (r#"{"volume":50"#, "ServerSettings JSON"),
            ("", "ServerSettings JSON"),
        ] {
            let e = Body::decode(types::SERVER_SETTINGS, &json_payload(json)).unwrap_err();
            match &e {
                SnapError::Invalid { field: f, .. } => assert_eq!(*f, field, "{json}: {e}"),
                other => panic!("{json}: {other}"),
            }
        }
        let e = Body::decode(types::SERVER_SETTINGS, &json_payload(r#"{"muted":"yes"}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("muted"), "{e}");
        // Encoding refuses what decoding refuses.
        let bad = Body::ServerSettings(ServerSettings {
            volume: 101,
            ..Default::default()
        });
        assert!(bad.encode().is_err());
        let bad = Body::ClientInfo(ClientInfo {
            volume: 200,
            muted: false,
        });
        assert!(bad.encode().is_err());
    }

    #[test]
    fn client_info_defaults() {
        let c = Body::decode(types::CLIENT_INFO, &json_payload("{}")).unwrap();
        assert_eq!(
            c,
            Body::ClientInfo(ClientInfo {
                volume: 100,
                muted: false
            })
        );
        assert!(Body::decode(types::CLIENT_INFO, &json_payload(r#"{"volume":300}"#)).is_err());
    }
}
