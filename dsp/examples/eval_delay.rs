//! The Rust side of the delay-estimation harness (`tools/eval_delay/run.sh`).
//!
//! ```text
//! eval_delay decode IN.any OUT.f32         # any audio file → 48 kHz mono raw f32 LE
//! eval_delay run CASES.bin RESULTS.jsonl   # estimate every case
//! eval_delay time REF.f32 REC.f32 MIN_MS MAX_MS REPS   # best-of-REPS time of one estimate
//! ```
//!
//! `CASES.bin` is a sequence of cases, each: `u32` reference length, `u32` recording
//! length, `f64` min lag ms, `f64` max lag ms, `f64` expected lag ms (NaN for none),
//! then the reference and the recording as f32, all little-endian.

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use syncstream_audio::decode::decode_file;
use syncstream_dsp::gcc::Weighting;
use syncstream_dsp::{DelayEstimator, LagSearch};

fn read_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_raw(path: &str) -> anyhow::Result<Vec<f32>> {
    Ok(read_f32s(
        &std::fs::read(path).with_context(|| format!("reading {path}"))?,
    ))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("decode") if args.len() == 4 => {
            let a = decode_file(Path::new(&args[2]), 48_000)?;
            let mut w = BufWriter::new(std::fs::File::create(&args[3])?);
            for s in a.mono() {
                w.write_all(&s.to_le_bytes())?;
            }
            w.flush()?;
        }
        Some("run") if args.len() == 4 => {
            let mut data = Vec::new();
            std::fs::File::open(&args[2])?.read_to_end(&mut data)?;
            let mut out = BufWriter::new(std::fs::File::create(&args[3])?);
            let weighting = match std::env::var("EVAL_WEIGHTING").as_deref() {
                Ok("phat") => Weighting::Phat,
                Ok("ml") => Weighting::Ml,
                Ok(b) if b.starts_with("beta") => Weighting::ScotBeta(b[4..].parse()?),
                _ => Weighting::Scot,
            };
            let mut est = DelayEstimator::new(48_000)
                .with_weighting(weighting)
                .with_two_stage(std::env::var("EVAL_TWO_STAGE").is_ok());
            let mut pos = 0usize;
            while pos < data.len() {
                let u32_at = |p: usize| u32::from_le_bytes(data[p..p + 4].try_into().unwrap());
                let f64_at = |p: usize| f64::from_le_bytes(data[p..p + 8].try_into().unwrap());
                let (nr, ny) = (u32_at(pos) as usize, u32_at(pos + 4) as usize);
                let (lo, hi, exp) = (f64_at(pos + 8), f64_at(pos + 16), f64_at(pos + 24));
                pos += 32;
                let r = read_f32s(&data[pos..pos + 4 * nr]);
                pos += 4 * nr;
                let y = read_f32s(&data[pos..pos + 4 * ny]);
                pos += 4 * ny;
                let search = LagSearch {
                    min_lag_ms: lo,
                    max_lag_ms: hi,
                    expected_lag_ms: (!exp.is_nan()).then_some(exp),
                    gate_ms: None,
                };
                let t = Instant::now();
                let e = est.estimate(&r, &y, &search);
                let us = t.elapsed().as_secs_f64() * 1e6;
                let line = match e {
                    Ok(e) => serde_json::json!({
                        "delay_ms": e.delay_ms, "confidence": e.confidence,
                        "reason": e.reason, "time_us": us, "diag": est.diagnostics(),
                        "coarse": e.coarse,
                    }),
                    Err(err) => serde_json::json!({"error": err.to_string()}),
                };
                writeln!(out, "{line}")?;
            }
            out.flush()?;
        }
        Some("time") if args.len() == 7 => {
            let r = read_raw(&args[2])?;
            let y = read_raw(&args[3])?;
            let search = LagSearch {
                min_lag_ms: args[4].parse()?,
                max_lag_ms: args[5].parse()?,
                expected_lag_ms: None,
                gate_ms: None,
            };
            let reps: usize = args[6].parse()?;
            let mut est =
                DelayEstimator::new(48_000).with_two_stage(std::env::var("EVAL_TWO_STAGE").is_ok());
            let mut best = f64::INFINITY;
            let mut last = None;
            for _ in 0..reps.max(1) {
                let t = Instant::now();
                last = Some(est.estimate(&r, &y, &search)?);
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("{}", serde_json::json!({"best_s": best, "estimate": last}));
        }
        _ => bail!(
            "usage: eval_delay decode IN OUT | run CASES RESULTS | time REF REC MIN_MS MAX_MS REPS"
        ),
    }
    Ok(())
}
