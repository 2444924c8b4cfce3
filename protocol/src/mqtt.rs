//! MQTT connection helpers over rumqttc: broker URLs, and an event loop driver that
//! re-subscribes after every (re)connect (rumqttc does not) and never dies on a
//! broken connection or a malformed message.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, StateError,
};
use tracing::{debug, warn};

/// A broker address parsed from `mqtt://[user[:password]@]host[:port]` (or
/// `host:port`, or `host`), or `mqtts://…` for MQTT over TLS, with the credentials the
/// client logs in with.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address (with TLS, the name the broker's certificate must carry).
    pub host: String,
    /// TCP port (default 1883, or 8883 with TLS).
    pub port: u16,
    /// User name to log in with (`None`: anonymous).
    pub username: Option<String>,
    /// Password to log in with.
    pub password: Option<String>,
    /// MQTT over TLS (`mqtts://`; needs the feature `tls`).
    pub tls: bool,
    /// With TLS: the certificates (DER) the broker's must chain to; empty: the
    /// system's trusted roots. See [`BrokerUrl::with_ca_file`].
    pub ca_der: Vec<Vec<u8>>,
}

impl BrokerUrl {
    /// `host:port`, plain MQTT, no credentials.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            username: None,
            password: None,
            tls: false,
            ca_der: Vec::new(),
        }
    }

    /// This URL trusting the certificates of the PEM file `path` (a private CA, or the
    /// broker's own self-signed certificate) instead of the system's roots. At most
    /// 1 MiB is read.
    ///
    /// Errors: the file cannot be read, holds no certificate, or the URL is not
    /// `mqtts://` (the message names the file).
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Self, String> {
        if !self.tls {
            return Err(format!(
                "--mqtt-ca {}: the broker URL {self} is not mqtts://",
                path.display()
            ));
        }
        self.ca_der = tls::read_certificates(path)?;
        Ok(self)
    }

    /// This URL logging in as `username` with the password the pairing `key` derives
    /// for it ([`crate::auth::PairingKey::mqtt_password`]), unless the URL already
    /// names a user (credentials given by hand win).
    pub fn with_key(mut self, key: &crate::auth::PairingKey, username: &str) -> Self {
        if self.username.is_none() {
            self.password = Some(key.mqtt_password(username));
            self.username = Some(username.to_string());
        }
        self
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;
    /// Parses `mqtt://[user[:password]@]host[:port]`. Errors name the URL (without its
    /// password) and the reason.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(r) = s
            .strip_prefix("mqtts://")
            .or_else(|| s.strip_prefix("ssl://"))
        {
            (true, r)
        } else {
            (
                false,
                s.strip_prefix("mqtt://")
                    .or_else(|| s.strip_prefix("tcp://"))
                    .unwrap_or(s),
            )
        };
        if tls && !cfg!(feature = "tls") {
            return Err(format!(
                "MQTT broker URL '{}': this build has no TLS (feature tls; the ARMv6 Pi build has none, see docs/security.md)",
                s.split('@').next_back().unwrap_or(s)
            ));
        }
        let (login, rest) = match rest.rsplit_once('@') {
            Some((l, r)) => (Some(l), r),
            None => (None, rest),
        };
        let shown = match login {
            Some(_) => format!("mqtt://…@{rest}"),
            None => s.to_string(),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(format!("MQTT broker URL '{shown}' has no host"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|e| format!("MQTT broker URL '{shown}': port '{p}': {e}"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("MQTT broker URL '{shown}' has no host"));
        }
        let (username, password) = match login {
            None => (None, None),
            Some(l) => {
                let (u, p) = match l.split_once(':') {
                    Some((u, p)) => (u, Some(p.to_string())),
                    None => (l, None),
                };
                if u.is_empty() {
                    return Err(format!("MQTT broker URL '{shown}' has an empty user name"));
                }
                (Some(u.to_string()), p)
            }
        };
        Ok(Self {
            host: host.to_string(),
            port,
            username,
            password,
            tls,
            ca_der: Vec::new(),
        })
    }
}

impl std::fmt::Display for BrokerUrl {
    /// `mqtt[s]://[user@]host:port` (never the password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match &self.username {
            Some(u) => write!(f, "{scheme}://{u}@{}:{}", self.host, self.port),
            None => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// TLS for MQTT clients (rustls with the ring provider).
mod tls {
    /// The certificates of the PEM file `path`, DER.
    pub fn read_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
        let bytes = syncstream_shared::fsutil::read_capped(path, 1 << 20)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        #[cfg(feature = "tls")]
        {
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<Vec<u8>> = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
                .filter_map(Result::ok)
                .map(|c| c.to_vec())
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "CA file {}: no PEM certificate in it",
                    path.display()
                ));
            }
            Ok(certs)
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = bytes;
            Err(format!(
                "CA file {}: this build has no TLS (feature tls)",
                path.display()
            ))
        }
    }

    /// A client configuration trusting `ca_der` (empty: the system's roots), TLS 1.2
    /// and 1.3, no client certificate; `None` (logged) if rustls refuses its defaults.
    #[cfg(feature = "tls")]
    pub fn client_config(ca_der: &[Vec<u8>]) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        if ca_der.is_empty() {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system certificates: {e}");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no trusted system certificate: give the broker's CA with --mqtt-ca"
                );
            }
        } else {
            let (added, ignored) = roots.add_parsable_certificates(
                ca_der
                    .iter()
                    .map(|c| rustls::pki_types::CertificateDer::from(c.clone())),
            );
            if ignored > 0 || added == 0 {
                tracing::warn!("CA certificates: {added} usable, {ignored} not");
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => Some(std::sync::Arc::new(
                b.with_root_certificates(roots).with_no_client_auth(),
            )),
            Err(e) => {
                tracing::error!("TLS configuration: {e}");
                None
            }
        }
    }
}

