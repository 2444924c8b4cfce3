//! Zero-configuration discovery over mDNS / DNS-SD (RFC 6762, RFC 6763), with the
//! `mdns-sd` crate: what a transmitter and a receiver advertise, and how to browse
//! for them (docs/discovery.md).
//!
//! - A transmitter advertises [`TRANSMITTER_SERVICE`] (`_syncstream._tcp`): SRV port
//!   = its stream port, TXT = [`TransmitterAd`] (keys in [`keys`]).
//! - A receiver advertises [`RECEIVER_SERVICE`] (`_syncstream-rx._tcp`): SRV port 0
//!   (it listens on nothing), TXT = [`ReceiverAd`], re-announced when its state
//!   changes ([`Advertiser::set_txt`]).
//!
//! Both answer on every interface that is up, loopback included (so a receiver on
//! the transmitter's own machine finds it even without a network), unless the
//! transmitter listens on one address only ([`Scope`]). mDNS is multicast UDP on port
//! 5353: a firewall must let it through.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;

/// The DNS-SD service type transmitters advertise.
pub const TRANSMITTER_SERVICE: &str = "_syncstream._tcp.local.";
/// The DNS-SD service type receivers advertise.
pub const RECEIVER_SERVICE: &str = "_syncstream-rx._tcp.local.";
/// The SRV port of a receiver's record: a receiver listens on nothing (RFC 6763 §
/// "Device Info" records use 0 likewise).
pub const RECEIVER_PORT: u16 = 0;
/// Longest instance name, bytes (one DNS label).
pub const MAX_INSTANCE_LEN: usize = 63;
/// Longest TXT value this module writes, bytes (a TXT string holds 255 with its key).
pub const MAX_TXT_VALUE_LEN: usize = 200;
/// How long [`Advertiser`]'s drop waits for the goodbye packets to go out.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// The TXT keys.
pub mod keys {
    /// Instance name (transmitter) — the name `--transmitter-name` picks.
    pub const NAME: &str = "name";
    /// The machine's host name.
    pub const HOST: &str = "host";
    /// SyncStream's version (`0.1.0`).
    pub const VERSION: &str = "version";
    /// The stream protocol's version ([`crate::wire::PROTOCOL_VERSION`]).
    pub const PROTOCOL: &str = "proto";
    /// Transmitter: the stream port.
    pub const STREAM_PORT: &str = "stream";
    /// Transmitter: the HTTP API's port.
    pub const HTTP_PORT: &str = "http";
    /// Transmitter: the embedded MQTT broker's port (absent with an external broker).
    pub const MQTT_PORT: &str = "mqtt";
    /// Transmitter: the external MQTT broker's URL, `mqtt[s]://host:port` (no login).
    pub const MQTT_URL: &str = "mqtt_url";
    /// Transmitter: the embedded broker's MQTT-over-TLS port, when it has one.
    pub const MQTTS_PORT: &str = "mqtts";
    /// Transmitter: the HTTPS port of the API and dashboard, when there is one.
    pub const HTTPS_PORT: &str = "https";
    /// Receiver: its device name.
    pub const DEVICE: &str = "device";
    /// Receiver: its output (`alsa (hw:0)`).
    pub const OUTPUT: &str = "output";
    /// Receiver: its state (`playing`, `connecting`, ...: the MQTT status's).
    pub const STATE: &str = "state";
    /// Receiver: what it plays from (`host:port` of the transmitter's stream, or
    /// `snapcast:host:port`).
    pub const SOURCE: &str = "source";
}

/// A discovery failure: the mDNS daemon cannot start (no UDP port 5353, no
/// interface), refuses a record, or stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct DiscoveryError(pub String);

fn err(what: &str, e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError(format!("{what}: {e}"))
}

