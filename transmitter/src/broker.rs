//! The embedded MQTT broker (rumqttd), so a transmitter needs nothing else installed.

use std::net::SocketAddr;

use anyhow::Context;

/// Starts an MQTT 3.1.1 broker listening on `listen` on a background thread.
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
    Ok(())
}
