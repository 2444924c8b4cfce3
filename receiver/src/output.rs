//! The output supervisor: owns the receiver's [`Sink`], starts it, and when it cannot
//! be opened or stops playing (a Bluetooth speaker that disconnects, a USB DAC pulled
//! out, a Cast device that ends the session) reopens it with backoff while the
//! receiver stays online; it also sets the output's own volume where it has one.
//!
//! The render callback's state (the [`Renderer`]) outlives every sink: it is lent to
//! each one inside the render function and comes back when the sink drops that
//! function ([`Lease`]), so the playout, its offset and its rings survive a reopen.
//! The callback itself only calls the renderer: the hand-back happens on drop.
//!
//! What the supervisor sees goes to the node as [`OutputState`] (shown in the status:
//! `error` with the reason while the output is down); the gain and mute it applies
//! come from the node's snapshots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use syncstream_audio::{AudioError, RenderFn, RenderInfo, Sink};

use crate::realtime::Renderer;

/// First wait before reopening a failed output; it doubles after each failure.
pub const OUTPUT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reopening attempts.
pub const OUTPUT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a playing output is checked (failure, volume), and the longest a stop
/// waits for the supervisor.
const TICK: Duration = Duration::from_millis(200);
/// How long a stopped sink may take to hand the renderer back.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (or reopens) the output. Given the previous sink (stopped) when there is
/// one: a builder drops it and builds a new one; a fixed sink returns it.
pub type OpenOutput =
    Box<dyn FnMut(Option<Box<dyn Sink>>) -> Result<Box<dyn Sink>, AudioError> + Send>;

/// An opener that reuses one sink (stopped and started again on failure).
pub fn fixed_output(sink: Box<dyn Sink>) -> OpenOutput {
    let mut first = Some(sink);
    Box::new(move |prev| {
        prev.or_else(|| first.take())
            .ok_or_else(|| AudioError::new("output", "(fixed)", "the sink was lost"))
    })
}

/// What the supervisor tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputState {
    /// Why the output is silent (it could not be opened or it stopped, and when it is
    /// retried), or `None` while it plays.
    pub error: Option<String>,
    /// Whether the output applies volume itself (then samples are not scaled).
    pub hardware_volume: bool,
}

/// The gain and mute the node wants: `(volume 0..=1, muted)`.
pub type GainSource = Box<dyn FnMut() -> (f64, bool) + Send>;

/// Lends the renderer to one sink; gives it back when the sink drops it.
struct Lease {
    renderer: Option<Renderer>,
    back: mpsc::Sender<Renderer>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renderer.take() {
            let _ = self.back.send(r);
        }
    }
}

fn lend(renderer: Renderer, back: mpsc::Sender<Renderer>) -> RenderFn {
    let mut lease = Lease {
        renderer: Some(renderer),
        back,
    };
    Box::new(
        move |out: &mut [f32], dac_time_us: i64| match lease.renderer.as_mut() {
            Some(r) => r.render(out, dac_time_us),
            None => {
                out.fill(0.0);
                RenderInfo::default()
            }
        },
    )
}

/// The running supervisor; dropping it stops the output.
pub struct OutputSupervisor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    xruns: Arc<AtomicU64>,
}

impl OutputSupervisor {
    /// Starts supervising: opens the output with `open`, plays `renderer` through it,
    /// reports every change of state through `report`, applies `gain()` to outputs
    /// with their own volume. Errors: the thread cannot be started.
    pub fn spawn(
        label: String,
        open: OpenOutput,
        renderer: Renderer,
        gain: GainSource,
        report: Box<dyn FnMut(OutputState) + Send>,
    ) -> std::io::Result<Self> {
        let (stop_tx, stop_rx) = mpsc::channel();
        let xruns = Arc::new(AtomicU64::new(0));
        let run = Run {
            label,
            open,
            gain,
            report,
            stop: stop_rx,
            xruns: xruns.clone(),
            xruns_before: 0,
        };
        let thread = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || run.run(renderer))?;
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
            xruns,
        })
    }

    /// Xruns of every sink this supervisor opened, in total.
    pub fn xrun_counter(&self) -> Arc<AtomicU64> {
        self.xruns.clone()
    }

    /// Stops the output and the supervisor (waits for it).
    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OutputSupervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Run {
    label: String,
    open: OpenOutput,
    gain: GainSource,
    report: Box<dyn FnMut(OutputState) + Send>,
    stop: mpsc::Receiver<()>,
    xruns: Arc<AtomicU64>,
    xruns_before: u64,
}

/// How a wait ended.
enum Woke {
    Stop,
    Tick,
}

impl Run {
    fn wait(&self, d: Duration) -> Woke {
        match self.stop.recv_timeout(d) {
            Err(mpsc::RecvTimeoutError::Timeout) => Woke::Tick,
            _ => Woke::Stop,
        }
    }

