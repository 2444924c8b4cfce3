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
//! | `syncstream/calibration/+` | calibration progress and results |
//!
//! It publishes retained `syncstream/settings/<device>`, `syncstream/groups` and
//! `syncstream/streams`, and offsets after a manual adjustment.

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
        None,
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
        ControlPlane::subscriptions(),
        move |_| {
            info!("control plane connected to {url}");
            on_connect.on_mqtt_connected();
        },
        move |p| plane.on_mqtt(&p.topic, &p.payload),
    )
    .await
}
