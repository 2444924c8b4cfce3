#!/usr/bin/env bash
# What the whole receiver process costs per second of audio in steady state, in
# executed instructions: ARMv6 (the Pi Zero W build, under qemu-arm -cpu arm1176) and
# x86-64 (the amd64 build, under qemu-x86_64), both counted by the same QEMU plugin
# (insn_profile.c, total over every thread), and the x86-64 receiver's peak RSS run
# natively.
#
#   bash tools/arm_cost/receiver_cost.sh          # 20 s and 50 s runs
#
# The receiver plays the real transmitter's Opus stream (the orchestral clip, looped)
# into a WAV sink and records the same clip from a WAV file as its microphone (no
# room: scripts/pi/qemu-run.sh), so it does everything it does on a Pi: decode, the
# resampling playout, microphone capture and resampling, drift estimates every
# 2.5 s, clock sync 20 times a second, MQTT. Each build runs twice, SHORT and LONG
# seconds; (count(LONG) − count(SHORT)) / (audio played(LONG) − audio played(SHORT))
# is the steady-state cost per second of audio, start-up (FFT planning, connecting,
# the first acquisition search) cancelled out.
#
# Why QEMU for x86-64 too, and not callgrind: the receiver runs in real time (its
# output clock paces it); under callgrind (about 50× slower) it could not keep up and
# would underrun, which is another workload. QEMU runs it at full speed, and a TCG
# plugin counts what executes as callgrind's Ir does.
#
# Caveat: the plugin's counters are plain (not atomic) adds shared by the guest's
# threads, so two threads counting the same place at the same instant can lose an
# add: the totals are lower bounds, within well under 1 % here (most counts are in
# one thread at a time).
#
# Needs: the ARMv6 binary (PI_ONLY=armv6 bash scripts/build-pi.sh) and the amd64 one
# (PI_ONLY=amd64 ...), or set RX_ARMV6 / RX_AMD64; qemu-user, gcc, python3, mosquitto
# clients (scripts/setup.sh installs them). Writes $ARM_COST_WORK/receiver.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/arm_cost
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${ARM_COST_WORK:-$CARGO_TARGET_DIR/arm_cost}
RX_ARMV6=${RX_ARMV6:-$CARGO_TARGET_DIR/arm-unknown-linux-musleabihf/dist/syncstream}
RX_AMD64=${RX_AMD64:-$ROOT/target/pi/stage/amd64/syncstream}
SHORT=${RECEIVER_COST_SHORT:-20}
LONG=${RECEIVER_COST_LONG:-50}
mkdir -p "$WORK"
log() { echo "== $*" >&2; }

for b in "$RX_ARMV6" "$RX_AMD64"; do
    [[ -x $b ]] || { echo "missing $b: build it with scripts/build-pi.sh (PI_ONLY=armv6 / amd64)" >&2; exit 1; }
done
# shellcheck source=tools/arm_cost/plugin.sh
source "$HERE/plugin.sh"
build_insn_plugin "$WORK"

# run LABEL EMULATOR RECEIVER SECONDS: prints "instructions audio_seconds window_bytes"
run() {
    local label=$1 emu=$2 rx=$3 secs=$4 out=$WORK/receiver-$1-$4
    log "$label receiver, $secs s"
    QEMU_RUN_EMULATOR=$emu QEMU_RUN_PLUGIN="$WORK/libinsn_profile.so,out=$out.count" \
        bash "$ROOT/scripts/pi/qemu-run.sh" "$rx" "$RX_AMD64" "$secs" "$out" > "$out.log"
    local insns played windows
    insns=$(awk -F'\t' '$1 == "total" {print $2}' "$out.count")
    played=$(sed -n 's/.*WAV sink holds \([0-9.]*\) s.*/\1/p' "$out.log")
    windows=$(sed -n 's/^source windows fetched over HTTP: [0-9]*, \([0-9]*\) bytes/\1/p' "$out.log")
    echo "$insns $played ${windows:-0}"
}

# The native x86-64 receiver's peak RSS over a run (VmHWM; qemu-run.sh reports the
# emulator's, which adds QEMU's own code cache). Its microphone is the clip's first
# 12 s as a 48 kHz mono WAV: the WAV microphone holds its whole file in memory (the
# 45 s clip decoded at 44.1 kHz stereo, resampled and mixed down: tens of MiB at
# start-up), which a Pi's I²S microphone does not; the drift estimates run on those
# 12 s and their buffers stay allocated afterwards.
native_rss() {
    ffmpeg -loglevel error -y -i "$ROOT/assets/audio/battle-orchestral-44k1.ogg" -t 12 \
        -ac 1 -ar 48000 -c:a pcm_f32le "$WORK/mic-12s.wav"
    QEMU_RUN_EMULATOR=env QEMU_RUN_MIC=$WORK/mic-12s.wav \
        bash "$ROOT/scripts/pi/qemu-run.sh" "$RX_AMD64" "$RX_AMD64" "$1" "$WORK/receiver-native" |
        sed -n 's/.*peak RSS of the qemu-arm process[^:]*: \([0-9.]*\) MiB/\1/p'
}

traffic=()
{
    echo "| build | instructions per second of audio | runs (count, audio played) |"
    echo "| --- | --- | --- |"
    for v in "ARMv6 (arm1176)|qemu-arm -cpu arm1176|$RX_ARMV6" "x86-64|qemu-x86_64|$RX_AMD64"; do
        IFS='|' read -r label emu rx <<< "$v"
        read -r c1 a1 w1 < <(run "${label%% *}" "$emu" "$rx" "$SHORT")
        read -r c2 a2 w2 < <(run "${label%% *}" "$emu" "$rx" "$LONG")
        python3 - "$label" "$c1" "$a1" "$c2" "$a2" <<'EOF'
import sys
label, c1, a1, c2, a2 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
per_s = (c2 - c1) / (a2 - a1)
print(f"| {label} | {per_s / 1e6:.1f} M | {c1 / 1e6:.0f} M in {a1:.2f} s, {c2 / 1e6:.0f} M in {a2:.2f} s |")
EOF
        traffic+=("$label|$w1|$w2")
    done
    echo
    # Measurement traffic in steady state: what the longer run fetched beyond the
    # shorter one, per second, against the Opus stream's 128 kbit/s.
    for t in "${traffic[@]}"; do
        IFS='|' read -r label w1 w2 <<< "$t"
        python3 - "$label" "$w1" "$w2" "$SHORT" "$LONG" <<'EOF'
import sys
label, w1, w2, short, long_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
rate = (w2 - w1) * 8 / 1000 / (long_ - short)
print(f"{label}: source windows over HTTP: {w1} bytes in the {short:.0f} s run, {w2} in the "
      f"{long_:.0f} s run: {rate:.1f} kbit/s in steady state, {100 * rate / 128:.1f} % of the "
      f"stream's 128 kbit/s")
EOF
    done
    echo
    echo "peak RSS of the x86-64 receiver, run natively for $SHORT s (12 s microphone file): $(native_rss "$SHORT") MiB"
} | tee "$WORK/receiver.md"
