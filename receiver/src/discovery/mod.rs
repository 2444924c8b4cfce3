//! Zero-configuration discovery on the receiver's side (docs/discovery.md):
//!
//! - [`find_transmitter`]: a receiver started without `--transmitter` browses for
//!   `_syncstream._tcp` until it finds a transmitter it can use (the first one found,
//!   or the one named by `--transmitter-name`), logging what it sees and a reminder
//!   every few seconds while there is none;
//! - [`follow`]: a receiver that found its transmitter this way follows it when it
//!   moves (a new address from DHCP, new ports): after [`follow::LOOK_AGAIN_AFTER`]
//!   without a stream it looks again, and is restarted on the new place;
//! - [`advertise`]: the receiver announces itself as `_syncstream-rx._tcp` (device
//!   name, version, output, what it plays from, and its state, re-announced when the
//!   state changes).
//!
//! The record formats are `syncstream_protocol::discovery`'s.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use syncstream_protocol::discovery::{
    self, Advertiser, BrowseEvent, Browser, DiscoveryError, ReceiverAd, Resolved, TransmitterAd,
    TRANSMITTER_SERVICE,
};
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_protocol::wire::PROTOCOL_VERSION;
use tracing::{info, warn};

use crate::Receiver;

pub mod follow;

/// How long [`find_transmitter`] keeps listening after the first usable transmitter
/// answered, to see (and log) the others before it takes the first.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How often [`find_transmitter`] says it is still looking.
pub const REMIND_EVERY: Duration = Duration::from_secs(5);
/// Shortest time between two announcements of a receiver's changed state.
pub const MIN_REANNOUNCE: Duration = Duration::from_secs(1);

/// The default MQTT port, when a transmitter's record names no broker.
const DEFAULT_MQTT_PORT: u16 = 1883;

/// The transmitter chosen by browsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenTransmitter {
    /// Its instance name.
    pub name: String,
    /// The address to connect to.
    pub address: IpAddr,
    /// What it advertises (ports, broker, version).
    pub ad: TransmitterAd,
    /// The other transmitters that answered, as `name (address)`.
    pub others: Vec<String>,
}

impl ChosenTransmitter {
    /// The host to connect to (`ReceiverConfig::transmitter_host`): an IPv4 address,
    /// or an IPv6 address in brackets (it is joined with `:port`).
    pub fn host(&self) -> String {
        match self.address {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }

    /// Whether `other` is reached where this one is: the same address, stream and
    /// HTTP ports and broker (the instance name and version may differ).
    pub fn same_place(&self, other: &ChosenTransmitter) -> bool {
        self.address == other.address
            && self.ad.stream_port == other.ad.stream_port
            && self.ad.http_port == other.ad.http_port
            && self.broker() == other.broker()
    }

    /// The MQTT broker it uses: its external broker (a loopback or unspecified host
    /// there means the transmitter's machine: its address instead), else its embedded
    /// broker's port on its address (1883 when the record names neither).
    ///
    /// Errors: the external broker's URL does not parse (the message quotes it).
    pub fn broker(&self) -> Result<BrokerUrl, String> {
        if let Some(url) = &self.ad.mqtt_url {
            let mut b: BrokerUrl = url
                .parse()
                .map_err(|e| format!("transmitter {:?}'s broker {url:?}: {e}", self.name))?;
            let local = b.host.eq_ignore_ascii_case("localhost")
                || b.host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
            if local {
                b.host = self.address.to_string();
            }
            return Ok(b);
        }
        Ok(BrokerUrl::new(
            self.address.to_string(),
            self.ad.mqtt_port.unwrap_or(DEFAULT_MQTT_PORT),
        ))
    }
}

/// One transmitter seen while browsing.
#[derive(Debug, Clone)]
struct Candidate {
    resolved: Resolved,
    /// Why it cannot be used, if it cannot.
    verdict: Result<TransmitterAd, String>,
}

/// The choice among the transmitters that answer, fed with browse events: the first
/// usable one (in the order they were first resolved) once [`SETTLE`] has passed
/// after it, or at once the one whose instance name is `want` (case-insensitive).
/// Usable: a transmitter's TXT record, our stream protocol version, an address to
/// connect to.
#[derive(Debug)]
pub struct Chooser {
    want: Option<String>,
    settle: Duration,
    seen: Vec<Candidate>,
    first_usable_at: Option<Instant>,
}

impl Chooser {
    /// A choice for `want` (an instance name) or the first usable one, waiting
    /// `settle` after the first for the others.
    pub fn new(want: Option<&str>, settle: Duration) -> Self {
        Self {
            want: want.map(str::to_string),
            settle,
            seen: Vec::new(),
            first_usable_at: None,
        }
    }

