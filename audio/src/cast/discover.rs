//! Finding a Cast device: by its friendly name over mDNS / DNS-SD (service
//! `_googlecast._tcp.local.`, TXT key `fn` = the friendly name, e.g. "Living Room
//! speaker"), or directly from `host[:port]` / `ip[:port]` (port 8009 by default).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent};

/// The DNS-SD service type Cast devices announce.
pub const SERVICE_TYPE: &str = "_googlecast._tcp.local.";
/// The Cast v2 control port.
pub const DEFAULT_PORT: u16 = 8009;
/// How long [`resolve`] browses mDNS for a friendly name.
pub const MDNS_WAIT: Duration = Duration::from_secs(5);

/// A Cast device found: where to connect and the name to report it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastTarget {
    /// Address of the device's Cast v2 (TLS) port.
    pub addr: SocketAddr,
    /// Friendly name (mDNS) or the target as given.
    pub name: String,
}

/// Parses `host[:port]` / `ip[:port]` / `[ipv6]:port`, resolving host names; `None`
/// when `target` does not look like an address (then it is a friendly name).
/// Errors: it looks like an address but does not resolve.
pub fn parse_address(target: &str) -> Option<Result<SocketAddr, String>> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Some(Ok(addr));
    }
    if let Ok(ip) = target.parse::<std::net::IpAddr>() {
        return Some(Ok(SocketAddr::new(ip, DEFAULT_PORT)));
    }
    // A host name: no spaces, and either has a port or a dot (a friendly name such as
    // "Kitchen" is tried over mDNS).
    if target.is_empty() || target.contains(char::is_whitespace) {
        return None;
    }
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => return None,
        },
        None if target.contains('.') => (target, DEFAULT_PORT),
        None => return None,
    };
    Some(
        (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))
            .and_then(|mut a| {
                a.next()
                    .ok_or_else(|| format!("{host} resolves to no address"))
            }),
    )
}

/// Finds the device `target`: an address (see [`parse_address`]) is used directly;
/// otherwise mDNS is browsed for up to `wait` for a device whose friendly name is
/// `target` (case-insensitive). Errors name the target and list the names found.
pub fn resolve(target: &str, wait: Duration) -> Result<CastTarget, String> {
    if let Some(addr) = parse_address(target) {
        return addr.map(|addr| CastTarget {
            addr,
            name: target.to_string(),
        });
    }
    let mdns = ServiceDaemon::new().map_err(|e| format!("mDNS unavailable: {e}"))?;
    let result = browse(&mdns, target, wait);
    let _ = mdns.shutdown();
    result
}

fn browse(mdns: &ServiceDaemon, target: &str, wait: Duration) -> Result<CastTarget, String> {
    let events = mdns
        .browse(SERVICE_TYPE)
        .map_err(|e| format!("mDNS browse failed: {e}"))?;
    let mut deadline = Instant::now() + wait;
    let mut seen = BTreeSet::new();
    let mut fallback: Option<CastTarget> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        let ServiceEvent::ServiceResolved(info) = event else {
            continue;
        };
        let name = info
            .get_property_val_str("fn")
            .map(str::to_string)
            .unwrap_or_else(|| info.get_fullname().to_string());
        if name.eq_ignore_ascii_case(target) {
            // Prefer IPv4 (the HTTP stream's URL is for the address the OS routes
            // towards the device); link-local IPv6 needs a scope and is left out.
            let addrs: Vec<IpAddr> = info
                .get_addresses()
                .iter()
                .map(|a| a.to_ip_addr())
                .filter(|a| !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
                .collect();
            let found = |ip: IpAddr| CastTarget {
                addr: SocketAddr::new(ip, info.get_port()),
                name: name.clone(),
            };
            if let Some(ip) = addrs.iter().find(|a| a.is_ipv4()) {
                let _ = mdns.stop_browse(SERVICE_TYPE);
                return Ok(found(*ip));
            }
            if let (Some(ip), None) = (addrs.first(), &fallback) {
                // IPv6 only so far: an IPv4 address may follow in a moment.
                fallback = Some(found(*ip));
                deadline = deadline.min(Instant::now() + Duration::from_secs(1));
            }
        }
        seen.insert(name);
    }
    let _ = mdns.stop_browse(SERVICE_TYPE);
    if let Some(f) = fallback {
        return Ok(f);
    }
    let found = if seen.is_empty() {
        "none".to_string()
    } else {
        seen.into_iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "no Cast device named \"{target}\" found by mDNS ({SERVICE_TYPE}) in {} s; devices found: {found}",
        wait.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_friendly_names() {
        assert_eq!(
            parse_address("192.168.1.20").unwrap().unwrap(),
            "192.168.1.20:8009".parse().unwrap()
        );
        assert_eq!(
            parse_address("127.0.0.1:9000").unwrap().unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_address("localhost:8009").unwrap().unwrap().port(),
            8009
        );
        assert!(parse_address("Living Room speaker").is_none());
        assert!(parse_address("Kitchen").is_none());
    }
}