/// Largest MQTT packet a client reads, bytes. Far above any SyncStream message: a
/// bigger payload (say a 1 MB retained `syncstream/config`) is read and dropped by the
/// handler with a warning instead of breaking the connection. A packet over this limit
/// does break it (rumqttc cannot skip it); [`drive`] then finds the topic that holds it
/// and leaves that topic alone for a while, so there is no reconnect loop.
pub const MAX_INCOMING_PACKET_BYTES: usize = 8 * 1024 * 1024;
/// Largest MQTT packet a client sends, bytes.
pub const MAX_OUTGOING_PACKET_BYTES: usize = 256 * 1024;
/// How long a topic holding a message over [`MAX_INCOMING_PACKET_BYTES`] stays
/// unsubscribed the first time; it doubles each time the message is still there, up
/// to [`OVERSIZED_RETRY_MAX`].
pub const OVERSIZED_RETRY_FIRST: Duration = Duration::from_secs(60);
/// Longest time a topic with an oversized message stays unsubscribed before a retry.
pub const OVERSIZED_RETRY_MAX: Duration = Duration::from_secs(3600);

/// Client options for `url` (logging in with its credentials, if any) with
/// `client_id`, a 5 s keep-alive, the packet limits
/// above and an optional last will `(topic, payload)` (published retained, QoS 1).
pub fn options(
    url: &BrokerUrl,
    client_id: &str,
    last_will: Option<(String, Vec<u8>)>,
) -> MqttOptions {
    #[cfg(feature = "tls")]
    let tls_config = url.tls.then(|| tls::client_config(&url.ca_der)).flatten();
    // Never in clear to a TLS broker: without a TLS configuration (rustls refused
    // its defaults, logged), a port nothing listens on.
    #[cfg(feature = "tls")]
    let port = if url.tls && tls_config.is_none() {
        0
    } else {
        url.port
    };
    #[cfg(not(feature = "tls"))]
    let port = url.port;
    let mut o = MqttOptions::new(client_id, url.host.clone(), port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(MAX_INCOMING_PACKET_BYTES, MAX_OUTGOING_PACKET_BYTES);
    if let Some(user) = &url.username {
        o.set_credentials(user.clone(), url.password.clone().unwrap_or_default());
    }
    #[cfg(feature = "tls")]
    if let Some(c) = tls_config {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(c),
        ));
    }
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

/// What a subscribe request was for.
#[derive(Debug, Clone, PartialEq)]
enum Label {
    Topic(String),
    Marker,
}

