//! The sync controller's MQTT client: drives a [`SyncService`] (which decides what to
//! answer) with rumqttc.

use std::sync::Arc;

use rumqttc::QoS;
use syncstream_protocol::mqtt::{connect, drive, BrokerUrl};
use syncstream_shared::time::Clock;
use tracing::{info, warn};

use crate::sync_service::SyncService;

/// Runs the controller's MQTT client forever, handing every message to `service`
/// (stamped with `clock`) and publishing what it answers.
pub async fn run_controller(url: BrokerUrl, mut service: SyncService, clock: Arc<dyn Clock>) {
    let client_id = format!("syncstream-controller-{}", std::process::id());
    let (client, eventloop) = connect(&url, &client_id, None);
    let publisher = client.clone();
    drive(
        client,
        eventloop,
        SyncService::subscriptions(),
        |_| info!("sync controller connected to {url}"),
        |p| {
            for out in service.on_message(&p.topic, &p.payload, clock.now_us()) {
                if let Err(e) = publisher.try_publish(
                    out.topic.clone(),
                    QoS::AtLeastOnce,
                    out.retain,
                    out.payload,
                ) {
                    warn!("cannot publish on {}: {e}", out.topic);
                }
            }
        },
    )
    .await
}