    fn run(mut self, renderer: Renderer) {
        let (back_tx, back_rx) = mpsc::channel::<Renderer>();
        let mut renderer = Some(renderer);
        let mut prev: Option<Box<dyn Sink>> = None;
        let mut backoff = OUTPUT_BACKOFF_MIN;
        loop {
            let Some(r) = renderer.take() else {
                tracing::error!(
                    output = self.label,
                    "the render state was not handed back; the output stays silent"
                );
                (self.report)(OutputState {
                    error: Some("internal: the render state was lost".into()),
                    hardware_volume: false,
                });
                let _ = self.stop.recv();
                return;
            };
            let why = match (self.open)(prev.take()) {
                Err(e) => {
                    // The render function was never made: the renderer is still here.
                    renderer = Some(r);
                    e.to_string()
                }
                Ok(mut sink) => match sink.start(lend(r, back_tx.clone())) {
                    Err(e) => {
                        prev = Some(sink);
                        e.to_string()
                    }
                    Ok(()) => {
                        backoff = OUTPUT_BACKOFF_MIN;
                        let stopped = self.play(&mut *sink);
                        let _ = sink.stop();
                        self.xruns_before += sink.xrun_counter().load(Ordering::Relaxed);
                        match stopped {
                            None => return, // asked to stop
                            Some(why) => {
                                prev = Some(sink);
                                why
                            }
                        }
                    }
                },
            };
            if renderer.is_none() {
                renderer = back_rx.recv_timeout(HAND_BACK_TIMEOUT).ok();
            }
            tracing::warn!(
                output = self.label,
                "output silent: {why}; retrying in {} s",
                backoff.as_secs()
            );
            (self.report)(OutputState {
                error: Some(format!(
                    "output {}: {why}; retrying in {} s",
                    self.label,
                    backoff.as_secs()
                )),
                hardware_volume: false,
            });
            if let Woke::Stop = self.wait(backoff) {
                return;
            }
            backoff = (backoff * 2).min(OUTPUT_BACKOFF_MAX);
        }
    }

    /// Watches a playing sink: returns why it stopped, or `None` when asked to stop.
    fn play(&mut self, sink: &mut dyn Sink) -> Option<String> {
        let hw = sink.has_hardware_volume();
        tracing::info!(output = self.label, hardware_volume = hw, "output playing");
        (self.report)(OutputState {
            error: None,
            hardware_volume: hw,
        });
        let mut applied: Option<(f64, bool)> = None;
        loop {
            if hw {
                let want = (self.gain)();
                if applied != Some(want) {
                    match sink.set_volume(want.0, want.1) {
                        Ok(()) => applied = Some(want),
                        Err(e) => {
                            tracing::warn!(output = self.label, "cannot set the volume: {e}");
                            applied = Some(want); // not retried every tick
                        }
                    }
                }
            }
            self.xruns.store(
                self.xruns_before + sink.xrun_counter().load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            if let Some(why) = sink.failure() {
                return Some(why);
            }
            if let Woke::Stop = self.wait(TICK) {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use syncstream_audio::StreamFormat;

    /// A sink that plays one block at start and fails when `fail` is set.
    struct FlakySink {
        render: Option<RenderFn>,
        fail: Arc<AtomicBool>,
        volumes: mpsc::Sender<(f64, bool)>,
    }

    impl Sink for FlakySink {
        fn start(&mut self, mut render: RenderFn) -> Result<(), AudioError> {
            let mut buf = vec![0.0f32; 96];
            render(&mut buf, 0);
            self.render = Some(render);
            Ok(())
        }
        fn stop(&mut self) -> Result<(), AudioError> {
            self.render = None;
            Ok(())
        }
        fn format(&self) -> StreamFormat {
            StreamFormat {
                sample_rate: 48_000,
                channels: 2,
            }
        }
        fn has_hardware_volume(&self) -> bool {
            true
        }
        fn set_volume(&mut self, volume: f64, muted: bool) -> Result<(), AudioError> {
            let _ = self.volumes.send((volume, muted));
            Ok(())
        }
        fn failure(&self) -> Option<String> {
            self.fail
                .swap(false, Ordering::Relaxed)
                .then(|| "the speaker went away".to_string())
        }
    }

    /// The output cannot be opened once, then plays, then fails and is reopened: the
    /// node hears each state with its reason, the renderer survives every reopen,
    /// and the gain is applied to the device's own volume.
    #[test]
    fn reopens_with_backoff_and_keeps_the_renderer() {
        let (renderer, _capturer, _control) = crate::realtime::engine(5.0, 48_000);
        let fail = Arc::new(AtomicBool::new(false));
        let (vol_tx, vol_rx) = mpsc::channel();
        let mut opens = 0u32;
        let fail2 = fail.clone();
        let open: OpenOutput = Box::new(move |_prev| {
            opens += 1;
            if opens == 1 {
                return Err(AudioError::new("test", "speaker", "not connected"));
            }
            Ok(Box::new(FlakySink {
                render: None,
                fail: fail2.clone(),
                volumes: vol_tx.clone(),
            }))
        });
        let (tx, rx) = mpsc::channel();
        let mut sup = OutputSupervisor::spawn(
            "test".into(),
            open,
            renderer,
            Box::new(|| (0.4, false)),
            Box::new(move |s| {
                let _ = tx.send(s);
            }),
        )
        .expect("spawn");
        let next = || rx.recv_timeout(Duration::from_secs(10)).expect("a state");
        let s = next();
        assert!(
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("not connected") && e.contains("retrying in 1 s")),
            "{s:?}"
        );
        assert_eq!(
            next(),
            OutputState {
                error: None,
                hardware_volume: true
            }
        );
        assert_eq!(
            vol_rx.recv_timeout(Duration::from_secs(10)),
            Ok((0.4, false))
        );
        fail.store(true, Ordering::Relaxed);
        let s = next();
        assert!(
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("the speaker went away")),
            "{s:?}"
        );
        // Reopened with the same renderer (a lost one would be reported instead).
        assert_eq!(next().error, None);
        sup.stop();
    }
}
