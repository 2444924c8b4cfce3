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
    let service_controller = service.controller().clone();
    // Once a second: offsets re-sent for devices that cannot measure now.
    {
        let (controller, publisher, clock) =
            (service.controller().clone(), client.clone(), clock.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                for out in crate::sync_service::keepalive(&controller, clock.now_us()) {
                    if let Err(e) = publisher.try_publish(
                        out.topic.clone(),
                        QoS::AtLeastOnce,
                        true,
                        out.payload,
                    ) {
                        warn!("cannot publish on {}: {e}", out.topic);
                    }
                }
            }
        });
    }
    drive(
        client,
        eventloop,
        SyncService::subscriptions(),
        |c| {
            info!("sync controller connected to {url}");
            // The broker may have lost the retained offsets (a restart without
            // persistence): publish them again.
            for out in crate::sync_service::republish(service_controller.as_ref(), clock.now_us()) {
                if let Err(e) =
                    c.try_publish(out.topic.clone(), QoS::AtLeastOnce, true, out.payload)
                {
                    warn!("cannot publish on {}: {e}", out.topic);
                }
            }
        },
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
