//! MQTT connection helpers over rumqttc: broker URLs, and an event loop driver that
//! re-subscribes after every (re)connect (rumqttc does not) and never dies on a
//! broken connection or a malformed message.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use tracing::{debug, warn};

/// A broker address parsed from `mqtt://host:port` (or `host:port`, or `host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (default 1883).
    pub port: u16,
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;
    /// Parses `mqtt://host[:port]`. Errors name the URL and the reason.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("mqtt://")
            .or_else(|| s.strip_prefix("tcp://"))
            .unwrap_or(s);
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(format!("MQTT broker URL '{s}' has no host"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|e| format!("MQTT broker URL '{s}': port '{p}': {e}"))?,
            ),
            None => (rest, 1883),
        };
        if host.is_empty() {
            return Err(format!("MQTT broker URL '{s}' has no host"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// Client options for `url` with `client_id`, a 5 s keep-alive and an optional last
/// will `(topic, payload)` (published retained, QoS 1).
pub fn options(
    url: &BrokerUrl,
    client_id: &str,
    last_will: Option<(String, Vec<u8>)>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some((topic, payload)) = last_will {
        o.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    }
    o
}

/// Connects to `url`: returns the client and its event loop.
pub fn connect(
    url: &BrokerUrl,
    client_id: &str,
    last_will: Option<(String, Vec<u8>)>,
) -> (AsyncClient, EventLoop) {
    AsyncClient::new(options(url, client_id, last_will), 256)
}

/// Drives `eventloop` forever: after every ConnAck subscribes to `subscriptions` and
/// calls `on_connect`; hands every incoming publish to `on_publish`. Connection
/// errors are logged and retried with backoff (0.2 s doubling to 5 s).
pub async fn drive(
    client: AsyncClient,
    mut eventloop: EventLoop,
    subscriptions: Vec<String>,
    mut on_connect: impl FnMut(&AsyncClient),
    mut on_publish: impl FnMut(&Publish),
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                for topic in &subscriptions {
                    if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                        warn!("cannot subscribe to {topic}: {e}");
                    }
                }
                on_connect(&client);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p),
            Ok(ev) => debug!("mqtt: {ev:?}"),
            Err(e) => {
                warn!("MQTT connection: {e}; retrying in {:?}", backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            "mqtt://h:1234".parse::<BrokerUrl>().unwrap(),
            BrokerUrl {
                host: "h".into(),
                port: 1234
            }
        );
        assert_eq!("h".parse::<BrokerUrl>().unwrap().port, 1883);
        assert!("mqtt://h:x"
            .parse::<BrokerUrl>()
            .unwrap_err()
            .contains("port"));
        assert!("mqtt://".parse::<BrokerUrl>().is_err());
    }
}
