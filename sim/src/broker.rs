//! A simulated MQTT broker for the simulator: subscriptions with `+`/`#` filters
//! (rumqttc's matching), retained messages (an empty retained payload clears), QoS 1
//! in order per subscriber. Delivery delays are the caller's (the network's).

use std::collections::BTreeMap;

/// A client of the simulated broker.
pub type ClientId = usize;

/// The broker's state.
#[derive(Debug, Default)]
pub struct SimBroker {
    subscriptions: BTreeMap<ClientId, Vec<String>>,
    retained: BTreeMap<String, Vec<u8>>,
}

impl SimBroker {
    /// Subscribes `client` to `filters`; returns the retained messages they match (sent
    /// to the client at once, as a broker does).
    pub fn subscribe(&mut self, client: ClientId, filters: &[String]) -> Vec<(String, Vec<u8>)> {
        let subs = self.subscriptions.entry(client).or_default();
        for f in filters {
            if !subs.contains(f) {
                subs.push(f.clone());
            }
        }
        self.retained
            .iter()
            .filter(|(t, _)| filters.iter().any(|f| rumqttc::matches(t, f)))
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect()
    }

    /// Forgets `client`'s subscriptions (it disconnected).
    pub fn disconnect(&mut self, client: ClientId) {
        self.subscriptions.remove(&client);
    }

    /// Publishes; returns the clients to deliver to.
    pub fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) -> Vec<ClientId> {
        if retain {
            if payload.is_empty() {
                self.retained.remove(topic);
            } else {
                self.retained.insert(topic.to_string(), payload.to_vec());
            }
        }
        self.subscriptions
            .iter()
            .filter(|(_, fs)| fs.iter().any(|f| rumqttc::matches(topic, f)))
            .map(|(c, _)| *c)
            .collect()
    }

    /// The retained message on `topic`.
    pub fn retained(&self, topic: &str) -> Option<&[u8]> {
        self.retained.get(topic).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_filter_and_keeps_retained() {
        let mut b = SimBroker::default();
        assert!(b.subscribe(1, &["syncstream/drift/+".into()]).is_empty());
        assert_eq!(b.publish("syncstream/drift/tv", b"x", false), vec![1]);
        assert!(b.publish("syncstream/status/tv", b"s", true).is_empty());
        let got = b.subscribe(2, &["syncstream/status/#".into()]);
        assert_eq!(got, vec![("syncstream/status/tv".into(), b"s".to_vec())]);
        b.publish("syncstream/status/tv", b"", true);
        assert!(b.retained("syncstream/status/tv").is_none());
    }
}