    /// Why `r` cannot be used, or what it advertises.
    fn verdict(r: &Resolved) -> Result<TransmitterAd, String> {
        let ad = r.transmitter()?;
        if ad.protocol != PROTOCOL_VERSION {
            return Err(format!(
                "it speaks stream protocol {} (version {}), this receiver {PROTOCOL_VERSION}: \
                 update one of them",
                ad.protocol, ad.version
            ));
        }
        if r.best_address().is_none() {
            return Err("no address this receiver can connect to (IPv6 link-local only)".into());
        }
        Ok(ad)
    }

    fn wanted(&self, c: &Candidate) -> bool {
        match &self.want {
            Some(w) => {
                c.verdict
                    .as_ref()
                    .is_ok_and(|ad| ad.name.eq_ignore_ascii_case(w))
                    || c.resolved.instance.eq_ignore_ascii_case(w)
            }
            None => true,
        }
    }

    /// Takes a browse event in at `now`; returns the candidate's name and verdict when
    /// it is news (first seen, or its verdict changed) to log.
    pub fn on_event(
        &mut self,
        event: BrowseEvent,
        now: Instant,
    ) -> Option<(String, Result<String, String>)> {
        match event {
            BrowseEvent::Removed(fullname) => {
                self.seen
                    .retain(|c| !c.resolved.fullname.eq_ignore_ascii_case(&fullname));
                None
            }
            BrowseEvent::Resolved(r) => {
                let verdict = Self::verdict(&r);
                let news_of = |r: &Resolved, v: &Result<TransmitterAd, String>| {
                    v.as_ref().map(|ad| describe(r, ad)).map_err(Clone::clone)
                };
                let news = news_of(&r, &verdict);
                let name = r.instance.clone();
                let candidate = Candidate {
                    resolved: r,
                    verdict,
                };
                if candidate.verdict.is_ok() && self.first_usable_at.is_none() {
                    self.first_usable_at = Some(now);
                }
                match self
                    .seen
                    .iter_mut()
                    .find(|c| c.resolved.fullname == candidate.resolved.fullname)
                {
                    Some(old) => {
                        let old_news = news_of(&old.resolved, &old.verdict);
                        *old = candidate;
                        (old_news != news).then_some((name, news))
                    }
                    None => {
                        self.seen.push(candidate);
                        Some((name, news))
                    }
                }
            }
        }
    }

    /// The transmitter to use at `now`, if the choice is made.
    pub fn decide(&self, now: Instant) -> Option<ChosenTransmitter> {
        let usable = |c: &&Candidate| c.verdict.is_ok() && self.wanted(c);
        let pick = self.seen.iter().find(usable)?;
        let settled = self.want.is_some()
            || self
                .first_usable_at
                .is_some_and(|t| now.duration_since(t) >= self.settle);
        if !settled {
            return None;
        }
        let ad = pick.verdict.clone().ok()?;
        Some(ChosenTransmitter {
            name: ad.name.clone(),
            address: pick.resolved.best_address()?,
            ad,
            others: self
                .seen
                .iter()
                .filter(|c| c.resolved.fullname != pick.resolved.fullname)
                .map(|c| match c.resolved.best_address() {
                    Some(a) => format!("{:?} ({a})", c.resolved.instance),
                    None => format!("{:?}", c.resolved.instance),
                })
                .collect(),
        })
    }

