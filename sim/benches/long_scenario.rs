//! Benchmark of the simulator on a long scenario: wall-clock time, real-time factor and
//! the sync figures of one run. A single run of an hour is the measurement (criterion's
//! repetitions would take an hour of CPU), so this is a plain bench command:
//!
//! ```text
//! cargo bench -p syncstream-sim --bench long_scenario                 # the 1 h, 5-device scenario
//! cargo bench -p syncstream-sim --bench long_scenario -- scenarios/harsh-room-10min.json
//! ```

use std::path::PathBuf;
use std::time::Instant;

use syncstream_sim::{run_scenario, Scenario};

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // `cargo bench` passes `--bench`; any other argument is a scenario path.
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root.join(p) } else { p })
        .unwrap_or_else(|| root.join("scenarios/five-devices-1h.json"));
    let scenario = Scenario::load(&path)?;
    let started = Instant::now();
    let report = run_scenario(&scenario, &mut |_, _| {})?;
    let wall_s = started.elapsed().as_secs_f64();
    let underruns: u64 = report.devices.iter().map(|d| d.underruns).sum();
    let clock_p95 = report
        .devices
        .iter()
        .filter_map(|d| d.clock_error_us.as_ref().map(|c| c.p95))
        .fold(0.0, f64::max);
    println!("scenario           {}", path.display());
    println!(
        "simulated          {:.0} s of audio, {} devices",
        scenario.duration_s,
        scenario.devices.len()
    );
    println!(
        "wall clock         {wall_s:.1} s ({:.0}× real time, one core)",
        scenario.duration_s / wall_s
    );
    println!(
        "time to converge   {}",
        report
            .time_to_converge_s
            .map_or("never".to_string(), |t| format!("{t:.1} s"))
    );
    match report.pairwise_ms {
        Some(p) => println!(
            "pairwise error     p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms (after convergence)",
            p.p50, p.p95, p.max
        ),
        None => println!("pairwise error     none (no device played)"),
    }
    println!("clock sync error   worst device p95 {clock_p95:.1} µs");
    println!("underruns          {underruns}");
    Ok(())
}
