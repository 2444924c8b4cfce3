//! The sync controller's MQTT client: drives a [`SyncService`] (which decides what to
//! answer) with rumqttc.
//!
//! Offsets reach the receivers from two places, the sync service (after a report) and
//! the control plane (after a manual trim). Both go through one [`ControllerLink`]:
//! one client, so the broker gets them in the order they were made, and one gate held
//! from deciding to queueing, so that order is the controller's. (Receivers keep the
//! last offset they get, so a stale one arriving last would stay.)

use std::sync::{Arc, Mutex};

use rumqttc::QoS;
use syncstream_protocol::mqtt::{connect, drive, BrokerUrl};
use syncstream_shared::time::Clock;
use tracing::{info, warn};

use crate::sync_service::{keepalive, republish, Outgoing, SyncService};

/// The controller's MQTT client and the gate its offsets pass (see the module docs).
pub struct ControllerLink {
    client: rumqttc::AsyncClient,
    gate: Mutex<()>,
}

impl ControllerLink {
    /// Runs `decide` and queues the messages it returns, with no other decision of
    /// the controller in between; returns its value.
    pub fn publish_with<T>(&self, decide: impl FnOnce() -> (T, Vec<Outgoing>)) -> T {
        let _gate = self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (value, outgoing) = decide();
        for out in outgoing {
            if let Err(e) = self.client.try_publish(
                out.topic.clone(),
                QoS::AtLeastOnce,
                out.retain,
                out.payload,
            ) {
                warn!("cannot publish on {}: {e}", out.topic);
            }
        }
        value
    }
}

/// The controller's client for `url` and its event loop (for [`run_controller`]).
pub fn controller_link(url: &BrokerUrl) -> (Arc<ControllerLink>, rumqttc::EventLoop) {
    let client_id = format!("syncstream-controller-{}", std::process::id());
    let (client, eventloop) = connect(url, &client_id, None);
    (
        Arc::new(ControllerLink {
            client,
            gate: Mutex::new(()),
        }),
        eventloop,
    )
}

/// Runs the controller's MQTT client forever, handing every message to `service`
/// (stamped with `clock`) and publishing what it answers through `link`.
pub async fn run_controller(
    url: BrokerUrl,
    link: Arc<ControllerLink>,
    eventloop: rumqttc::EventLoop,
    mut service: SyncService,
    clock: Arc<dyn Clock>,
) {
    let client = link.client.clone();
    let controller = service.controller().clone();
    // Once a second: offsets re-sent for devices that cannot measure now.
    let ticker = {
        let (link, controller, clock) = (link.clone(), controller.clone(), clock.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                link.publish_with(|| ((), keepalive(&controller, clock.now_us())));
            }
        })
    };
    let _stop_ticker = AbortOnDrop(ticker);
    drive(
        client,
        eventloop,
        SyncService::subscriptions(),
        |_| {
            info!("sync controller connected to {url}");
            // The broker may have lost the retained offsets (a restart without
            // persistence): publish them again.
            link.publish_with(|| ((), republish(&controller, clock.now_us())));
        },
        |p| link.publish_with(|| ((), service.on_message(&p.topic, &p.payload, clock.now_us()))),
    )
    .await
}

/// Aborts a task when dropped (the ticker ends with the controller's client).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