    /// The transmitters seen so far and why each is not taken, for the reminder.
    pub fn seen_summary(&self) -> String {
        let parts: Vec<String> = self
            .seen
            .iter()
            .map(|c| match &c.verdict {
                Ok(_) => format!("{:?} (not the one asked for)", c.resolved.instance),
                Err(e) => format!("{:?} ({e})", c.resolved.instance),
            })
            .collect();
        parts.join(", ")
    }
}

/// `name at address: stream P, HTTP P, MQTT ..., version V`.
fn describe(r: &Resolved, ad: &TransmitterAd) -> String {
    let addr = r
        .best_address()
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    let mqtt = match (&ad.mqtt_url, ad.mqtt_port) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => format!("port {p}"),
        (None, None) => "not named".into(),
    };
    format!(
        "at {addr}: stream port {}, HTTP port {}, MQTT {mqtt}, version {}",
        ad.stream_port, ad.http_port, ad.version
    )
}

/// Browses for transmitters until one this receiver can use answers, and returns it
/// (see [`Chooser`]: `want` is `--transmitter-name`). Logs every transmitter seen,
/// the choice and the others, and every [`REMIND_EVERY`] while there is none, that it
/// is still looking. Blocks (run it on a blocking thread); does not give up, but
/// returns `Ok(None)` within 200 ms of `stop` being set (a service stopped with
/// SIGTERM while it searches exits cleanly).
///
/// Errors: mDNS cannot start (no UDP port 5353, no socket).
pub fn find_transmitter(
    want: Option<&str>,
    stop: &AtomicBool,
) -> Result<Option<ChosenTransmitter>, DiscoveryError> {
    look(want, None, Some(stop))
}

