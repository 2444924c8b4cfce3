//! A device's local clock in real time, for the real-time demo: the host clock (room
//! time) seen through a [`ClockModel`] that the demo may change while the receiver
//! reads it (a `clock_ppm` scenario event: the crystal warms up).

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use syncstream_shared::time::Clock;

use crate::ClockModel;

/// The model, readable from any thread without a lock: a sequence lock over atomics
/// (the writer makes the sequence odd while it changes the two fields; a reader
/// retries when it saw an odd sequence or a change).
#[derive(Debug, Default)]
struct SharedModel {
    seq: AtomicU64,
    offset_us: AtomicU64,
    ppm: AtomicU64,
}

impl SharedModel {
    fn load(&self) -> ClockModel {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let offset_us = f64::from_bits(self.offset_us.load(Ordering::Relaxed));
            let ppm = f64::from_bits(self.ppm.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return ClockModel { offset_us, ppm };
            }
        }
    }

    /// Only one thread may store at a time (the demo's event driver).
    fn store(&self, m: ClockModel) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.offset_us
            .store(m.offset_us.to_bits(), Ordering::Relaxed);
        self.ppm.store(m.ppm.to_bits(), Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

/// A device's local clock: `base` (the clock the room runs on) through a
/// [`ClockModel`], so that each receiver runs on a crystal of its own (a rate error in
/// ppm and an offset) exactly as the virtual room models it. Clones share the model.
#[derive(Clone)]
pub struct ModelClock {
    base: Arc<dyn Clock>,
    model: Arc<SharedModel>,
}

impl ModelClock {
    /// `model` applied to `base`.
    pub fn new(base: Arc<dyn Clock>, model: ClockModel) -> Self {
        let shared = SharedModel::default();
        shared.store(model);
        Self {
            base,
            model: Arc::new(shared),
        }
    }

    /// The crystal changes: from now on local time follows `model` (as returned by
    /// [`crate::Room::set_clock_ppm`], continuous at the change). One caller at a time.
    pub fn set_model(&self, model: ClockModel) {
        self.model.store(model);
    }

    /// The model in effect.
    pub fn model(&self) -> ClockModel {
        self.model.load()
    }
}

impl Clock for ModelClock {
    fn now_us(&self) -> i64 {
        self.model
            .load()
            .local_from_room(self.base.now_us() as f64)
            .round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_shared::time::MonotonicClock;

    #[test]
    fn a_new_rate_applies_from_the_change_on() {
        let base: Arc<dyn Clock> = Arc::new(MonotonicClock);
        let c = ModelClock::new(base.clone(), ClockModel::default());
        let reader = c.clone();
        let m = ClockModel {
            offset_us: 5_000.0,
            ppm: -180.0,
        };
        c.set_model(m);
        assert_eq!(reader.model(), m);
        let room = base.now_us();
        let local = reader.now_us();
        let want = m.local_from_room(room as f64);
        assert!((local as f64 - want).abs() < 50_000.0, "{local} vs {want}");
    }
}
