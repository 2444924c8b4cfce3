//! Advertising the transmitter over mDNS / DNS-SD, so receivers started without
//! `--transmitter` find it and `syncstream discover` lists it (docs/discovery.md).
//! The service type, TXT keys and the daemon are `syncstream_protocol::discovery`'s.

use std::net::SocketAddr;

use syncstream_protocol::discovery::{self, Advertiser, Scope, TransmitterAd};

use crate::{MqttMode, TransmitterConfig};

/// What the transmitter started with `cfg`, listening for streams on `stream_addr`
/// and for HTTP on `http_addr` (the bound addresses), advertises as `name`.
pub fn transmitter_ad(
    cfg: &TransmitterConfig,
    name: &str,
    stream_addr: SocketAddr,
    http_addr: SocketAddr,
) -> TransmitterAd {
    let (mqtt_port, mqtt_url, mqtts_port) = match &cfg.mqtt {
        MqttMode::Embedded(addr) => (
            Some(addr.port()),
            None,
            cfg.broker_tls.as_ref().map(|t| t.listen.port()),
        ),
        MqttMode::External(url) => {
            // No login in the record: receivers log in with their own credentials.
            let scheme = if url.tls { "mqtts" } else { "mqtt" };
            (
                None,
                Some(format!("{scheme}://{}:{}", url.host, url.port)),
                None,
            )
        }
    };
    TransmitterAd {
        name: name.to_string(),
        host: discovery::host_name(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: syncstream_protocol::wire::PROTOCOL_VERSION,
        stream_port: stream_addr.port(),
        http_port: http_addr.port(),
        mqtt_port,
        mqtt_url,
        mqtts_port,
        https_port: cfg.https.as_ref().map(|h| h.listen.port()),
    }
}

/// Advertises the transmitter where its stream port listens ([`Scope::of_listener`]);
/// `None`, with a warning in the log, when mDNS is unavailable (the transmitter runs
/// on: receivers can still be given `--transmitter`).
pub fn advertise(
    cfg: &TransmitterConfig,
    name: &str,
    stream_addr: SocketAddr,
    http_addr: SocketAddr,
) -> Option<Advertiser> {
    let ad = transmitter_ad(cfg, name, stream_addr, http_addr);
    match Advertiser::transmitter(&ad, Scope::of_listener(stream_addr)) {
        Ok(a) => {
            tracing::info!(
                "advertised over mDNS as {:?} ({}; `syncstream discover` lists it)",
                name,
                discovery::TRANSMITTER_SERVICE
            );
            Some(a)
        }
        Err(e) => {
            tracing::warn!(
                "not advertised over mDNS ({e}): receivers need --transmitter to find this one"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_protocol::mqtt::BrokerUrl;

    #[test]
    fn the_record_names_the_ports_in_use() {
        let mut cfg = TransmitterConfig {
            mqtt: MqttMode::Embedded("0.0.0.0:1884".parse().unwrap()),
            ..Default::default()
        };
        let ad = transmitter_ad(
            &cfg,
            "Living Room",
            "0.0.0.0:5000".parse().unwrap(),
            "0.0.0.0:5001".parse().unwrap(),
        );
        assert_eq!((ad.stream_port, ad.http_port), (5000, 5001));
        assert_eq!((ad.mqtt_port, ad.mqtt_url.as_deref()), (Some(1884), None));
        let mut url = BrokerUrl::new("broker.lan", 8883);
        url.tls = true;
        url.username = Some("secret-user".into());
        url.password = Some("secret".into());
        cfg.mqtt = MqttMode::External(url);
        let ad = transmitter_ad(
            &cfg,
            "x",
            "0.0.0.0:5000".parse().unwrap(),
            "0.0.0.0:5001".parse().unwrap(),
        );
        assert_eq!(ad.mqtt_port, None);
        assert_eq!(ad.mqtt_url.as_deref(), Some("mqtts://broker.lan:8883"));
    }
}