/// [`find_transmitter`] for at most `limit` (`None`: until one answers); `Ok(None)`
/// when none to use answered in time or `stop` was set (checked every 200 ms at most).
///
/// Errors: mDNS cannot start (no UDP port 5353, no socket).
pub(crate) fn look(
    want: Option<&str>,
    limit: Option<Duration>,
    stop: Option<&AtomicBool>,
) -> Result<Option<ChosenTransmitter>, DiscoveryError> {
    let browser = Browser::new(TRANSMITTER_SERVICE)?;
    let started = Instant::now();
    match want {
        Some(w) => info!("looking for the transmitter {w:?} over mDNS ({TRANSMITTER_SERVICE})"),
        None => info!("looking for a transmitter over mDNS ({TRANSMITTER_SERVICE})"),
    }
    let mut chooser = Chooser::new(want, SETTLE);
    let mut remind_at = started + REMIND_EVERY;
    let mut logged = HashSet::new();
    loop {
        let now = Instant::now();
        if let Some(chosen) = chooser.decide(now) {
            info!(
                "using transmitter {:?} at {} (found over mDNS in {:.1} s): stream port {}, HTTP port {}",
                chosen.name,
                chosen.address,
                started.elapsed().as_secs_f64(),
                chosen.ad.stream_port,
                chosen.ad.http_port
            );
            if !chosen.others.is_empty() {
                info!(
                    "other transmitters answered: {}; --transmitter-name NAME or --transmitter HOST picks another",
                    chosen.others.join(", ")
                );
            }
            return Ok(Some(chosen));
        }
        if limit.is_some_and(|l| started.elapsed() >= l)
            || stop.is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Ok(None);
        }
        if now >= remind_at {
            let seen = chooser.seen_summary();
            let what = want.map_or("a transmitter".to_string(), |w| {
                format!("the transmitter {w:?}")
            });
            warn!(
                "no transmitter to use after {:.0} s of browsing for {what} over mDNS{}; still \
                 looking (is it running with mDNS on, on this network, with UDP port 5353 open? \
                 --transmitter HOST skips the search)",
                started.elapsed().as_secs_f64(),
                if seen.is_empty() {
                    String::new()
                } else {
                    format!(" (seen: {seen})")
                }
            );
            remind_at = now + REMIND_EVERY;
        }
        let wait = remind_at
            .saturating_duration_since(now)
            .min(Duration::from_millis(200));
        if let Some(event) = browser.next(wait) {
            if let Some((name, news)) = chooser.on_event(event, Instant::now()) {
                match news {
                    Ok(d) => info!("found transmitter {name:?} {d}"),
                    Err(e) if logged.insert((name.clone(), e.clone())) => {
                        warn!("found transmitter {name:?}, cannot use it: {e}")
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// A receiver's record on the network; withdrawn (goodbye packets) when dropped.
pub struct Advertising {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Advertising {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Advertises the running receiver `rx` as `_syncstream-rx._tcp` with its device
/// name, `output` (in words) and `source` (what it plays from), and its state, which
/// is re-announced when it changes (at most every [`MIN_REANNOUNCE`]). `None`, with a
/// warning in the log, when mDNS is unavailable (the receiver plays on). Needs a
/// tokio runtime.
pub fn advertise(rx: &Receiver, output: &str, source: &str) -> Option<Advertising> {
    let mut snapshot = rx.watch();
    let first = snapshot.borrow_and_update().clone();
    let mut ad = ReceiverAd {
        device: first.device.clone(),
        host: discovery::host_name(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        output: output.to_string(),
        state: first.state.clone(),
        source: source.to_string(),
    };
    let mut adv = match Advertiser::receiver(&ad) {
        Ok(a) => a,
        Err(e) => {
            warn!("this receiver is not advertised over mDNS: {e}");
            return None;
        }
    };
    info!(
        "advertised over mDNS as {:?} ({})",
        ad.device,
        discovery::RECEIVER_SERVICE
    );
    let task = tokio::spawn(async move {
        while snapshot.changed().await.is_ok() {
            let state = snapshot.borrow_and_update().state.clone();
            if state == ad.state {
                continue;
            }
            ad.state = state;
            if let Err(e) = adv.set_txt(&ad.to_txt()) {
                warn!("cannot announce the new state over mDNS: {e}");
            }
            tokio::time::sleep(MIN_REANNOUNCE).await;
        }
        // The receiver stopped: withdraw the record without holding up a worker.
        let _ = tokio::task::spawn_blocking(move || drop(adv)).await;
    });
    Some(Advertising { task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn resolved(name: &str, addr: &str, proto: u16, extra: &[(&str, &str)]) -> Resolved {
        let mut txt: BTreeMap<String, String> = [
            ("name", name),
            ("stream", "4953"),
            ("http", "4954"),
            ("mqtt", "1883"),
            ("version", "0.1.0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        txt.insert("proto".into(), proto.to_string());
        for (k, v) in extra {
            txt.insert(k.to_string(), v.to_string());
        }
        Resolved {
            instance: name.into(),
            fullname: format!("{name}.{TRANSMITTER_SERVICE}"),
            srv_host: "syncstream-tx-x.local.".into(),
            port: 4953,
            addresses: vec![addr.parse().unwrap()],
            txt,
        }
    }

    #[test]
    fn the_first_usable_transmitter_is_taken_after_the_settle_time() {
        let t0 = Instant::now();
        let mut c = Chooser::new(None, Duration::from_secs(1));
        let news = c.on_event(
            BrowseEvent::Resolved(resolved("old", "10.0.0.9", PROTOCOL_VERSION - 1, &[])),
            t0,
        );
        assert!(news.unwrap().1.unwrap_err().contains("stream protocol"));
        assert_eq!(c.decide(t0 + Duration::from_secs(5)), None);
        c.on_event(
            BrowseEvent::Resolved(resolved("a", "10.0.0.2", PROTOCOL_VERSION, &[])),
            t0 + Duration::from_millis(100),
        );
        c.on_event(
            BrowseEvent::Resolved(resolved("b", "10.0.0.3", PROTOCOL_VERSION, &[])),
            t0 + Duration::from_millis(200),
        );
        assert_eq!(c.decide(t0 + Duration::from_millis(500)), None, "settling");
        let chosen = c.decide(t0 + Duration::from_millis(1200)).unwrap();
        assert_eq!(chosen.name, "a");
        assert_eq!(chosen.host(), "10.0.0.2");
        assert_eq!(chosen.broker().unwrap().to_string(), "mqtt://10.0.0.2:1883");
        assert_eq!(chosen.others, ["\"old\" (10.0.0.9)", "\"b\" (10.0.0.3)"]);
        // "a" says goodbye: "b" is next.
        c.on_event(
            BrowseEvent::Removed(format!("a.{TRANSMITTER_SERVICE}")),
            t0 + Duration::from_millis(1300),
        );
        assert_eq!(c.decide(t0 + Duration::from_secs(2)).unwrap().name, "b");
    }

    #[test]
    fn a_named_transmitter_is_taken_at_once_and_only_it() {
        let t0 = Instant::now();
        let mut c = Chooser::new(Some("Kitchen TX"), Duration::from_secs(1));
        c.on_event(
            BrowseEvent::Resolved(resolved("other", "10.0.0.2", PROTOCOL_VERSION, &[])),
            t0,
        );
        assert_eq!(c.decide(t0 + Duration::from_secs(9)), None);
        assert!(c
            .seen_summary()
            .contains("\"other\" (not the one asked for)"));
        c.on_event(
            BrowseEvent::Resolved(resolved(
                "kitchen tx",
                "10.0.0.4",
                PROTOCOL_VERSION,
                &[("mqtt_url", "mqtt://127.0.0.1:1900")],
            )),
            t0,
        );
        let chosen = c.decide(t0).unwrap();
        assert_eq!(chosen.address.to_string(), "10.0.0.4");
        // Its external broker on its own machine is reached at its address.
        assert_eq!(chosen.broker().unwrap().to_string(), "mqtt://10.0.0.4:1900");
    }

    #[test]
    fn a_transmitter_at_a_new_address_or_port_is_somewhere_else() {
        let t0 = Instant::now();
        let chosen = |r: Resolved| {
            let mut c = Chooser::new(None, Duration::ZERO);
            c.on_event(BrowseEvent::Resolved(r), t0);
            c.decide(t0).unwrap()
        };
        let here = chosen(resolved("tx", "10.0.0.2", PROTOCOL_VERSION, &[]));
        let renamed = chosen(resolved("tx again", "10.0.0.2", PROTOCOL_VERSION, &[]));
        assert!(here.same_place(&renamed), "a new name at the same place");
        let moved = chosen(resolved("tx", "10.0.0.7", PROTOCOL_VERSION, &[]));
        assert!(!here.same_place(&moved), "a new address");
        let other_port = chosen(resolved(
            "tx",
            "10.0.0.2",
            PROTOCOL_VERSION,
            &[("stream", "5000")],
        ));
        assert!(!here.same_place(&other_port), "a new stream port");
        let other_broker = chosen(resolved(
            "tx",
            "10.0.0.2",
            PROTOCOL_VERSION,
            &[("mqtt", "1999")],
        ));
        assert!(!here.same_place(&other_broker), "a new broker port");
    }

    #[test]
    fn ipv6_hosts_are_bracketed_and_bad_records_are_explained() {
        let t0 = Instant::now();
        let mut c = Chooser::new(None, Duration::ZERO);
        let mut bad = resolved("bad", "10.0.0.2", PROTOCOL_VERSION, &[]);
        bad.txt.remove("stream");
        let (_, news) = c.on_event(BrowseEvent::Resolved(bad), t0).unwrap();
        assert!(news.unwrap_err().contains("no stream"));
        c.on_event(
            BrowseEvent::Resolved(resolved("v6", "2001:db8::5", PROTOCOL_VERSION, &[])),
            t0,
        );
        let chosen = c.decide(t0).unwrap();
        assert_eq!(chosen.host(), "[2001:db8::5]");
        assert_eq!(chosen.broker().unwrap().host, "2001:db8::5");
    }
}
