#!/usr/bin/env bash
# shellcheck disable=SC2030,SC2031  # PATH is changed on purpose in a subshell only
# Count how many ARMv6 instructions one delay estimate (syncstream_dsp::
# DelayEstimator) costs on a Raspberry Pi Zero W (ARM1176JZF-S, VFPv2, no NEON).
#
# What it does, on Debian 12 (bookworm) as root:
#  1. installs what it needs from Debian: the Debian Rust toolchain with its std
#     sources (rustc-web, cargo-web, rust-web-src: the rustup toolchain has no ARM
#     target and no rust-src), the armhf cross gcc, qemu-user, and ALSA's armhf
#     development files (the shared crate depends on cpal, whose alsa-sys needs them
#     to link, even though the measured code never calls ALSA);
#  2. cross-builds the examples eval_delay and fft_scalar_cost for
#     arm-unknown-linux-gnueabihf (ARMv6 hard-float, the Pi Zero's target) with
#     -Zbuild-std and -C target-cpu=arm1176jzf-s, so that std, too, is ARMv6 code;
#  3. builds insn_profile.c, a QEMU plugin that counts executed instructions per
#     function, against the qemu-plugin.h of the installed qemu (from Debian's qemu
#     source package; a deb-src entry is added if apt has none);
#  4. cuts test windows from the music clip (as tools/eval_delay's speed table does);
#  5. runs `eval_delay time ... REPS` under qemu-arm with REPS = 1 and 3 and prints
#     (count(3) - count(1)) / 2 = one steady-state estimate (no start-up, no decoding,
#     no FFT planning), split by crate, next to the host (x86-64) build's count from
#     valgrind and both builds' delay_ms; and fft_scalar_cost's count per 8192-point
#     complex FFT (the core of the 16 384-point real FFTs the estimator uses).
#
# Why qemu runs with -cpu cortex-r5f and not arm1176: Debian has no ARMv6 hard-float
# libc (its armhf glibc and ld.so are ARMv7/Thumb-2 and stop at once with SIGILL on
# -cpu arm1176). cortex-r5f is the QEMU CPU closest to the ARM1176 that runs them
# (VFP without NEON, so glibc picks its non-NEON string functions). Apart from such
# libc variants, instruction counts do not depend on the emulated CPU; the binary's
# own code (Rust std included) is ARMv6 only, which check_armv6.py verifies for every
# function that ran. Only libc/libm/ld.so code
# (the "shared libs" column, 0.5-1.3 % of an estimate) is ARMv7 code here.
#
# Cross-check (ARM_COST_ARMEL=1): also builds for arm-unknown-linux-gnueabi (soft-float
# calling convention, VFPv2 code) against Debian's armel libc, which is ARMv5TE code,
# and runs that on -cpu arm1176: the whole process then runs on the ARM1176 model.
#
# Usage: tools/arm_cost/run.sh
# Environment: CARGO_TARGET_DIR (default: <repo>/target), ARM_COST_WORK (default:
# $CARGO_TARGET_DIR/arm_cost), ARM_COST_CLIP (default: ../shared/audio/
# elvish-theme-44k1.flac beside the repository), ARM_COST_QEMU_CPU (cortex-r5f),
# ARM_COST_ARMEL (0; 1 adds the armel cross-check, one more build of ~5 min).
# Writes the table to stdout and to $ARM_COST_WORK/summary.md.
#
# It changes the machine: apt gets the armhf (and, with ARM_COST_ARMEL, armel)
# architecture and a deb-src entry, so `apt-get update` also fetches those indices
# (a mirror mid-sync then fails the update). To undo: purge the :armhf/:armel
# packages (`dpkg --purge --force-all $(dpkg -l | awk '$4 ~ /armhf|armel/ {print $2}')`),
# `dpkg --remove-architecture armhf` (and armel), and delete
# /etc/apt/sources.list.d/arm-cost-deb-src.sources.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/arm_cost
TARGET=arm-unknown-linux-gnueabihf
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${ARM_COST_WORK:-$CARGO_TARGET_DIR/arm_cost}
CLIP=${ARM_COST_CLIP:-$ROOT/../shared/audio/elvish-theme-44k1.flac}
CPU=${ARM_COST_QEMU_CPU:-cortex-r5f}
ARMEL=${ARM_COST_ARMEL:-0}
mkdir -p "$WORK"

log() { echo "== $*" >&2; }