/// What a transmitter advertises in its TXT record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransmitterAd {
    /// Instance name (default: the host name).
    pub name: String,
    /// The machine's host name.
    pub host: String,
    /// SyncStream's version.
    pub version: String,
    /// The stream protocol's version.
    pub protocol: u16,
    /// The stream port.
    pub stream_port: u16,
    /// The HTTP API's port.
    pub http_port: u16,
    /// The embedded broker's port; `None` with an external broker.
    pub mqtt_port: Option<u16>,
    /// The external broker, `mqtt[s]://host:port`; `None` with the embedded one.
    pub mqtt_url: Option<String>,
    /// The embedded broker's TLS port, when it has a TLS listener.
    pub mqtts_port: Option<u16>,
    /// The HTTPS port of the API and dashboard, when there is one.
    pub https_port: Option<u16>,
}

/// What a receiver advertises in its TXT record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiverAd {
    /// Device name.
    pub device: String,
    /// The machine's host name.
    pub host: String,
    /// SyncStream's version.
    pub version: String,
    /// Its output, in words (`alsa (hw:0)`).
    pub output: String,
    /// Its state (`playing`, `connecting`, `starved`, ...).
    pub state: String,
    /// What it plays from (`192.168.1.10:4953`, `snapcast:music.local:1704`).
    pub source: String,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl TransmitterAd {
    /// The TXT record's key/value pairs.
    pub fn to_txt(&self) -> Vec<(String, String)> {
        let mut t = vec![
            (keys::NAME.to_string(), cut(&self.name, MAX_TXT_VALUE_LEN)),
            (keys::HOST.to_string(), cut(&self.host, MAX_TXT_VALUE_LEN)),
            (keys::VERSION.to_string(), self.version.clone()),
            (keys::PROTOCOL.to_string(), self.protocol.to_string()),
            (keys::STREAM_PORT.to_string(), self.stream_port.to_string()),
            (keys::HTTP_PORT.to_string(), self.http_port.to_string()),
        ];
        let opt = |k: &str, v: Option<String>| v.map(|v| (k.to_string(), v));
        t.extend(opt(keys::MQTT_PORT, self.mqtt_port.map(|p| p.to_string())));
        t.extend(opt(
            keys::MQTT_URL,
            self.mqtt_url.as_deref().map(|u| cut(u, MAX_TXT_VALUE_LEN)),
        ));
        t.extend(opt(
            keys::MQTTS_PORT,
            self.mqtts_port.map(|p| p.to_string()),
        ));
        t.extend(opt(
            keys::HTTPS_PORT,
            self.https_port.map(|p| p.to_string()),
        ));
        t
    }

    /// Reads a transmitter's TXT record.
    ///
    /// Errors: the stream or HTTP port is missing, or a port or the protocol version
    /// is not a number (ports 1 to 65535); the message names the key and the value.
    pub fn from_txt(txt: &BTreeMap<String, String>) -> Result<Self, String> {
        let text = |k: &str| txt.get(k).cloned().unwrap_or_default();
        let port = |k: &str| -> Result<Option<u16>, String> {
            match txt.get(k) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u16>() {
                    Ok(p) if p > 0 => Ok(Some(p)),
                    _ => Err(format!(
                        "TXT {k}={v:?} is not a port (a number from 1 to 65535)"
                    )),
                },
            }
        };
        let needed = |k: &str| -> Result<u16, String> {
            port(k)?.ok_or_else(|| format!("TXT has no {k} (its port)"))
        };
        let protocol = match txt.get(keys::PROTOCOL) {
            None => 0,
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("TXT {}={v:?} is not a number", keys::PROTOCOL))?,
        };
        Ok(Self {
            name: text(keys::NAME),
            host: text(keys::HOST),
            version: text(keys::VERSION),
            protocol,
            stream_port: needed(keys::STREAM_PORT)?,
            http_port: needed(keys::HTTP_PORT)?,
            mqtt_port: port(keys::MQTT_PORT)?,
            mqtt_url: txt.get(keys::MQTT_URL).cloned().filter(|u| !u.is_empty()),
            mqtts_port: port(keys::MQTTS_PORT)?,
            https_port: port(keys::HTTPS_PORT)?,
        })
    }
}

