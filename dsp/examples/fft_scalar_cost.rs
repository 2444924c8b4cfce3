//! Instruction-count helper for the Pi Zero estimate in docs/delay-estimation.md:
//! runs `COUNT` complex FFTs of `LEN` points with rustfft's scalar planner (no SIMD,
//! as on an ARMv6 without NEON). Run under `valgrind --tool=callgrind` with COUNT = 0
//! and COUNT = k and take the difference.
//!
//! `fft_scalar_cost LEN COUNT`

use rustfft::num_complex::Complex32;
use rustfft::FftPlannerScalar;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("LEN COUNT"))
        .collect();
    let (len, count) = (args[0], args[1]);
    let fft = FftPlannerScalar::<f32>::new().plan_fft_forward(len);
    let mut buf: Vec<Complex32> = (0..len)
        .map(|i| Complex32::new((i % 7) as f32, (i % 3) as f32))
        .collect();
    let mut scratch = vec![Complex32::default(); fft.get_inplace_scratch_len()];
    for _ in 0..count {
        fft.process_with_scratch(&mut buf, &mut scratch);
    }
    println!("{}", buf[1].re);
}
