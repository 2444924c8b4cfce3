#!/usr/bin/env bash
# Runs one scenario twice, on virtual time (`syncstream sim`) and in real time over real
# TCP, HTTP and MQTT (`syncstream demo --scenario`), and prints each device's final
# offset from both and their difference (the receiver core is the same code in both).
#   scripts/compare-sim-demo.sh [SCENARIO]   (default scenarios/sim-vs-demo-10min.json)
# The demo takes the scenario's duration in real time (10 minutes by default).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-scenarios/sim-vs-demo-10min.json}
mkdir -p out
cargo build --release --quiet
./target/release/syncstream sim --scenario "$scenario" --report out/compare-sim.json --quiet
./target/release/syncstream demo --scenario "$scenario" --report out/compare-demo.json --quiet
python3 - <<'PY'
import json
sim = json.load(open("out/compare-sim.json"))
demo = json.load(open("out/compare-demo.json"))
print(f"{'device':<10} {'sim offset':>12} {'demo offset':>12} {'difference':>11} {'true latency':>13}")
worst = 0.0
for s, d in zip(sim["devices"], demo["devices"]):
    diff = d["final_offset_ms"] - s["final_offset_ms"]
    worst = max(worst, abs(diff))
    print(f"{s['name']:<10} {s['final_offset_ms']:>9.3f} ms {d['final_offset_ms']:>9.3f} ms "
          f"{diff:>+8.3f} ms {s['true_latency_ms']:>10.3f} ms")
for name, r in (("sim", sim), ("demo", demo)):
    p = r.get("pairwise_ms") or {}
    print(f"{name}: converged after {r.get('time_to_converge_s')} s, pairwise p95 {p.get('p95', float('nan')):.3f} ms")
print(f"largest difference of final offsets: {worst:.3f} ms")
PY
