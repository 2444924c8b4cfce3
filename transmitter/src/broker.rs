//! The embedded MQTT broker (rumqttd), so a transmitter needs nothing else installed.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use syncstream_protocol::auth::PairingKey;

pub use crate::BrokerTls;

/// Starts an MQTT 3.1.1 broker listening on `listen` on a background thread.
///
/// With a pairing `key`, every client must log in with a user name and the password
/// the key derives for it ([`PairingKey::mqtt_password`]: receivers use their device
/// name, the transmitter [`syncstream_protocol::auth::TRANSMITTER_MQTT_USER`]); others
/// are refused at CONNECT. `None` (tests only) lets anyone in. rumqttd has no
/// per-topic access control: a paired client may publish on any topic (see
/// docs/security.md for a mosquitto ACL that limits receivers to their own).
///
/// Returns once the broker accepts connections (waiting up to 5 s), so clients started
/// right after do not meet a refused connection.
///
/// Errors: the configuration is rejected. A port already in use is reported by the
/// broker thread in the log (rumqttd binds asynchronously); check with a client.
pub fn start_embedded_broker(listen: SocketAddr, key: Option<PairingKey>) -> anyhow::Result<()> {
    start_embedded_broker_tls(listen, key, None)
}

/// As [`start_embedded_broker`], with a second listener speaking MQTT over TLS when
/// `tls` is given (its logins checked the same way).
///
/// Errors: as [`start_embedded_broker`]; a certificate or key file that does not exist
/// (named); TLS asked of a build without the feature `broker-tls`.
pub fn start_embedded_broker_tls(
    listen: SocketAddr,
    key: Option<PairingKey>,
    tls: Option<&BrokerTls>,
) -> anyhow::Result<()> {
    let config = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 1000,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 10_485_760,
            "max_segment_count": 10
        },
        "v4": {
            "1": {
                "name": "syncstream-v4",
                "listen": listen.to_string(),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 262_144,
                    "max_inflight_count": 100,
                    "dynamic_filters": true
                }
            }
        }
    });
    let mut config = config;
    if let Some(t) = tls {
        if !cfg!(feature = "broker-tls") {
            anyhow::bail!("this build has no TLS for the embedded broker (feature broker-tls)");
        }
        for (what, path) in [("certificate", &t.cert), ("key", &t.key)] {
            if !path.is_file() {
                anyhow::bail!("the broker's TLS {what} {} is not a file", path.display());
            }
        }
        config["v4"]["2"] = serde_json::json!({
            "name": "syncstream-v4-tls",
            "listen": t.listen.to_string(),
            "next_connection_delay_ms": 1,
            "tls": {
                "certpath": t.cert.display().to_string(),
                "keypath": t.key.display().to_string()
            },
            "connections": config["v4"]["1"]["connections"].clone()
        });
    }
    let mut config: rumqttd::Config =
        serde_json::from_value(config).context("building the embedded broker's configuration")?;
    if let Some(key) = key {
        let key = Arc::new(key);
        for server in config.v4.iter_mut().flat_map(|m| m.values_mut()) {
            let key = key.clone();
            server.connections.set_auth_handler(
                move |client_id: String, user: String, password: String| {
                    let ok = key.check_mqtt_password(&user, &password);
                    if !ok {
                        tracing::warn!(
                            client_id,
                            user,
                            "MQTT login refused: not the pairing key's password for this user"
                        );
                    }
                    async move { ok }
                },
            );
        }
    }
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .context("starting the embedded broker thread")?;
    let probe = if listen.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_millis(200))
            .is_ok()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}
