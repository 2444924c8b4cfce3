//! The control plane's MQTT door: one client that hands the control plane every
//! message it needs and republishes the retained state after each (re)connect.
//!
//! | topic | what the control plane does |
//! | --- | --- |
//! | `syncstream/status/+`, `syncstream/drift/+`, `syncstream/buffer_offset/+`, `syncstream/config` | updates the picture of each device (API, dashboard, sync summary) |
//! | `syncstream/command/<device>` | `volume`, `mute`, `unmute`, `adjust` change the device's settings as the API does; `test_tone` marks calibration progress |
//! | `syncstream/group/<group>` | creates, changes, renames or deletes a group as `PUT`/`DELETE /api/v1/groups/<group>` do |
//! | `syncstream/stream/<stream>` | `{"uri":...}` adds a stream, `{"delete":true}` removes one, as `PUT`/`DELETE /api/v1/streams/<stream>` |
//! | `syncstream/calibrate` | starts a calibration, as `POST /api/v1/calibrate` (same body) |
//! | `syncstream/group_of/<device>` | a group's name: moves the device into that group (Home Assistant's group select) |
//! | `<prefix>/status` (Home Assistant discovery on) | `online`: publishes the discovery configs again |
//! | `syncstream/calibration/+` | calibration progress and results |
//!
//! It publishes retained `syncstream/settings/<device>`, `syncstream/groups`,
//! `syncstream/streams`, `syncstream/config` (the profiles of `--profiles-dir`),
//! `syncstream/transmitter/status` (`online`; its last will `offline`), with Home
//! Assistant discovery `syncstream/state/<device>`, `syncstream/summary` and the
//! discovery configs, and offsets after a manual adjustment.

use std::sync::Arc;

use syncstream_protocol::mqtt::{connect, drive, BrokerUrl};
use tracing::info;

use super::ControlPlane;

/// The bridge's client and event loop, made before the control plane (which
/// publishes through the client).
pub fn client(url: &BrokerUrl) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    connect(
        url,
        &format!("syncstream-control-{}", std::process::id()),
        Some((
            super::homeassistant::TRANSMITTER_STATUS_TOPIC.to_string(),
            b"offline".to_vec(),
        )),
    )
}

/// Drives the bridge forever (see the module docs).
pub async fn run(
    url: BrokerUrl,
    client: rumqttc::AsyncClient,
    eventloop: rumqttc::EventLoop,
    plane: Arc<ControlPlane>,
) {
    let on_connect = plane.clone();
    drive(
        client,
        eventloop,
        plane.subscriptions(),
        move |_| {
            info!("control plane connected to {url}");
            on_connect.on_mqtt_connected();
        },
        move |p| plane.on_mqtt(&p.topic, &p.payload),
    )
    .await
}