# ---- 1. Debian packages -------------------------------------------------------------
PKGS=(rustc-web cargo-web rust-web-src gcc-arm-linux-gnueabihf qemu-user
      libasound2-dev:armhf pkg-config cmake gcc xz-utils python3 valgrind)
ARCHS=(armhf)
if [[ $ARMEL == 1 ]]; then
    PKGS+=(gcc-arm-linux-gnueabi libasound2-dev:armel)
    ARCHS+=(armel)
fi
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for arch in "${ARCHS[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        log "adding the $arch architecture (for libasound2-dev:$arch)"
        dpkg --add-architecture "$arch"
    fi
done
missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq || true  # an unreachable third-party list must not stop us
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

# The Debian toolchain's binaries (unversioned in bookworm's rustc-web; look them up).
RUSTC=$(dpkg -L rustc-web | grep -E '/bin/rustc(-[0-9.]+)?$' | head -1)
CARGO=$(dpkg -L cargo-web | grep -E '/bin/cargo(-[0-9.]+)?$' | head -1)
RUSTDOC=$(dpkg -L rustc-web | grep -E '/bin/rustdoc(-[0-9.]+)?$' | head -1)
RUSTBIN=$(dirname "$RUSTC")
SRC=$("$RUSTC" --print sysroot)/lib/rustlib/src/rust/library
[[ -f $SRC/std/Cargo.toml ]] || { echo "no std sources at $SRC (rust-web-src)" >&2; exit 1; }
log "$("$RUSTC" --version), $("$CARGO" --version), std sources in $SRC"

