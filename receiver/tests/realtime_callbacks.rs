//! The audio callbacks are real-time safe: the render and capture paths allocate and
//! free nothing (counted by a global allocator, on the callback's thread only), and
//! they keep working whatever happens to the control side (a panic there poisons
//! nothing they use). Late callbacks are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use syncstream_receiver::clock_sync::ClockMapping;
use syncstream_receiver::offset::OffsetRamp;
use syncstream_receiver::playout::StreamParams;
use syncstream_receiver::realtime::{self, AudioControl, ToRender};

/// Counts allocations and frees made while `IN_CALLBACK` is set on the calling thread.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if IN_CALLBACK.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if IN_CALLBACK.with(|c| c.get()) {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if IN_CALLBACK.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` as the audio callback: what it allocates or frees is counted.
fn in_callback<T>(f: impl FnOnce() -> T) -> T {
    IN_CALLBACK.with(|c| c.set(true));
    let r = f();
    IN_CALLBACK.with(|c| c.set(false));
    r
}

fn params() -> StreamParams {
    StreamParams {
        sample_rate: 48_000,
        channels: 2,
        epoch_us: 0,
        codec_delay_samples: 312,
        playout_delay_us: 1_000_000,
    }
}

const SAME: ClockMapping = ClockMapping {
    offset_us: 0.0,
    ref_local_us: 0.0,
    rate: 120e-6,
};

/// Pushes `seconds` of stereo noise-like audio from decoded index `from`.
fn feed(control: &mut AudioControl, from: i64, seconds: f64) -> i64 {
    let frames = (48_000.0 * seconds) as i64;
    let mut x = 1u32;
    let mut i = from;
    while i < from + frames {
        let chunk: Vec<f32> = (0..1920)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        control.push_audio(i, &chunk);
        i += 960;
    }
    i
}

#[test]
fn render_and_capture_allocate_and_free_nothing() {
    let (mut renderer, mut capturer, mut control) = realtime::engine(30.0, 48_000);
    control.new_stream(params());
    control.send(ToRender::Clock(SAME));
    let mut fed = feed(&mut control, 0, 1.2);
    let mut out = vec![0.0f32; 2 * 1024];
    let mic: Vec<f32> = (0..4096).map(|i| (i as f32 * 0.01).sin()).collect();
    let mut t = 1_000_000i64;
    let mut blocks = 0u64;
    // Every path: start, slew, feed-forward rate, jumps, volume, mute, stop, a test
    // tone over the music, running dry and refilling, a new stream, clock changes, and
    // block sizes from 64 to 6000 frames (longer than one playout block).
    for k in 0..3000u64 {
        match k {
            200 => control.send(ToRender::Offset(OffsetRamp::constant(30.5))),
            400 => control.send(ToRender::Offset(OffsetRamp {
                offset_ms: 60.0,
                rate_ms_per_s: 0.3,
                ref_us: t as f64,
            })),
            600 => control.send(ToRender::Volume(0.4)),
            700 => control.send(ToRender::Muted(true)),
            800 => control.send(ToRender::Muted(false)),
            900 => control.send(ToRender::Stopped(true)),
            950 => control.send(ToRender::Stopped(false)),
            1000 => control.send(ToRender::ToneArm {
                samples: vec![0.25f32; 48_000].into(),
                start_dac_us: t + 100_000,
            }),
            1300 => control.send(ToRender::ToneDisarm),
            2000 => {
                control.send(ToRender::ClockLost);
                control.new_stream(params());
                control.send(ToRender::Clock(ClockMapping {
                    rate: -80e-6,
                    ..SAME
                }));
                fed = feed(&mut control, (t - 1_000_000) * 48 / 1000, 1.0);
            }
            _ => {}
        }
        // Keep audio coming, except for a while (running dry and back).
        if !(1500..1700).contains(&k) && fed < (t - 1_000_000) * 48 / 1000 + 48_000 {
            fed = feed(&mut control, fed, 0.2);
        }
        let frames = [480usize, 64, 1024, 441][k as usize % 4];
        let frames = if k % 500 == 499 { 6000 } else { frames };
        if out.len() < 2 * frames {
            out.resize(2 * frames, 0.0);
        }
        in_callback(|| {
            renderer.render(&mut out[..2 * frames], t);
            capturer.capture(&mic[..(frames % 4096).max(1)], t);
        });
        t += frames as i64 * 1_000_000 / 48_000;
        blocks += 1;
        // The control side drains the rings as the node does.
        control.pump(|_| {}, |_| {});
    }
    let stats = control.stats().snapshot();
    assert!(stats.frames > 1_000_000 && blocks == 3000);
    assert!(stats.jumps >= 3, "{stats:?}");
    assert!(stats.underruns >= 1, "it ran dry once: {stats:?}");
    assert_eq!(
        (
            ALLOCS.load(Ordering::Relaxed),
            FREES.load(Ordering::Relaxed)
        ),
        (0, 0),
        "the audio callbacks allocated or freed"
    );
}

#[test]
fn the_callbacks_survive_a_panic_on_the_control_side() {
    let (mut renderer, mut capturer, mut control) = realtime::engine(0.0, 48_000);
    control.new_stream(params());
    control.send(ToRender::Clock(SAME));
    feed(&mut control, 0, 3.0);
    let stats = control.stats().clone();
    // The control task dies holding its side of every ring.
    let dead = std::thread::spawn(move || {
        let _control = control;
        panic!("the control task crashed");
    })
    .join();
    assert!(dead.is_err());
    // Audio goes on from what was buffered, then fades out, with no panic here.
    let mut out = vec![0.0f32; 960];
    let mut t = 1_000_000i64;
    let mut loud = 0;
    for _ in 0..400 {
        renderer.render(&mut out, t);
        capturer.capture(&[0.1; 480], t);
        if out.iter().any(|&x| x.abs() > 0.01) {
            loud += 1;
        }
        t += 10_000;
    }
    assert!(
        loud > 100,
        "it kept playing the buffered audio ({loud} blocks)"
    );
    assert!(
        out.iter().all(|&x| x == 0.0),
        "and faded out when it ran dry"
    );
    assert!(stats.snapshot().frames >= 400 * 480);
}

#[test]
fn late_callbacks_are_counted() {
    let (mut renderer, mut capturer, control) = realtime::engine(0.0, 48_000);
    let mut out = vec![0.0f32; 960];
    renderer.render(&mut out, 0);
    renderer.render(&mut out, 10_000);
    // The device skipped 30 ms: a late callback.
    renderer.render(&mut out, 50_000);
    capturer.capture(&[0.0; 480], 0);
    capturer.capture(&[0.0; 480], 10_000);
    capturer.capture(&[0.0; 480], 30_000);
    let s = control.stats().snapshot();
    assert_eq!((s.late_renders, s.late_captures), (1, 1));
    let _: Arc<realtime::AudioStats> = control.stats().clone();
}
