#!/usr/bin/env bash
# The simulator's hour of five devices with a measured-style room impulse response of
# more than a second on every device (`rir`), timed: what `docs/scaling.md` quotes.
#
#   bash scripts/sim-hour-rir.sh [SECONDS]      # default 3600 s of audio
#
# The impulse responses are made here (not committed): for each device a WAV of 1.2 s
# at 48 kHz, a direct path followed by a diffuse tail of Gaussian noise decaying at
# the device's `rt60_s` (Polack's model, the shape of a measured one) at the
# direct-to-reverberant ratio of its microphone's distance in a 50 m³ room, seeded per
# device. The scenario is `scenarios/five-devices-1h.json` with `rir` set on every
# device. Prints the simulator's own summary and the wall time; writes the report to
# $CARGO_TARGET_DIR/sim_rir/report.json.
#
#   RIR_TAIL_AMPLITUDE=0.25 bash scripts/sim-hour-rir.sh 1200
#
# gives every tail that amplitude instead (single tail samples 2 ms after the direct
# path as loud as a quarter of it: a room far more reverberant at the microphone than
# its distance allows, where a reflection's correlation peak can outgrow the direct
# path's; docs/scaling.md), with the report in $CARGO_TARGET_DIR/sim_rir_tail/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$CARGO_TARGET_DIR/sim_rir${RIR_TAIL_AMPLITUDE:+_tail}
SECONDS_OF_AUDIO=${1:-3600}
mkdir -p "$WORK"

(cd "$ROOT" && cargo build --release -p syncstream --bin syncstream)

python3 - "$ROOT/scenarios/five-devices-1h.json" "$WORK" "$SECONDS_OF_AUDIO" "${RIR_TAIL_AMPLITUDE:-}" <<'EOF'
import json, math, os, random, struct, sys, wave
src, work, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
tail_amplitude = float(sys.argv[4]) if sys.argv[4] else None
s = json.load(open(src))
s["audio"] = os.path.normpath(os.path.join(os.path.dirname(src), s["audio"]))
s["duration_s"] = seconds
fs, length_s = 48_000, 1.2
for k, d in enumerate(s["devices"]):
    rng = random.Random(1000 + k)
    rt60 = max(float(d.get("rt60_s") or 0.5), 0.2)
    n = int(fs * length_s)
    onset = 48  # 1 ms of silence before the direct path
    x = [0.0] * n
    x[onset] = 0.9
    # Diffuse tail from 2 ms on, -60 dB after rt60: amplitude a * 10^(-3 t / rt60),
    # with a set by the direct-to-reverberant ratio at the microphone's distance r in a
    # 50 m^3 room (Sabine's critical distance r_c = 0.057 sqrt(V / RT60), DRR =
    # (r_c / r)^2); the tail's energy is a^2 fs RT60 / (6 ln 10).
    r = float(d.get("mic_distance_m") or 0.3)
    r_c = 0.057 * math.sqrt(50.0 / rt60)
    tail_energy = 0.9 ** 2 / (r_c / r) ** 2
    a = math.sqrt(tail_energy * 6 * math.log(10) / (fs * rt60))
    for i in range(onset + 96, n):
        t = (i - onset) / fs
        x[i] = (tail_amplitude or a) * rng.gauss(0.0, 1.0) * 10 ** (-3.0 * t / rt60)
    path = os.path.join(work, f"rir-{d['name']}.wav")
    with wave.open(path + ".tmp", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(fs)
        w.writeframes(b"".join(struct.pack("<h", max(-32767, min(32767, round(v * 32767)))) for v in x))
    os.replace(path + ".tmp", path)
    d["rir"] = path
out = os.path.join(work, "scenario.json")
json.dump(s, open(out + ".tmp", "w"), indent=1)
os.replace(out + ".tmp", out)
EOF

start=$(date +%s.%N)
"$CARGO_TARGET_DIR/release/syncstream" sim --scenario "$WORK/scenario.json" --report "$WORK/report.json"
end=$(date +%s.%N)
python3 -c "print(f'sim-hour-rir: {float($SECONDS_OF_AUDIO):.0f} s of audio, five devices with 1.2 s impulse responses, in {$end - $start:.1f} s of wall time')"