# ---- 2. builds ----------------------------------------------------------------------
cd "$ROOT"
# cross_build TRIPLE GCC_PREFIX FLOAT_ABI: eval_delay and fft_scalar_cost for an ARMv6
# target, std included (-Zbuild-std), everything for the ARM1176JZF-S.
cross_build() {
    local triple=$1 gcc=$2 fabi=$3
    local up=${triple^^} low=${triple//-/_}
    up=${up//-/_}
    log "cross-building eval_delay and fft_scalar_cost for $triple (arm1176jzf-s)"
    (
        export PATH="$RUSTBIN:$PATH" RUSTC RUSTDOC
        export RUSTC_BOOTSTRAP=1  # -Zbuild-std on a stable compiler
        export "CARGO_TARGET_${up}_LINKER=$gcc-gcc"
        export "CARGO_TARGET_${up}_RUSTFLAGS=-C target-cpu=arm1176jzf-s"
        # C dependencies (libopus, ring, aws-lc): ARMv6 + VFPv2 as well
        export "CC_$low=$gcc-gcc" "AR_$low=$gcc-ar" ARM_COST_CC=$gcc-gcc
        export "CFLAGS_$low=-march=armv6kz -mfpu=vfp -mfloat-abi=$fabi -marm"
        export "CMAKE_TOOLCHAIN_FILE_$low=$HERE/armv6-toolchain.cmake"
        # alsa-sys finds the target's libasound through pkg-config
        export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR=/usr/lib/$gcc/pkgconfig
        "$CARGO" build --release --locked -p syncstream-dsp --example eval_delay \
            --example fft_scalar_cost --target "$triple" -Zbuild-std=std,panic_abort >&2
    )
}
cross_build "$TARGET" arm-linux-gnueabihf hard
if [[ $ARMEL == 1 ]]; then
    cross_build arm-unknown-linux-gnueabi arm-linux-gnueabi softfp
fi
log "building the host (x86-64) eval_delay with the same compiler"
PATH="$RUSTBIN:$PATH" RUSTC=$RUSTC RUSTDOC=$RUSTDOC \
    "$CARGO" build --release --locked -p syncstream-dsp --example eval_delay >&2
HOST_BIN=$CARGO_TARGET_DIR/release/examples

# ---- 3. the counting plugin -----------------------------------------------------------
# shellcheck source=tools/arm_cost/plugin.sh
source "$HERE/plugin.sh"
build_insn_plugin "$WORK"

# prof OUT SYSROOT CPU PROGRAM ARGS...: run an ARM program under qemu, counting
# instructions into $WORK/OUT.
prof() {
    local out=$1 sysroot=$2 cpu=$3
    shift 3
    RUST_BACKTRACE=0 qemu-arm -L "$sysroot" -cpu "$cpu" \
        -plugin "$WORK/libinsn_profile.so,out=$WORK/$out" "$@"
}

# ---- 4. inputs ----------------------------------------------------------------------
log "decoding $CLIP and cutting the windows"
"$HOST_BIN/eval_delay" decode "$CLIP" "$WORK/clip.f32"
python3 "$HERE/make_inputs.py" "$WORK/clip.f32" "$WORK"

# ---- 5. measurements --------------------------------------------------------------------
valgrind_count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : //p'
}
: > "$WORK/manifest.tsv"
# label|window s|min lag ms|max lag ms
SETTINGS=("2 s, ±60 ms (receiver tracking)|2|-60|60"
          "2 s, ±100 ms|2|-100|100"
          "2 s, ±400 ms (receiver acquiring)|2|-400|400"
          "2 s, ±1000 ms (command default)|2|-1000|1000"
          "0.5 s, ±100 ms|0.5|-100|100")
# variant|target|qemu sysroot|qemu cpu
VARIANTS=("armhf|$TARGET|/usr/arm-linux-gnueabihf|$CPU")
if [[ $ARMEL == 1 ]]; then
    VARIANTS+=("armel on -cpu arm1176|arm-unknown-linux-gnueabi|/usr/arm-linux-gnueabi|arm1176")
fi
i=0
for s in "${SETTINGS[@]}"; do
    IFS='|' read -r label win lo hi <<< "$s"
    args=("$WORK/ref_${win}s.f32" "$WORK/rec_${win}s.f32" "$lo" "$hi")
    i=$((i + 1))
    "$HOST_BIN/eval_delay" time "${args[@]}" 1 > "$WORK/est${i}_x86.json"
    x1=- x3=-
    if command -v valgrind > /dev/null; then
        x1=$(valgrind_count "$HOST_BIN/eval_delay" time "${args[@]}" 1)
        x3=$(valgrind_count "$HOST_BIN/eval_delay" time "${args[@]}" 3)
    fi
    v=0
    for var in "${VARIANTS[@]}"; do
        IFS='|' read -r vname triple sysroot cpu <<< "$var"
        v=$((v + 1))
        log "estimate: $label, $vname"
        for reps in 1 3; do
            prof "est${i}v${v}_$reps.prof" "$sysroot" "$cpu" \
                "$CARGO_TARGET_DIR/$triple/release/examples/eval_delay" time "${args[@]}" "$reps" \
                > "$WORK/est${i}v${v}_arm.json"
        done
        tag=$label
        ((v == 1)) || tag="$label [$vname]"
        printf 'est\t%s\test%sv%s_1.prof\test%sv%s_3.prof\test%sv%s_arm.json\test%s_x86.json\t%s\t%s\n' \
            "$tag" "$i" "$v" "$i" "$v" "$i" "$v" "$i" "$x1" "$x3" >> "$WORK/manifest.tsv"
    done
done
v=0
for var in "${VARIANTS[@]}"; do
    IFS='|' read -r vname triple sysroot cpu <<< "$var"
    v=$((v + 1))
    log "FFT: fft_scalar_cost 8192, $vname"
    bin=$CARGO_TARGET_DIR/$triple/release/examples/fft_scalar_cost
    prof "fft${v}_0.prof" "$sysroot" "$cpu" "$bin" 8192 0 > /dev/null
    prof "fft${v}_10.prof" "$sysroot" "$cpu" "$bin" 8192 10 > /dev/null
    printf 'fft\t8192-point complex FFT (scalar), %s\tfft%s_0.prof\tfft%s_10.prof\t10\n' \
        "$vname" "$v" "$v" >> "$WORK/manifest.tsv"
done

# ---- 6. checks and table ------------------------------------------------------------------
arm-linux-gnueabihf-objdump -d --no-show-raw-insn \
    "$CARGO_TARGET_DIR/$TARGET/release/examples/eval_delay" > "$WORK/eval_delay.dis"
{
    python3 "$HERE/check_armv6.py" "$WORK/eval_delay.dis" "$WORK"/est*v1_*.prof
    echo "qemu-arm -cpu $CPU, $("$RUSTC" --version), target $TARGET, -C target-cpu=arm1176jzf-s"
    echo "x86-64: the same compiler's host build (default target-cpu; rustfft picks AVX at run time), valgrind"
    echo
    python3 "$HERE/summarize.py" "$WORK"
} | tee "$WORK/summary.md"
