//! An MQTT observer for process-level tests: a rumqttc client on its own thread that
//! subscribes to a few topic filters (again after every reconnect, so it survives a
//! broker restart) and records every message with the time it arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Packet, QoS};
use serde_json::Value;

/// One message seen.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// Its topic.
    pub topic: String,
    /// Whether the broker delivered it as a retained message.
    pub retained: bool,
    /// Its JSON payload (`Null` when it is not JSON, e.g. a cleared retained message).
    pub json: Value,
}

/// A running observer; stops when dropped.
pub struct Watcher {
    seen: Arc<Mutex<Vec<Seen>>>,
    client: Client,
}

impl Watcher {
    /// Connects to the broker on `port` as `id` and subscribes to `filters`.
    pub fn start(port: u16, id: &str, filters: &[&str]) -> Watcher {
        // Logged in with the default pairing key's password (the transmitters of the
        // tests use that key; mosquitto lets anyone in).
        let mut opts = super::mqtt_options(id, port, &super::default_key());
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 100);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, client2) = (seen.clone(), client.clone());
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        std::thread::spawn(move || loop {
            match conn.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    for f in &filters {
                        let _ = client2.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    seen2.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        topic: p.topic.clone(),
                        retained: p.retain,
                        json: serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
                    });
                }
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => return,
            }
        });
        Watcher { seen, client }
    }

    /// The first message on `topic` that arrived at or after `since` and satisfies
    /// `pred`, waiting up to `deadline` for it.
    pub fn wait(
        &self,
        topic: &str,
        since: Instant,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Seen> {
        super::procs::poll(deadline, || {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.at >= since && s.topic == topic && pred(&s.json))
                .cloned()
        })
    }

    /// The last message on `topic` (any time).
    pub fn last(&self, topic: &str) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.topic == topic)
            .cloned()
    }

    /// Every message on `topic` since `since`.
    pub fn since(&self, topic: &str, since: Instant) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= since && s.topic == topic)
            .cloned()
            .collect()
    }

    /// Publishes `payload` on `topic` (QoS 1).
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .unwrap();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

/// The retained messages on `topics` as a fresh client gets them from the broker on
/// `port` (waiting up to `deadline` for all of them): what a newcomer would see.
pub fn retained(port: u16, topics: &[String], deadline: Duration) -> Vec<Seen> {
    let id = format!("retained-probe-{}", super::free_port());
    let w = Watcher::start(
        port,
        &id,
        &topics.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
    );
    let start = Instant::now();
    super::procs::poll(deadline, || {
        let got: Vec<Seen> = topics
            .iter()
            .filter_map(|t| w.since(t, start).into_iter().find(|s| s.retained))
            .collect();
        (got.len() == topics.len()).then_some(got)
    })
    .unwrap_or_else(|| {
        topics
            .iter()
            .filter_map(|t| w.since(t, start).into_iter().find(|s| s.retained))
            .collect()
    })
}
