#!/usr/bin/env bash
# The ARMv6 receiver on an emulated ARM1176 (qemu-arm -cpu arm1176, which raises
# SIGILL on any ARMv7 instruction) playing a real transmitter's stream.
#
# usage: qemu-run.sh ARMV6_SYNCSTREAM HOST_SYNCSTREAM SECONDS WORKDIR
#
# Environment (tools/arm_cost/receiver_cost.sh uses them): QEMU_RUN_EMULATOR, the
# command that runs the receiver (default `qemu-arm -cpu arm1176`; `qemu-x86_64` for
# an x86-64 receiver); QEMU_RUN_PLUGIN, a `-plugin` argument for it (e.g. the
# instruction counter of tools/arm_cost); QEMU_RUN_MIC, the microphone's file (default:
# the clip).
#
# Starts `HOST_SYNCSTREAM transmitter` (embedded MQTT broker, the music clip in
# assets/audio looped, Opus) on loopback ports, then the ARMv6 receiver under qemu with
# a WAV sink and, as its microphone, the same clip from a WAV file (there is no room
# here: the estimate is of that recording against the source, so its value is not a
# latency; what is checked is that the ARMv6 estimator runs and reports). After
# SECONDS it stops both and checks, failing otherwise:
# - the receiver's status reached "playing";
# - the WAV sink holds at least SECONDS - 8 s of non-silent audio;
# - at least one drift report was published on syncstream/drift/pi-zero;
# and prints the qemu process's peak RSS (VmHWM: the receiver plus qemu's own code
# cache, an upper bound of what it needs on a Pi) and the reports' figures.
set -euo pipefail

RX=$1 TX=$2 SECONDS_RUN=$3 WORK=$4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLIP=$ROOT/assets/audio/battle-orchestral-44k1.ogg
DEVICE=pi-zero
rm -rf "$WORK" && mkdir -p "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # wait_port PORT SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 did not open within $2 s" >&2
    return 1
}
STREAM=$(free_port) HTTP=$(free_port) MQTT=$(free_port)

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# One pairing key for both sides (the transmitter creates it), and the MQTT monitor
# logs in with the password derived from it, as every client must.
KEY=$WORK/pairing.key
RUST_LOG=info,syncstream_transmitter::http=debug "$TX" transmitter --key-file "$KEY" --source "$CLIP" --loop --stream-listen 127.0.0.1:"$STREAM" \
    --http-listen 127.0.0.1:"$HTTP" --broker-listen 127.0.0.1:"$MQTT" > "$WORK/transmitter.log" 2>&1 &
pids+=($!)
wait_port "$MQTT" 20 || { tail -20 "$WORK/transmitter.log" >&2; exit 1; }
wait_port "$HTTP" 20 || exit 1
MONITOR_PW=$("$TX" key mqtt-password --user qemu-monitor --key-file "$KEY")
mosquitto_sub -h 127.0.0.1 -p "$MQTT" -u qemu-monitor -P "$MONITOR_PW" -v -t "syncstream/drift/$DEVICE" -t "syncstream/status/$DEVICE" \
    > "$WORK/mqtt.log" 2>&1 &
pids+=($!)

read -r -a EMULATOR <<< "${QEMU_RUN_EMULATOR:-qemu-arm -cpu arm1176}"
PLUGIN=()
[[ -n ${QEMU_RUN_PLUGIN:-} ]] && PLUGIN=(-plugin "$QEMU_RUN_PLUGIN")
"${EMULATOR[@]}" "${PLUGIN[@]}" "$RX" receiver --name "$DEVICE" --key-file "$KEY" --transmitter 127.0.0.1 \
    --stream-port "$STREAM" --http-port "$HTTP" --mqtt "mqtt://127.0.0.1:$MQTT" \
    --output wav --output-device "$WORK/out.wav" --mic wav --mic-device "${QEMU_RUN_MIC:-$CLIP}" \
    > "$WORK/receiver.log" 2>&1 &
QPID=$!
pids+=("$QPID")
end=$(($(date +%s) + SECONDS_RUN))
hwm=0
while (($(date +%s) < end)); do
    if ! kill -0 "$QPID" 2>/dev/null; then
        echo "the ARMv6 receiver stopped early:" >&2
        tail -20 "$WORK/receiver.log" >&2
        exit 1
    fi
    h=$(sed -n 's/^VmHWM:\s*\([0-9]*\) kB/\1/p' "/proc/$QPID/status" 2>/dev/null || echo 0)
    ((h > hwm)) && hwm=$h
    sleep 0.5
done
kill -INT "$QPID"
for ((i = 0; i < 100; i++)); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
cleanup
trap - EXIT

python3 - "$WORK" "$SECONDS_RUN" "$hwm" "$DEVICE" <<'EOF'
import json, os, struct, sys
work, seconds, hwm, device = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fail = []
# WAV sink: 32-bit float stereo, 48 kHz (hound); the header may be unfinished, so the
# samples are taken from the file's size after the 44-byte header.
path = os.path.join(work, "out.wav")
data = open(path, "rb").read() if os.path.exists(path) else b""
n = max(0, (len(data) - 44) // 4)
samples = struct.unpack(f"<{n}f", data[44:44 + 4 * n]) if n else ()
played_s = n / 2 / 48000
loud = sum(1 for s in samples if abs(s) > 1e-3)
print(f"qemu run: {seconds:.0f} s, WAV sink holds {played_s:.2f} s of audio, "
      f"{100 * loud / max(1, n):.0f} % of samples non-silent")
if played_s < seconds - 8 or loud < n * 0.2:
    fail.append("the WAV sink did not get the stream")
drifts, states = [], set()
for line in open(os.path.join(work, "mqtt.log"), errors="replace"):
    topic, _, payload = line.partition(" ")
    try:
        msg = json.loads(payload)
    except ValueError:
        continue
    if topic == f"syncstream/drift/{device}":
        drifts.append(msg)
    elif topic == f"syncstream/status/{device}":
        states.add(msg.get("state"))
estimated = [d for d in drifts if d.get("drift_ms") is not None]
print(f"drift reports over MQTT: {len(drifts)} ({len(estimated)} with an estimate); "
      f"status states seen: {sorted(s for s in states if s)}")
if drifts:
    print(f"last drift report: {json.dumps(drifts[-1])}")
print(f"peak RSS of the qemu-arm process (receiver + emulator): {hwm / 1024:.1f} MiB")
# Source windows the receiver fetched over HTTP (the transmitter logs each one).
import re
windows = [re.sub(r"\x1b\[[0-9;]*m", "", line)
           for line in open(os.path.join(work, "transmitter.log"), errors="replace")
           if "source window served" in line]
window_bytes = sum(int(m.group(1)) for w in windows for m in [re.search(r"bytes=(\d+)", w)] if m)
print(f"source windows fetched over HTTP: {len(windows)}, {window_bytes} bytes")
if not drifts:
    fail.append("no drift report on MQTT")
if "playing" not in states:
    fail.append("the receiver never reported playing")
if fail:
    print("FAILED: " + "; ".join(fail))
    sys.exit(1)
EOF
