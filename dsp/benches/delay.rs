//! One delay estimate on 0.5 s and 2 s windows at 48 kHz (the receiver's tracking
//! search, ±50 ms; the command's default search on 2 s, ±1000 ms, for scale).
//!
//! `cargo bench -p syncstream-shared --bench delay`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use syncstream_dsp::{DelayEstimator, LagSearch};
use syncstream_testkit::white_noise;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("delay_estimate");
    for &(secs, search_ms) in &[(0.5f64, 50.0f64), (2.0, 50.0), (2.0, 100.0), (2.0, 1000.0)] {
        let n = (secs * 48_000.0) as usize;
        let reference = white_noise(n, 1, 0.3);
        let mut recording = vec![0.0f32; n];
        recording[480..].copy_from_slice(&reference[..n - 480]);
        for (r, v) in recording.iter_mut().zip(white_noise(n, 2, 0.3)) {
            *r += 0.5 * v;
        }
        let mut est = DelayEstimator::new(48_000);
        let search = LagSearch::symmetric(search_ms);
        g.bench_function(
            BenchmarkId::from_parameter(format!("{secs}s_pm{search_ms}ms")),
            |b| b.iter(|| est.estimate(&reference, &recording, &search).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
