//! Following a transmitter that moved (docs/discovery.md, "When the transmitter
//! moves"): a receiver that found its transmitter over mDNS and then has had no stream
//! for [`LOOK_AGAIN_AFTER`] browses again for the same transmitter (its instance name,
//! or `--transmitter-name`'s). Found somewhere else (a new address from DHCP, other
//! ports, another broker), [`follow`] returns it and the caller restarts the receiver
//! there; found at the same place, or not found, it waits for the next outage of
//! that length.

use std::time::{Duration, Instant};

use syncstream_protocol::discovery::DiscoveryError;
use tokio::sync::watch;
use tracing::info;

use super::ChosenTransmitter;
use crate::node::NodeSnapshot;

/// How long the stream must be down before the receiver looks for its transmitter
/// again (a transmitter restart at the same place takes a few seconds; longer means
/// it is gone or moved).
pub const LOOK_AGAIN_AFTER: Duration = Duration::from_secs(15);
/// How long one new search lasts at most.
pub const LOOK_FOR: Duration = Duration::from_secs(5);
/// How often the stream's state is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// When to look again: fed the stream's state over time, says when it has been down
/// for the outage length given (measured from the first time it was seen down, or
/// from the last search).
#[derive(Debug, Clone)]
pub struct Outage {
    after: Duration,
    down_since: Option<Instant>,
}

impl Outage {
    /// An outage tracker that is due after `after` without a stream.
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            down_since: None,
        }
    }

    /// Takes the stream's state at `now` (`connected`: the transmitter's hello was
    /// accepted); true when it has been down for the outage length, after which the
    /// count starts again from `now`.
    pub fn due(&mut self, connected: bool, now: Instant) -> bool {
        if connected {
            self.down_since = None;
            return false;
        }
        let since = *self.down_since.get_or_insert(now);
        if now.duration_since(since) >= self.after {
            self.down_since = Some(now);
            return true;
        }
        false
    }
}

/// Waits until the transmitter `current` is found somewhere else after the receiver
/// whose snapshots `snapshot` carries has had no stream for `after`, and returns it.
/// `want` is `--transmitter-name`; without it, the transmitter with `current`'s
/// instance name is looked for. Each search lasts at most [`LOOK_FOR`], on a blocking
/// thread. Never returns while the stream stays up, or the transmitter comes back at
/// the same place.
///
/// Errors: mDNS cannot start for the new search (no UDP port 5353, no socket).
pub async fn follow(
    mut snapshot: watch::Receiver<NodeSnapshot>,
    current: ChosenTransmitter,
    want: Option<String>,
    after: Duration,
) -> Result<ChosenTransmitter, DiscoveryError> {
    let name = want.unwrap_or_else(|| current.name.clone());
    let mut outage = Outage::new(after);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let connected = snapshot.borrow_and_update().connected;
        if !outage.due(connected, Instant::now()) {
            continue;
        }
        info!(
            "no stream from transmitter {:?} for {:.0} s: looking for it again over mDNS",
            current.name,
            after.as_secs_f64()
        );
        let wanted = name.clone();
        let found =
            tokio::task::spawn_blocking(move || super::look(Some(&wanted), Some(LOOK_FOR), None))
                .await
                .map_err(|e| DiscoveryError(format!("the search stopped: {e}")))??;
        match found {
            Some(new) if !new.same_place(&current) => {
                info!(
                    "transmitter {:?} moved: now at {} (stream port {}, HTTP port {}); restarting the receiver there",
                    new.name, new.address, new.ad.stream_port, new.ad.http_port
                );
                return Ok(new);
            }
            Some(_) => info!(
                "transmitter {:?} is still advertised at {}: waiting for it there",
                current.name, current.address
            ),
            None => info!(
                "transmitter {:?} did not answer over mDNS: still trying {}",
                current.name, current.address
            ),
        }
        outage = Outage::new(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_due_after_its_length_and_then_counts_again() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut o = Outage::new(s(15));
        assert!(!o.due(true, t0));
        assert!(!o.due(false, t0 + s(1)));
        assert!(!o.due(false, t0 + s(15)), "down for 14 s only");
        assert!(o.due(false, t0 + s(16)));
        assert!(!o.due(false, t0 + s(17)), "counts again from the search");
        assert!(o.due(false, t0 + s(31)));
        // The stream comes back: the count starts over at the next outage.
        assert!(!o.due(true, t0 + s(32)));
        assert!(!o.due(false, t0 + s(40)));
        assert!(!o.due(false, t0 + s(54)));
        assert!(o.due(false, t0 + s(55)));
    }
}
