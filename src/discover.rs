//! `syncstream discover`: the transmitters and receivers on the network, found over
//! mDNS / DNS-SD (docs/discovery.md), as a table or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use syncstream_protocol::discovery::{self, Network};

/// Arguments of `syncstream discover`.
#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// Seconds to listen for answers (0.2 to 60).
    #[arg(long, default_value_t = 3.0, value_parser = crate::cli::number_in(0.2, 60.0, "s"))]
    timeout: f64,
    /// Print JSON: {"transmitters": [...], "receivers": [...]}.
    #[arg(long)]
    json: bool,
}

/// Browses for `--timeout` seconds and prints what answered (nothing found is not an
/// error: the table says so).
///
/// Errors: mDNS cannot start (UDP port 5353).
pub async fn run(a: DiscoverArgs) -> anyhow::Result<()> {
    let wait = Duration::from_secs_f64(a.timeout);
    let net = tokio::task::spawn_blocking(move || discovery::discover(wait)).await??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&net)?);
    } else {
        print!("{}", table(&net, a.timeout));
    }
    Ok(())
}

/// The first (best) address, or `-`.
fn first(addresses: &[std::net::IpAddr]) -> String {
    addresses
        .first()
        .map_or_else(|| "-".to_string(), |a| a.to_string())
}

fn opt(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Rows as columns padded to their widest cell.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(line, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human-readable listing.
fn table(net: &Network, timeout_s: f64) -> String {
    let mut out = String::new();
    if net.transmitters.is_empty() {
        let _ = writeln!(out, "Transmitters: none answered in {timeout_s} s");
    } else {
        let _ = writeln!(out, "Transmitters:");
        let mut rows = vec![[
            "NAME", "ADDRESS", "STREAM", "HTTP", "MQTT", "HTTPS", "VERSION", "HOST",
        ]
        .map(String::from)
        .to_vec()];
        for t in &net.transmitters {
            let ad = &t.ad;
            let mqtt = match (&ad.mqtt_url, ad.mqtt_port, ad.mqtts_port) {
                (Some(u), _, _) => u.clone(),
                (None, Some(p), Some(tls)) => format!("{p} (TLS {tls})"),
                (None, p, None) => opt(p),
                (None, None, Some(tls)) => format!("TLS {tls}"),
            };
            rows.push(vec![
                ad.name.clone(),
                first(&t.addresses),
                ad.stream_port.to_string(),
                ad.http_port.to_string(),
                mqtt,
                opt(ad.https_port),
                ad.version.clone(),
                ad.host.clone(),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    if net.receivers.is_empty() {
        let _ = writeln!(out, "Receivers: none answered in {timeout_s} s");
    } else {
        let _ = writeln!(out, "Receivers:");
        let mut rows = vec![[
            "DEVICE",
            "ADDRESS",
            "STATE",
            "PLAYS FROM",
            "OUTPUT",
            "VERSION",
            "HOST",
        ]
        .map(String::from)
        .to_vec()];
        for r in &net.receivers {
            let ad = &r.ad;
            rows.push(vec![
                ad.device.clone(),
                first(&r.addresses),
                ad.state.clone(),
                ad.source.clone(),
                ad.output.clone(),
                ad.version.clone(),
                ad.host.clone(),
            ]);
        }
        out.push_str(&columns(&rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_protocol::discovery::{
        FoundReceiver, FoundTransmitter, ReceiverAd, TransmitterAd,
    };

    #[test]
    fn the_table_lines_up_and_says_when_nothing_answered() {
        let net = Network {
            transmitters: vec![FoundTransmitter {
                addresses: vec!["192.168.1.10".parse().unwrap()],
                ad: TransmitterAd {
                    name: "living-room".into(),
                    host: "pi4".into(),
                    version: "0.1.0".into(),
                    protocol: 4,
                    stream_port: 4953,
                    http_port: 4954,
                    mqtt_port: Some(1883),
                    mqtt_url: None,
                    mqtts_port: Some(8883),
                    https_port: None,
                },
            }],
            receivers: vec![],
        };
        let t = table(&net, 3.0);
        assert!(t.contains("Receivers: none answered in 3 s"), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[2].find("192.168.1.10"),
            lines[1].find("ADDRESS"),
            "{t}"
        );
        assert!(lines[2].contains("1883 (TLS 8883)"), "{t}");
        let net = Network {
            transmitters: vec![],
            receivers: vec![FoundReceiver {
                addresses: vec![],
                ad: ReceiverAd {
                    device: "kitchen".into(),
                    host: "pi-zero".into(),
                    version: "0.1.0".into(),
                    output: "alsa (hw:0)".into(),
                    state: "playing".into(),
                    source: "192.168.1.10:4953".into(),
                },
            }],
        };
        let t = table(&net, 3.0);
        assert!(t.contains("kitchen  -        playing"), "{t}");
    }
}
