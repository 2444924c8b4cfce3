//! Work of the playout resampler, for instruction counts on the receiver's hot path:
//! resamples `SECONDS` × N seconds of 48 kHz stereo from the jitter buffer in 10 ms
//! blocks at a drifting rate. Run under callgrind with N = 1 and N = 2; the difference
//! is the cost of `SECONDS` of playout:
//!
//! ```text
//! cargo build --release -p syncstream-receiver --example resampler_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/resampler_cost 1
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/resampler_cost 2
//! ```

use syncstream_receiver::jitter_buffer::JitterBuffer;
use syncstream_receiver::resampler::DriftResampler;

const SECONDS: usize = 10;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let frames = 48_000 * SECONDS * n + 48_000;
    let mut jb = JitterBuffer::new(2, frames);
    let noise = syncstream_testkit::white_noise(2 * frames, 1, 0.3);
    jb.push(0, &noise);
    let mut rs = DriftResampler::new(2);
    rs.reset(0.0);
    let mut out = vec![0.0f32; 2 * 480];
    let mut sum = 0.0f32;
    for k in 0..(100 * SECONDS * n) {
        let rate = 1.0 + 1e-4 * ((k % 200) as f64 / 200.0 - 0.5);
        rs.render(&jb, rate, &mut out);
        sum += out[0];
    }
    println!("{sum}");
}