/// The subscriptions of one client, guarded against messages too big to read.
///
/// Normally every topic is subscribed at once after a connect. Once a packet over
/// [`MAX_INCOMING_PACKET_BYTES`] has broken a connection, topics are subscribed one at
/// a time, each followed by a subscription to a marker topic nobody publishes on: a
/// broker handles a client's packets in order and queues a topic's retained messages
/// before it reads the next SUBSCRIBE, so once the marker's SUBACK is in, the topic's
/// retained messages are too. A connection that breaks on an oversized packet between
/// the two names the topic that holds it; that topic is then left out for
/// [`OVERSIZED_RETRY_FIRST`] (doubling up to [`OVERSIZED_RETRY_MAX`]) and tried again.
#[derive(Debug)]
pub struct SubscriptionGuard {
    topics: Vec<String>,
    marker: String,
    probing: bool,
    connected: bool,
    /// Topic → (left out until, the next time it is left out for).
    quarantine: HashMap<String, (Instant, Duration)>,
    /// Topics still to subscribe on this connection (one at a time).
    todo: VecDeque<String>,
    /// Subscribe requests queued, oldest first, waiting for their packet id.
    queued: VecDeque<Label>,
    by_pkid: HashMap<u16, Label>,
    /// The topic subscribed whose marker has not been acknowledged yet.
    probe: Option<String>,
}

impl SubscriptionGuard {
    /// A guard for `topics`; `marker` is a topic nobody publishes on (one per client).
    pub fn new(topics: Vec<String>, marker: String) -> Self {
        Self {
            topics,
            marker,
            probing: false,
            connected: false,
            quarantine: HashMap::new(),
            todo: VecDeque::new(),
            queued: VecDeque::new(),
            by_pkid: HashMap::new(),
            probe: None,
        }
    }

    /// The marker topic (messages on it are not handed on).
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Topics left out now, with the time they are tried again.
    pub fn left_out(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut v: Vec<_> = self
            .quarantine
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(t, (until, _))| (t.clone(), *until - now))
            .collect();
        v.sort();
        v
    }

    fn subscribe(&mut self, client: &AsyncClient, label: Label) {
        let topic = match &label {
            Label::Topic(t) => t.clone(),
            Label::Marker => self.marker.clone(),
        };
        match client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
            Ok(()) => self.queued.push_back(label),
            Err(e) => warn!("cannot subscribe to {topic}: {e}"),
        }
    }

    /// Whether `topic` may be subscribed at `now`.
    fn allowed(&self, topic: &str, now: Instant) -> bool {
        self.quarantine
            .get(topic)
            .is_none_or(|(until, _)| now >= *until)
    }

    /// Connected (ConnAck): subscribes (all at once, or the first of one at a time).
    pub fn on_connected(&mut self, client: &AsyncClient, now: Instant) {
        self.connected = true;
        self.queued.clear();
        self.by_pkid.clear();
        self.probe = None;
        let topics: Vec<String> = self
            .topics
            .iter()
            .filter(|t| self.allowed(t, now))
            .cloned()
            .collect();
        if self.probing {
            self.todo = topics.into();
            self.next(client);
        } else {
            self.todo.clear();
            for t in topics {
                self.subscribe(client, Label::Topic(t));
            }
        }
    }

    fn next(&mut self, client: &AsyncClient) {
        if self.probe.is_some() || !self.connected {
            return;
        }
        if let Some(t) = self.todo.pop_front() {
            self.subscribe(client, Label::Topic(t.clone()));
            self.subscribe(client, Label::Marker);
            self.probe = Some(t);
        }
    }

    /// rumqttc sent a SUBSCRIBE with packet id `pkid` (they go out in order).
    pub fn on_subscribe_sent(&mut self, pkid: u16) {
        if let Some(label) = self.queued.pop_front() {
            self.by_pkid.insert(pkid, label);
        }
    }

    /// A SUBACK for packet id `pkid` arrived.
    pub fn on_suback(&mut self, client: &AsyncClient, pkid: u16) {
        if let Some(Label::Marker) = self.by_pkid.remove(&pkid) {
            if let Some(t) = self.probe.take() {
                if self.quarantine.remove(&t).is_some() {
                    tracing::info!("MQTT: {t} holds no oversized message any more; subscribed");
                }
            }
            self.next(client);
        }
    }

    /// Called now and then while connected: topics whose time out is over are tried
    /// again (one at a time).
    pub fn tick(&mut self, client: &AsyncClient, now: Instant) {
        if !self.connected {
            return;
        }
        let due: Vec<String> = self
            .quarantine
            .iter()
            .filter(|(t, (until, _))| {
                now >= *until && self.probe.as_ref() != Some(*t) && !self.todo.contains(*t)
            })
            .map(|(t, _)| t.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        self.probing = true;
        for t in due {
            // Pushed back, so it is not due again while it waits.
            if let Some((until, _)) = self.quarantine.get_mut(&t) {
                *until = now + OVERSIZED_RETRY_MAX;
            }
            self.todo.push_back(t);
        }
        self.next(client);
    }

    /// The connection broke. `oversized`: on a packet of that many bytes, over
    /// [`MAX_INCOMING_PACKET_BYTES`]. Returns the topic found to hold it and how long it
    /// is left out, if one was being probed.
    pub fn on_disconnected(
        &mut self,
        oversized: Option<usize>,
        now: Instant,
    ) -> Option<(String, Duration)> {
        self.connected = false;
        let probe = self.probe.take();
        // Topics that were waiting to be tried again get their turn on the next
        // connection (unless the one just probed holds the oversized message).
        for t in self.todo.drain(..).chain(probe.clone()) {
            if let Some((until, _)) = self.quarantine.get_mut(&t) {
                *until = now;
            }
        }
        self.queued.clear();
        oversized?;
        self.probing = true;
        let t = probe?;
        let wait = self
            .quarantine
            .get(&t)
            .map_or(OVERSIZED_RETRY_FIRST, |(_, next)| *next);
        self.quarantine
            .insert(t.clone(), (now + wait, (wait * 2).min(OVERSIZED_RETRY_MAX)));
        Some((t, wait))
    }
}

