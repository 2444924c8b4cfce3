//! The receiver's steady state: repeated estimates of the same size allocate nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use syncstream_testkit::white_noise;

use syncstream_dsp::{DelayEstimator, LagSearch};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_estimates_do_not_allocate() {
    // The drift detector's shape: a reference 100 ms longer, lags 0..100 ms.
    let reference = white_noise(96_000 + 4_800, 1, 0.3);
    let mut recording = vec![0.0f32; 96_000];
    for (n, r) in recording.iter_mut().enumerate() {
        *r = 0.5 * reference[n + 4_800 - 2_000];
    }
    let search = LagSearch {
        min_lag_ms: -100.0,
        max_lag_ms: 0.0,
        expected_lag_ms: Some(-58.0),
        gate_ms: None,
    };
    for two_stage in [false, true] {
        let mut est = DelayEstimator::new(48_000).with_two_stage(two_stage);
        let first = est.estimate(&reference, &recording, &search).unwrap();
        assert!(first.delay_ms.is_some(), "{first:?}");
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..3 {
            let e = est.estimate(&reference, &recording, &search).unwrap();
            assert!((e.delay_ms.unwrap() + 2_800.0 / 48.0).abs() < 0.01, "{e:?}");
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(after, before, "two_stage = {two_stage}");
    }
}
