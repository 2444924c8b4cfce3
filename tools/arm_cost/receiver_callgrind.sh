#!/usr/bin/env bash
# What the receiver's core costs per second of audio in steady state on x86-64,
# counted by callgrind (instructions executed, Ir), with where they go.
#
#   bash tools/arm_cost/receiver_callgrind.sh          # 10 s and 20 s runs
#
# The receiver runs in real time when it is a process (its output clock paces it), and
# under callgrind (about 50× slower) it could not keep up. The simulator runs the same
# production receiver core (`ReceiverNode` with its real-time engine: Opus decode,
# jitter buffer, the resampling playout, microphone capture, drift estimates, clock
# sync) on virtual time, so callgrind can count it at any speed. The simulation is
# one device of `scenarios/five-devices-1h.json` (the kitchen: analog output, 85 ppm,
# SNR 25 dB, RT60 0.5 s) alone; `--toggle-collect='syncstream_receiver::*'` counts
# only what runs inside the receiver's functions (and what they call), so the room
# model and the transmitter are left out. (count(LONG) − count(SHORT)) / (LONG −
# SHORT) is the cost per second of audio, start-up cancelled out.
#
# Not counted here, unlike `receiver_cost.sh` (whole process under QEMU): the
# network, tokio and MQTT, which the simulator replaces.
#
# Needs: valgrind and python3 (scripts/setup.sh installs them). Writes
# $CALLGRIND_WORK/receiver-callgrind.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${CALLGRIND_WORK:-$CARGO_TARGET_DIR/receiver_callgrind}
SHORT=${RECEIVER_CALLGRIND_SHORT:-10}
LONG=${RECEIVER_CALLGRIND_LONG:-20}
mkdir -p "$WORK"

for tool in valgrind callgrind_annotate python3; do
    command -v "$tool" >/dev/null || {
        echo "receiver_callgrind: $tool is missing (apt-get install valgrind python3)" >&2
        exit 1
    }
done

(cd "$ROOT" && cargo build --release -p syncstream --bin syncstream)
BIN=$CARGO_TARGET_DIR/release/syncstream

# One device of the five-device hour, for SHORT and LONG seconds.
for t in "$SHORT" "$LONG"; do
    python3 - "$ROOT/scenarios/five-devices-1h.json" "$t" "$WORK/one-device-$t.json" <<'EOF'
import json, os, sys
src, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = json.load(open(src))
s["audio"] = os.path.normpath(os.path.join(os.path.dirname(src), s["audio"]))
s["duration_s"] = seconds
device = dict(s["devices"][0])
device.pop("hears", None)
s["devices"] = [device]
json.dump(s, open(out + ".tmp", "w"), indent=1)
os.replace(out + ".tmp", out)
EOF
done

count() {
    local t=$1
    valgrind --tool=callgrind --toggle-collect='syncstream_receiver::*' \
        --callgrind-out-file="$WORK/callgrind-$t.out" \
        "$BIN" sim --scenario "$WORK/one-device-$t.json" >"$WORK/sim-$t.log" 2>&1
    # (callgrind_annotate warns about its own thresholds on stderr; the table is whole.)
    callgrind_annotate --inclusive=yes "$WORK/callgrind-$t.out" >"$WORK/annotate-$t.txt" 2>/dev/null
}
count "$SHORT"
count "$LONG"

python3 - "$WORK" "$SHORT" "$LONG" <<'EOF'
import re, sys
work, short, long_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def inclusive(t):
    total, parts = None, {}
    for line in open(f"{work}/annotate-{t}.txt"):
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if not m:
            continue
        n, what = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in what:
            total = n
            continue
        name = what.split(":", 1)[-1].split(" [")[0]
        parts[name] = max(parts.get(name, 0), n)
    return total, parts

(t1, p1), (t2, p2) = inclusive(short), inclusive(long_)
per_s = (t2 - t1) / (long_ - short)
rows = [
    ("Opus decode and the jitter buffer (a frame from the stream)",
     "syncstream_receiver::node::stream::<impl syncstream_receiver::node::ReceiverNode>::on_stream_frame"),
    ("playout: the output callback (resampling playout)",
     "syncstream_receiver::realtime::render::Renderer::render"),
    ("  of which the drift resampler (rubato)",
     "syncstream_receiver::resampler::DriftResampler::render"),
    ("drift measurement (every 2.5 s)", "syncstream_receiver::drift::analyze"),
    ("  of which putting the recording on the transmitter's clock",
     "syncstream_receiver::resampler::align_to_transmitter_clock"),
    ("  of which the delay estimator (GCC)", "syncstream_dsp::delay::DelayEstimator::estimate"),
]
out = [
    f"Receiver core on x86-64, callgrind: {per_s / 1e6:.1f} M instructions per second of "
    f"audio (({t2:,} − {t1:,}) / {long_ - short} s)",
    "",
    "| part | M instructions per second of audio | share |",
    "| --- | --- | --- |",
]
for label, fn in rows:
    a, b = p1.get(fn), p2.get(fn)
    if a is None or b is None:
        out.append(f"| {label} | (not seen) | |")
        continue
    d = (b - a) / (long_ - short)
    out.append(f"| {label} | {d / 1e6:.1f} | {100 * d / per_s:.0f} % |")
text = "\n".join(out)
print(text)
open(f"{work}/receiver-callgrind.md", "w").write(text + "\n")
EOF
