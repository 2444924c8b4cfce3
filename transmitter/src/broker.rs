//! The embedded MQTT broker (rumqttd), so a transmitter needs nothing else installed.

use std::net::SocketAddr;

use anyhow::Context;

/// Starts an MQTT 3.1.1 broker listening on `listen` on a background thread.
///
/// Returns once the broker accepts connections (waiting up to 5 s), so clients started
/// right after do not meet a refused connection.
///
/// Errors: the configuration is rejected. A port already in use is reported by the
/// broker thread in the log (rumqttd binds asynchronously); check with a client.
pub fn start_embedded_broker(listen: SocketAddr) -> anyhow::Result<()> {
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
    let config: rumqttd::Config =
        serde_json::from_value(config).context("building the embedded broker's configuration")?;
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