impl ReceiverAd {
    /// The TXT record's key/value pairs (long values cut to [`MAX_TXT_VALUE_LEN`]).
    pub fn to_txt(&self) -> Vec<(String, String)> {
        [
            (keys::DEVICE, &self.device),
            (keys::HOST, &self.host),
            (keys::VERSION, &self.version),
            (keys::OUTPUT, &self.output),
            (keys::STATE, &self.state),
            (keys::SOURCE, &self.source),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), cut(v, MAX_TXT_VALUE_LEN)))
        .collect()
    }

    /// Reads a receiver's TXT record; `instance` stands in for a missing device name.
    pub fn from_txt(instance: &str, txt: &BTreeMap<String, String>) -> Self {
        let text = |k: &str| txt.get(k).cloned().unwrap_or_default();
        Self {
            device: txt
                .get(keys::DEVICE)
                .cloned()
                .unwrap_or_else(|| instance.to_string()),
            host: text(keys::HOST),
            version: text(keys::VERSION),
            output: text(keys::OUTPUT),
            state: text(keys::STATE),
            source: text(keys::SOURCE),
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`), or `syncstream` when it
/// cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "syncstream".to_string())
}

/// Checks an instance name (`--mdns-name`, `--transmitter-name`).
///
/// Errors: empty, longer than [`MAX_INSTANCE_LEN`] bytes, or holding a control
/// character; the message says which.
pub fn check_instance_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the instance name is empty".into());
    }
    if name.len() > MAX_INSTANCE_LEN {
        return Err(format!(
            "the instance name is {} bytes long; at most {MAX_INSTANCE_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the instance name holds the control character {c:?}"
        ));
    }
    Ok(())
}

/// A DNS host label from `s`: lowercase ASCII letters, digits and `-`.
fn host_label(prefix: &str, s: &str) -> String {
    let mut out = String::from(prefix);
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = cut(out.trim_end_matches('-'), MAX_INSTANCE_LEN);
    out.trim_end_matches('-').to_string()
}

/// Where a service is advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On every interface that is up, loopback included, with each one's addresses.
    Everywhere,
    /// On the loopback interface only (a service listening on 127.0.0.1 / ::1).
    Loopback(IpAddr),
    /// On the interface of this address, with this address only.
    Address(IpAddr),
}

impl Scope {
    /// The scope of a service listening on `addr`: everywhere for `0.0.0.0` / `::`,
    /// loopback for 127.0.0.1 / ::1, else that address's interface.
    pub fn of_listener(addr: SocketAddr) -> Scope {
        let ip = addr.ip();
        if ip.is_unspecified() {
            Scope::Everywhere
        } else if ip.is_loopback() {
            Scope::Loopback(ip)
        } else {
            Scope::Address(ip)
        }
    }
}

/// An mDNS daemon answering on every interface that is up, loopback included.
///
/// Errors: the daemon cannot start (UDP port 5353, no socket).
pub fn daemon() -> Result<ServiceDaemon, DiscoveryError> {
    let d = ServiceDaemon::new().map_err(|e| err("cannot start the mDNS daemon", e))?;
    d.enable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
        .map_err(|e| err("cannot enable the loopback interface", e))?;
    Ok(d)
}

/// A service advertised for as long as this lives; dropping it sends the goodbye
/// packets (the record's TTL 0) and stops its daemon.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
    service: String,
    instance: String,
    host_label: String,
    port: u16,
    scope: Scope,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser")
            .field("fullname", &self.fullname)
            .field("scope", &self.scope)
            .finish()
    }
}

impl Advertiser {
    /// Advertises a transmitter as `ad.name` (checked with [`check_instance_name`]),
    /// SRV port = its stream port, where its stream port listens (`scope`).
    ///
    /// Errors: a bad instance name, the daemon cannot start or refuses the record.
    pub fn transmitter(ad: &TransmitterAd, scope: Scope) -> Result<Self, DiscoveryError> {
        check_instance_name(&ad.name).map_err(DiscoveryError)?;
        Self::start(
            TRANSMITTER_SERVICE,
            &ad.name,
            &host_label("syncstream-tx-", &ad.name),
            ad.stream_port,
            scope,
            &ad.to_txt(),
        )
    }

    /// Advertises a receiver as its device name (cut to [`MAX_INSTANCE_LEN`] bytes)
    /// on every interface.
    ///
    /// Errors: the daemon cannot start or refuses the record.
    pub fn receiver(ad: &ReceiverAd) -> Result<Self, DiscoveryError> {
        let instance = cut(&ad.device, MAX_INSTANCE_LEN);
        check_instance_name(&instance).map_err(DiscoveryError)?;
        Self::start(
            RECEIVER_SERVICE,
            &instance,
            &host_label("syncstream-rx-", &ad.device),
            RECEIVER_PORT,
            Scope::Everywhere,
            &ad.to_txt(),
        )
    }

    fn start(
        service: &str,
        instance: &str,
        host_label: &str,
        port: u16,
        scope: Scope,
        txt: &[(String, String)],
    ) -> Result<Self, DiscoveryError> {
        let daemon = daemon()?;
        let mut me = Self {
            daemon,
            fullname: String::new(),
            service: service.to_string(),
            instance: instance.to_string(),
            host_label: host_label.to_string(),
            port,
            scope,
        };
        me.set_txt(txt)?;
        Ok(me)
    }

    fn info(&self, txt: &[(String, String)]) -> Result<ServiceInfo, DiscoveryError> {
        // The SRV host is a name of its own (not the machine's, which avahi may answer
        // for with other addresses): its addresses are those of this service's scope.
        let host = format!("{}.local.", self.host_label);
        let props: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (service, instance, port) = (self.service.as_str(), self.instance.as_str(), self.port);
        let bad = |e| err(&format!("invalid record for {instance:?}"), e);
        let info = match self.scope {
            Scope::Address(ip) => {
                let mut i = ServiceInfo::new(service, instance, &host, ip, port, &props[..])
                    .map_err(bad)?;
                i.set_interfaces(vec![IfKind::Addr(ip)]);
                i
            }
            Scope::Loopback(ip) => {
                let mut i = ServiceInfo::new(service, instance, &host, (), port, &props[..])
                    .map_err(bad)?
                    .enable_addr_auto();
                i.set_interfaces(vec![if ip.is_ipv4() {
                    IfKind::LoopbackV4
                } else {
                    IfKind::LoopbackV6
                }]);
                i
            }
            Scope::Everywhere => ServiceInfo::new(service, instance, &host, (), port, &props[..])
                .map_err(bad)?
                .enable_addr_auto(),
        };
        Ok(info)
    }

    /// The record's full name (`kitchen._syncstream-rx._tcp.local.`).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Sets the TXT record and announces the record (again): browsers see the new
    /// TXT record.
    ///
    /// Errors: the record is refused or the daemon stopped.
    pub fn set_txt(&mut self, txt: &[(String, String)]) -> Result<(), DiscoveryError> {
        let info = self.info(txt)?;
        let fullname = info.get_fullname().to_string();
        self.daemon
            .register(info)
            .map_err(|e| err("cannot register the service", e))?;
        self.fullname = fullname;
        Ok(())
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(GOODBYE_WAIT);
        }
        let _ = self.daemon.shutdown();
    }
}

/// The instance name of `fullname` (`Living Room._syncstream._tcp.local.` →
/// `Living Room`), with DNS-SD's escapes (`\.`, `\\`, `\DDD`) undone.
pub fn instance_of(fullname: &str, service: &str) -> String {
    let raw = fullname
        .strip_suffix(service)
        .and_then(|s| s.strip_suffix('.'))
        .unwrap_or(fullname);
    let mut out = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let digits = &bytes[i + 1..bytes.len().min(i + 4)];
            if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
                let v = digits
                    .iter()
                    .fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
            out.push(bytes[i + 1]);
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A service instance found: where it is and its TXT record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// Instance name.
    pub instance: String,
    /// Full DNS-SD name.
    pub fullname: String,
    /// SRV target host (`syncstream-tx-pi.local.`).
    pub srv_host: String,
    /// SRV port.
    pub port: u16,
    /// Its addresses, best first ([`rank`]).
    pub addresses: Vec<IpAddr>,
    /// TXT keys and values.
    pub txt: BTreeMap<String, String>,
}

/// How good an address is to connect to, lower first: IPv4, then global IPv6, then
/// loopback; `None` for one that cannot be used without more (IPv6 link-local needs
/// a scope), unspecified or multicast addresses.
pub fn rank(ip: &IpAddr) -> Option<u8> {
    if ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(2),
        IpAddr::V4(_) => Some(0),
        IpAddr::V6(v6) if v6.is_loopback() => Some(3),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
        IpAddr::V6(_) => Some(1),
    }
}

impl Resolved {
    /// The address to connect to ([`rank`]'s best), if any is usable.
    pub fn best_address(&self) -> Option<IpAddr> {
        self.addresses.first().copied()
    }

    /// This instance as a transmitter.
    ///
    /// Errors: its TXT record is not a transmitter's ([`TransmitterAd::from_txt`]).
    pub fn transmitter(&self) -> Result<TransmitterAd, String> {
        let mut ad = TransmitterAd::from_txt(&self.txt)?;
        if ad.name.is_empty() {
            ad.name = self.instance.clone();
        }
        Ok(ad)
    }

    /// This instance as a receiver.
    pub fn receiver(&self) -> ReceiverAd {
        ReceiverAd::from_txt(&self.instance, &self.txt)
    }

    fn from_service(r: &mdns_sd::ResolvedService) -> Self {
        let mut addresses: Vec<IpAddr> = r
            .get_addresses()
            .iter()
            .map(|a| a.to_ip_addr())
            .filter(|a| rank(a).is_some())
            .collect();
        addresses.sort_by_key(|a| (rank(a), *a));
        addresses.dedup();
        let txt = r
            .get_properties()
            .iter()
            .map(|p| (p.key().to_string(), p.val_str().to_string()))
            .collect();
        Self {
            instance: instance_of(r.get_fullname(), &r.ty_domain),
            fullname: r.get_fullname().to_string(),
            srv_host: r.get_hostname().to_string(),
            port: r.get_port(),
            addresses,
            txt,
        }
    }
}

/// What browsing saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowseEvent {
    /// An instance was resolved (again: its addresses or TXT record changed).
    Resolved(Resolved),
    /// An instance said goodbye (or its record expired): its full name.
    Removed(String),
}

/// Browsing for one service type; stops when dropped.
pub struct Browser {
    daemon: ServiceDaemon,
    service: String,
    events: mdns_sd::Receiver<ServiceEvent>,
}

impl Browser {
    /// Starts browsing for `service` (e.g. [`TRANSMITTER_SERVICE`]).
    ///
    /// Errors: the daemon cannot start or cannot browse.
    pub fn new(service: &str) -> Result<Self, DiscoveryError> {
        let daemon = daemon()?;
        let events = daemon
            .browse(service)
            .map_err(|e| err(&format!("cannot browse for {service}"), e))?;
        Ok(Self {
            daemon,
            service: service.to_string(),
            events,
        })
    }

    /// The next resolution or removal, waiting at most `timeout`; `None` when nothing
    /// came in that time (or the daemon stopped).
    pub fn next(&self, timeout: Duration) -> Option<BrowseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left).ok()? {
                ServiceEvent::ServiceResolved(r) => {
                    return Some(BrowseEvent::Resolved(Resolved::from_service(&r)))
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    return Some(BrowseEvent::Removed(fullname))
                }
                _ => {}
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(&self.service);
        let _ = self.daemon.shutdown();
    }
}

/// What is on the network: every transmitter and receiver that answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Transmitters, by instance name.
    pub transmitters: Vec<FoundTransmitter>,
    /// Receivers, by device name.
    pub receivers: Vec<FoundReceiver>,
}

/// A transmitter found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundTransmitter {
    /// Its addresses, best first.
    pub addresses: Vec<IpAddr>,
    /// What it advertises.
    #[serde(flatten)]
    pub ad: TransmitterAd,
}

/// A receiver found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundReceiver {
    /// Its addresses, best first.
    pub addresses: Vec<IpAddr>,
    /// What it advertises.
    #[serde(flatten)]
    pub ad: ReceiverAd,
}

/// Browses for transmitters and receivers for `wait` and returns what answered (an
/// instance that said goodbye meanwhile is left out; a transmitter whose TXT record
/// is not one is logged and left out).
///
/// Errors: the daemon cannot start or cannot browse.
pub fn discover(wait: Duration) -> Result<Network, DiscoveryError> {
    let tx = Browser::new(TRANSMITTER_SERVICE)?;
    let rx = Browser::new(RECEIVER_SERVICE)?;
    let mut seen: [BTreeMap<String, Resolved>; 2] = Default::default();
    let deadline = Instant::now() + wait;
    let slice = Duration::from_millis(20);
    while Instant::now() < deadline {
        for (i, b) in [&tx, &rx].into_iter().enumerate() {
            while let Some(ev) = b.next(if i == 0 { slice } else { Duration::ZERO }) {
                match ev {
                    BrowseEvent::Resolved(r) => {
                        seen[i].insert(r.fullname.to_lowercase(), r);
                    }
                    BrowseEvent::Removed(name) => {
                        seen[i].remove(&name.to_lowercase());
                    }
                }
            }
        }
    }
    let [txs, rxs] = seen;
    let mut net = Network::default();
    for r in txs.values() {
        match r.transmitter() {
            Ok(ad) => net.transmitters.push(FoundTransmitter {
                addresses: r.addresses.clone(),
                ad,
            }),
            Err(e) => tracing::warn!("transmitter {:?} left out: {e}", r.instance),
        }
    }
    for r in rxs.values() {
        net.receivers.push(FoundReceiver {
            addresses: r.addresses.clone(),
            ad: r.receiver(),
        });
    }
    net.transmitters.sort_by(|a, b| a.ad.name.cmp(&b.ad.name));
    net.receivers.sort_by(|a, b| a.ad.device.cmp(&b.ad.device));
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmitter_ad(name: &str) -> TransmitterAd {
        TransmitterAd {
            name: name.into(),
            host: "pi".into(),
            version: "0.1.0".into(),
            protocol: crate::wire::PROTOCOL_VERSION,
            stream_port: 4953,
            http_port: 4954,
            mqtt_port: Some(1883),
            mqtt_url: None,
            mqtts_port: Some(8883),
            https_port: None,
        }
    }

    #[test]
    fn txt_records_round_trip_and_bad_ones_are_named() {
        let ad = transmitter_ad("Living Room");
        let txt: BTreeMap<String, String> = ad.to_txt().into_iter().collect();
        assert_eq!(txt["stream"], "4953");
        assert_eq!(txt["mqtts"], "8883");
        assert!(!txt.contains_key("https"));
        assert_eq!(TransmitterAd::from_txt(&txt).unwrap(), ad);

        let mut bad = txt.clone();
        bad.insert("http".into(), "http".into());
        let e = TransmitterAd::from_txt(&bad).unwrap_err();
        assert!(e.contains("http=\"http\"") && e.contains("port"), "{e}");
        let mut bad = txt.clone();
        bad.remove("stream");
        let e = TransmitterAd::from_txt(&bad).unwrap_err();
        assert!(e.contains("no stream"), "{e}");
        let mut bad = txt;
        bad.insert("mqtt".into(), "0".into());
        assert!(TransmitterAd::from_txt(&bad).unwrap_err().contains("mqtt"));

        let rx = ReceiverAd {
            device: "kitchen".into(),
            host: "pi-kitchen".into(),
            version: "0.1.0".into(),
            output: "x".repeat(300),
            state: "playing".into(),
            source: "10.0.0.2:4953".into(),
        };
        let txt: BTreeMap<String, String> = rx.to_txt().into_iter().collect();
        assert_eq!(txt["output"].len(), MAX_TXT_VALUE_LEN);
        let back = ReceiverAd::from_txt("kitchen", &txt);
        assert_eq!(back.state, "playing");
        assert_eq!(back.device, "kitchen");
    }

    #[test]
    fn names_addresses_and_scopes() {
        assert_eq!(
            instance_of(
                "Living\\.Room\\032A._syncstream._tcp.local.",
                TRANSMITTER_SERVICE
            ),
            "Living.Room A"
        );
        assert_eq!(
            host_label("syncstream-tx-", "Living Room (2)"),
            "syncstream-tx-living-room-2"
        );
        assert!(check_instance_name("").is_err());
        assert!(check_instance_name(&"a".repeat(64))
            .unwrap_err()
            .contains("64 bytes"));
        assert!(check_instance_name("a\nb").unwrap_err().contains("control"));
        let ips: Vec<IpAddr> = ["fe80::1", "::1", "127.0.0.1", "2001:db8::1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut usable: Vec<IpAddr> = ips.iter().copied().filter(|a| rank(a).is_some()).collect();
        usable.sort_by_key(rank);
        assert_eq!(
            usable.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["10.0.0.2", "2001:db8::1", "127.0.0.1", "::1"]
        );
        assert_eq!(
            Scope::of_listener("0.0.0.0:1".parse().unwrap()),
            Scope::Everywhere
        );
        assert!(matches!(
            Scope::of_listener("127.0.0.1:1".parse().unwrap()),
            Scope::Loopback(_)
        ));
    }

    /// Real multicast on this machine (loopback included): a receiver's record is
    /// found with its TXT, a new state is seen after `set_txt`, and its goodbye
    /// removes it. The instance name is unique to this process.
    #[test]
    fn a_receiver_is_found_and_its_new_state_is_seen() {
        let device = format!("mdns-unit-{}", std::process::id());
        let mut ad = ReceiverAd {
            device: device.clone(),
            host: host_name(),
            version: "0.1.0".into(),
            output: "null (default)".into(),
            state: "connecting".into(),
            source: "127.0.0.1:4953".into(),
        };
        let browser = Browser::new(RECEIVER_SERVICE).unwrap();
        let mut adv = Advertiser::receiver(&ad).unwrap();
        let wait_for = |want: &dyn Fn(&Resolved) -> bool| -> Option<Resolved> {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Some(BrowseEvent::Resolved(r)) = browser.next(Duration::from_millis(200)) {
                    if r.instance == device && want(&r) {
                        return Some(r);
                    }
                }
            }
            None
        };
        let first = wait_for(&|r| r.receiver().state == "connecting").expect("not found");
        assert_eq!(first.port, RECEIVER_PORT);
        assert!(first.best_address().is_some(), "{first:?}");
        assert_eq!(first.receiver().output, "null (default)");

        ad.state = "playing".into();
        adv.set_txt(&ad.to_txt()).unwrap();
        wait_for(&|r| r.receiver().state == "playing").expect("the new state was not seen");

        let fullname = adv.fullname().to_lowercase();
        drop(adv);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut removed = false;
        while Instant::now() < deadline && !removed {
            if let Some(BrowseEvent::Removed(n)) = browser.next(Duration::from_millis(200)) {
                removed = n.to_lowercase() == fullname;
            }
        }
        assert!(removed, "no goodbye for {fullname}");
    }
}