/// The size of the packet that broke the connection, if `e` is rumqttc refusing a
/// packet over the limit.
fn oversized(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(n),
        )) => Some(*n),
        _ => None,
    }
}

/// A topic nobody publishes on, for [`SubscriptionGuard`] (random per client).
fn marker_topic() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("syncstream/marker/{:016x}", h.finish())
}

/// Drives `eventloop` forever: after every ConnAck subscribes to `subscriptions` and
/// calls `on_connect`; hands every incoming publish to `on_publish`. Connection
/// errors are logged and retried with backoff (0.2 s doubling to 5 s). A message too
/// big to read (over [`MAX_INCOMING_PACKET_BYTES`]) costs one reconnect: its topic is
/// found and left out for a while (see [`SubscriptionGuard`]), with a warning naming
/// it.
pub async fn drive(
    client: AsyncClient,
    mut eventloop: EventLoop,
    subscriptions: Vec<String>,
    mut on_connect: impl FnMut(&AsyncClient),
    mut on_publish: impl FnMut(&Publish),
) {
    let mut backoff = Duration::from_millis(200);
    let mut guard = SubscriptionGuard::new(subscriptions, marker_topic());
    loop {
        guard.tick(&client, Instant::now());
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                guard.on_connected(&client, Instant::now());
                on_connect(&client);
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => guard.on_subscribe_sent(pkid),
            Ok(Event::Incoming(Packet::SubAck(a))) => guard.on_suback(&client, a.pkid),
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic != guard.marker() {
                    on_publish(&p)
                }
            }
            Ok(ev) => debug!("mqtt: {ev:?}"),
            Err(e) => {
                let size = oversized(&e);
                match (size, guard.on_disconnected(size, Instant::now())) {
                    (Some(n), Some((topic, wait))) => warn!(
                        "MQTT: a {n} byte message on {topic} (retained on the broker) is over \
                         the limit of {MAX_INCOMING_PACKET_BYTES} bytes; not subscribed to \
                         {topic} for {wait:?} (clear it with `mosquitto_pub -r -n -t {topic}`)"
                    ),
                    (Some(n), None) => warn!(
                        "MQTT: a {n} byte message is over the limit of \
                         {MAX_INCOMING_PACKET_BYTES} bytes; reconnecting, subscribing one \
                         topic at a time to find a retained one"
                    ),
                    _ => {}
                }
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

    /// A client that is never connected (its event loop is kept, so requests queue).
    fn client() -> (AsyncClient, EventLoop) {
        connect(&BrokerUrl::new("127.0.0.1", 1), "t", None)
    }

    /// Simulates rumqttc sending the queued subscribes with packet ids from `first`.
    fn send_all(g: &mut SubscriptionGuard, first: &mut u16) -> Vec<(u16, Label)> {
        let mut out = Vec::new();
        while let Some(l) = g.queued.front().cloned() {
            g.on_subscribe_sent(*first);
            out.push((*first, l));
            *first += 1;
        }
        out
    }

    #[test]
    fn an_oversized_retained_message_leaves_its_topic_out_for_a_while() {
        let (c, _eventloop) = client();
        let topics = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let mut g = SubscriptionGuard::new(topics, "m".into());
        let t0 = Instant::now();
        let mut pkid = 1;
        // First connection: everything at once; an oversized packet names nobody.
        g.on_connected(&c, t0);
        assert_eq!(send_all(&mut g, &mut pkid).len(), 3);
        assert_eq!(g.on_disconnected(Some(9 << 20), t0), None);
        // Then one at a time: a is clean (its marker comes back), b breaks.
        g.on_connected(&c, t0);
        let sent = send_all(&mut g, &mut pkid);
        assert_eq!(
            sent.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(),
            [Label::Topic("a".into()), Label::Marker]
        );
        g.on_suback(&c, sent[0].0);
        g.on_suback(&c, sent[1].0);
        let sent = send_all(&mut g, &mut pkid);
        assert_eq!(sent[0].1, Label::Topic("b".into()));
        assert_eq!(
            g.on_disconnected(Some(9 << 20), t0),
            Some(("b".into(), OVERSIZED_RETRY_FIRST))
        );
        // Next connection: a and c only.
        g.on_connected(&c, t0);
        let mut subscribed = Vec::new();
        for _ in 0..4 {
            let sent = send_all(&mut g, &mut pkid);
            for (id, l) in sent {
                if let Label::Topic(t) = &l {
                    subscribed.push(t.clone());
                }
                g.on_suback(&c, id);
            }
        }
        assert_eq!(subscribed, ["a", "c"]);
        assert_eq!(g.left_out(t0).len(), 1);
        // After the time out, b is
        // tried again while connected, and left out twice as long if still too big.
        let later = t0 + OVERSIZED_RETRY_FIRST;
        g.tick(&c, later);
        let sent = send_all(&mut g, &mut pkid);
        assert_eq!(sent[0].1, Label::Topic("b".into()));
        assert_eq!(
            g.on_disconnected(Some(9 << 20), later),
            Some(("b".into(), OVERSIZED_RETRY_FIRST * 2))
        );
        // Once it is gone, b is subscribed again and forgotten.
        let much_later = later + OVERSIZED_RETRY_FIRST * 2;
        g.on_connected(&c, much_later);
        for _ in 0..6 {
            for (id, _) in send_all(&mut g, &mut pkid) {
                g.on_suback(&c, id);
            }
        }
        assert!(g.left_out(much_later).is_empty());
        assert!(g.quarantine.is_empty());
    }

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            "mqtt://h:1234".parse::<BrokerUrl>().unwrap(),
            BrokerUrl::new("h", 1234)
        );
        let u: BrokerUrl = "mqtt://kitchen:s3cret@h:1".parse().unwrap();
        assert_eq!(u.username.as_deref(), Some("kitchen"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert_eq!(u.to_string(), "mqtt://kitchen@h:1");
        assert!(!format!("{u:?}").contains("s3cret"));
        let e = "mqtt://:pw@h:x".parse::<BrokerUrl>().unwrap_err();
        assert!(!e.contains("pw"), "{e}");
        // Credentials given by hand win over the key's.
        let key = crate::auth::PairingKey::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(u.clone().with_key(&key, "x"), u);
        let k = BrokerUrl::new("h", 1).with_key(&key, "hall");
        assert_eq!(k.username.as_deref(), Some("hall"));
        assert!(key.check_mqtt_password("hall", k.password.as_deref().unwrap()));
        assert_eq!("h".parse::<BrokerUrl>().unwrap().port, 1883);
        assert!("mqtt://h:x"
            .parse::<BrokerUrl>()
            .unwrap_err()
            .contains("port"));
        assert!("mqtt://".parse::<BrokerUrl>().is_err());
    }
}
