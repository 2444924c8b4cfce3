//! The sync controller's MQTT client: drives a [`SyncService`] (which decides what to
//! answer) with rumqttc.
//!
//! Offsets reach the receivers from two places, the sync service (after a report) and
//! the control plane (after a manual trim). Both go through one [`ControllerLink`]:
//! one client, so the broker gets them in the order they were made, and one gate held
//! from deciding to queueing, so that order is the controller's. (Receivers keep the
//! last offset they get, so a stale one arriving last would stay.)
//!
//! Decisions are queued in the link's [`Outbox`], not straight into the client's
//! bounded request channel: a burst of drift reports (thousands of made-up devices,
//! issue 14) is answered faster than the event loop sends, and a full channel used to
//! drop offsets, a real device's among them, for good (the controller believed them
//! sent). The outbox keeps the newest message per topic (retained offsets: only the
//! newest matters) and a sender task hands them to the client as it has room. It is
//! bounded ([`OUTBOX_MAX`]); if a flood overflows it, every tracked device's offset is
//! published again once it has drained, so a real device's offset is late, never lost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rumqttc::QoS;
use syncstream_protocol::mqtt::{connect, drive, BrokerUrl};
use syncstream_shared::time::Clock;
use tracing::{info, warn};

use crate::sync_service::{keepalive, republish, Outgoing, SyncService};

/// Most messages an [`Outbox`] holds (distinct topics); more are dropped (with one
/// warning per overflow, and every tracked offset published again once it drained).
/// Four times the devices the controller tracks.
pub const OUTBOX_MAX: usize = 4 * crate::controller::MAX_DEVICES;

/// Messages decided but not yet handed to the MQTT client: the newest per topic, in
/// the order their topics first came (see the module docs).
#[derive(Debug, Default)]
pub struct Outbox {
    order: VecDeque<String>,
    latest: HashMap<String, Outgoing>,
}

impl Outbox {
    /// Queues `out`, replacing a message still waiting on its topic. Returns false
    /// (and drops it) when [`OUTBOX_MAX`] other topics wait.
    pub fn push(&mut self, out: Outgoing) -> bool {
        if let Some(waiting) = self.latest.get_mut(&out.topic) {
            *waiting = out;
            return true;
        }
        if self.latest.len() >= OUTBOX_MAX {
            return false;
        }
        self.order.push_back(out.topic.clone());
        self.latest.insert(out.topic.clone(), out);
        true
    }

    /// The next message to send.
    pub fn pop(&mut self) -> Option<Outgoing> {
        let topic = self.order.pop_front()?;
        self.latest.remove(&topic)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// The controller's MQTT client and the gate its offsets pass (see the module docs).
pub struct ControllerLink {
    client: rumqttc::AsyncClient,
    gate: Mutex<()>,
    outbox: Mutex<Outbox>,
    queued: tokio::sync::Notify,
    /// Messages were dropped since the outbox last drained.
    overflowed: std::sync::atomic::AtomicBool,
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
        if outgoing.is_empty() {
            return value;
        }
        let mut outbox = self.lock_outbox();
        for out in outgoing {
            let topic = out.topic.clone();
            if !outbox.push(out) && !self.overflowed.swap(true, Ordering::Relaxed) {
                warn!(
                    "cannot publish on {topic}: {OUTBOX_MAX} messages wait already (a flood \
                     of reports?); every offset is published again once they are sent"
                );
            }
        }
        drop(outbox);
        self.queued.notify_one();
        value
    }

    /// Hands the outbox's messages to the client as its request channel has room,
    /// forever (run by [`run_controller`]). When the outbox drained after an overflow,
    /// queues what `catch_up` returns (every tracked device's offset).
    async fn send_queued(&self, catch_up: impl Fn() -> Vec<Outgoing>) {
        loop {
            let next = self.lock_outbox().pop();
            let Some(out) = next else {
                if self.overflowed.swap(false, Ordering::Relaxed) {
                    info!("offsets dropped in a flood: publishing every offset again");
                    self.publish_with(|| ((), catch_up()));
                    continue;
                }
                self.queued.notified().await;
                continue;
            };
            if let Err(e) = self
                .client
                .publish(out.topic.clone(), QoS::AtLeastOnce, out.retain, out.payload)
                .await
            {
                warn!("cannot publish on {}: {e}", out.topic);
            }
        }
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            outbox: Mutex::new(Outbox::default()),
            queued: tokio::sync::Notify::new(),
            overflowed: std::sync::atomic::AtomicBool::new(false),
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
    let sender = {
        let (link, controller, clock) = (link.clone(), controller.clone(), clock.clone());
        tokio::spawn(async move {
            link.send_queued(|| republish(&controller, clock.now_us()))
                .await
        })
    };
    let _stop_sender = AbortOnDrop(sender);
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

/// Aborts a task when dropped (the ticker and the sender end with the controller's
/// client).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(device: &str, offset_ms: f64) -> Outgoing {
        Outgoing {
            topic: format!("syncstream/buffer_offset/{device}"),
            payload: format!("{offset_ms}").into_bytes(),
            retain: true,
        }
    }

    /// Issue 14: a burst of answers is kept, not dropped; per topic the newest wins;
    /// the outbox is bounded.
    #[test]
    fn the_outbox_keeps_the_newest_per_topic_in_order_and_is_bounded() {
        let mut o = Outbox::default();
        assert!(o.push(offset("a", 1.0)));
        assert!(o.push(offset("b", 2.0)));
        assert!(o.push(offset("a", 3.0)));
        assert_eq!(o.len(), 2);
        assert_eq!(o.pop(), Some(offset("a", 3.0)));
        assert_eq!(o.pop(), Some(offset("b", 2.0)));
        assert!(o.pop().is_none() && o.is_empty());
        for k in 0..OUTBOX_MAX {
            assert!(o.push(offset(&format!("d{k}"), 0.0)));
        }
        assert!(!o.push(offset("one-too-many", 0.0)));
        assert!(
            o.push(offset("d0", 5.0)),
            "a waiting topic is still updated"
        );
        assert_eq!(o.len(), OUTBOX_MAX);
    }
}
