#!/usr/bin/env bash
# shellcheck disable=SC2030,SC2031  # environment changed on purpose in subshells only
# Builds SyncStream for real Pis on Debian 12 x86-64, proves the ARMv6 binary runs on
# a Pi Zero W's CPU, and makes the Debian packages. One command:
#
#   bash scripts/build-pi.sh            # everything, 30 s qemu run
#   PI_QEMU_SECONDS=12 bash scripts/build-pi.sh   # CI's shorter run
#
# 1. scripts/pi/setup.sh installs the toolchains (see there; it adds the arm64 dpkg
#    architecture and a deb-src list, and says how to undo it).
# 2. ARMv6 receiver (Raspberry Pi Zero W / Pi 1: ARM1176JZF-S, ARMv6KZ, VFPv2, no
#    NEON), `--no-default-features --features gpio` (receiver and `delay` only, with the status LED and button of docs/gpio.md), for
#    arm-unknown-linux-musleabihf, **statically linked**:
#    - Debian's rustc-web with -Zbuild-std and -C target-cpu=arm1176jzf-s: std too is
#      ARMv6 code (rustup has no ARM targets here);
#    - Zig's clang (scripts/pi/zig-*) compiles libopus, alsa-lib, and links with musl's
#      start-up objects, musl, libunwind and compiler-rt, all built by Zig for
#      -mcpu=arm1176jzf_s. Debian's armhf gcc, libgcc and crt*.o are ARMv7/Thumb-2
#      and stop an ARM1176 with SIGILL; Debian has no ARMv6 hard-float libc;
#    - alsa-lib 1.2.8 from Debian's source package, built static for ARMv6 musl
#      (plugins built in: hw, plug, dmix, dsnoop, softvol, ...; no external plugin .so
#      such as pulse or pipewire can be loaded). At run time it reads the Pi's own
#      /usr/share/alsa and /etc/asound.conf.
#    Why static musl and not glibc: the same binary runs under qemu-arm -cpu arm1176
#    here (no ARMv6 sysroot exists to run a dynamic one), every instruction in it can
#    be checked, and it runs on every Raspberry Pi OS release whatever its glibc.
#    The cost: DNS goes through musl's resolver (no NSS: no mDNS ".local" names).
# 3. arm64 (Pi 4/5) and amd64 builds with receiver and transmitter
#    (`--no-default-features --features transmitter`: no demo or simulator), against
#    Debian 12's glibc and libasound (dynamic): arm64 with Debian's rustc-web,
#    -Zbuild-std and aarch64-linux-gnu-gcc; amd64 with the rustup toolchain.
# 4. The ARMv6 check: every function of the ARMv6 binary, disassembled with the armhf
#    objdump, is scanned by tools/arm_cost/check_armv6.py --all (a control object
#    built for ARMv7/Thumb-2 must fail the same check).
# 5. The run: scripts/pi/qemu-run.sh plays a stream from the amd64 transmitter into
#    the ARMv6 receiver under qemu-arm -cpu arm1176 (WAV sink) for PI_QEMU_SECONDS and
#    checks it played and reported its drift over MQTT.
# 6. Stripped binaries in target/pi/stage/<arch>/, packages in target/pi/ (cargo-deb).
#
# Figures (sizes, peak RSS under qemu, build times) go to target/pi/summary.txt.
# Environment: CARGO_TARGET_DIR (default <repo>/target), PI_QEMU_SECONDS (30),
# PI_SKIP_QEMU=1, PI_ONLY (armv6, arm64 or amd64: build that one only, no packages).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/pi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$CARGO_TARGET_DIR/pi
STAGE=$ROOT/target/pi/stage # cargo-deb's assets name this path
QEMU_SECONDS=${PI_QEMU_SECONDS:-30}
ONLY=${PI_ONLY:-}
ZIG_VENV=${PI_ZIG_VENV:-/opt/syncstream-zig}
PROFILE=dist
ARMV6=arm-unknown-linux-musleabihf
ARM64=aarch64-unknown-linux-gnu
AMD64=x86_64-unknown-linux-gnu
mkdir -p "$WORK" "$STAGE"
SUMMARY=$WORK/summary.txt
: > "$SUMMARY"

log() { echo "== $*" >&2; }
note() { echo "$*" | tee -a "$SUMMARY" >&2; }
want() { [[ -z $ONLY || $ONLY == "$1" ]]; }
timed() { # timed LABEL CMD...: runs CMD, notes its wall-clock time
    local label=$1 t0 t1
    shift
    t0=$(date +%s)
    "$@"
    t1=$(date +%s)
    note "build time, $label: $((t1 - t0)) s"
}

bash "$HERE/setup.sh"
export PATH=$ZIG_VENV/bin:$PATH
DEB_RUSTC=/usr/bin/rustc
DEB_CARGO=/usr/bin/cargo
log "$("$DEB_RUSTC" --version) (Debian), $(rustc --version) (rustup), zig $(python-zig version)"
cd "$ROOT"

# ---- ALSA for ARMv6 -------------------------------------------------------------------
ALSA_VER=$(apt-cache showsrc alsa-lib 2>/dev/null | sed -n 's/^Version: //p' | head -1)
[[ -n $ALSA_VER ]] || { echo "no alsa-lib source package (deb-src missing?)" >&2; exit 1; }
ALSA_PREFIX=$WORK/alsa-lib-$ALSA_VER-armv6
build_alsa() {
    local src=$WORK/alsa-src
    rm -rf "$src" && mkdir -p "$src"
    (cd "$src" && apt-get source --download-only "alsa-lib=$ALSA_VER" >&2 2>/dev/null)
    tar -xjf "$src"/alsa-lib_*.orig.tar.bz2 -C "$src"
    (
        cd "$src"/alsa-lib-*/
        CC=$HERE/zig-cc-armv6 AR=$HERE/zig-ar RANLIB=$HERE/zig-ranlib CFLAGS=-O2 \
            ./configure --host=arm-linux-musleabihf --prefix="$ALSA_PREFIX" \
            --enable-static --disable-shared --without-libdl --disable-python \
            --disable-alisp --disable-topology --disable-old-symbols --with-versioned=no \
            --with-configdir=/usr/share/alsa \
            --with-plugindir=/usr/lib/arm-linux-gnueabihf/alsa-lib > "$WORK/alsa-configure.log"
        make -j"$(nproc)" > "$WORK/alsa-make.log" 2>&1
        make install > /dev/null
    )
    rm -rf "$src"
}

build_armv6() {
    if [[ ! -f $ALSA_PREFIX/lib/libasound.a ]]; then
        timed "alsa-lib $ALSA_VER static for ARMv6" build_alsa
    fi
    (
        export RUSTC=$DEB_RUSTC RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 # -Zbuild-std on a stable compiler
        export CARGO_TARGET_ARM_UNKNOWN_LINUX_MUSLEABIHF_LINKER=$HERE/zig-ld-armv6
        # link-self-contained=no: Zig supplies musl's crt objects (rustup's
        # self-contained ones do not exist for a build-std target)
        export CARGO_TARGET_ARM_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C target-cpu=arm1176jzf-s -C link-self-contained=no"
        export CC_arm_unknown_linux_musleabihf=$HERE/zig-cc-armv6 AR_arm_unknown_linux_musleabihf=$HERE/zig-ar
        export CMAKE_TOOLCHAIN_FILE_arm_unknown_linux_musleabihf=$HERE/armv6-zig.cmake
        export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR=$ALSA_PREFIX/lib/pkgconfig ALSA_STATIC=1
        "$DEB_CARGO" build --locked --profile $PROFILE -p syncstream --no-default-features --features gpio \
            --target $ARMV6 -Zbuild-std=std,panic_abort,panic_unwind >&2
    )
}

build_arm64() {
    (
        export RUSTC=$DEB_RUSTC RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
        export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
        export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig
        "$DEB_CARGO" build --locked --profile $PROFILE -p syncstream --no-default-features \
            --features transmitter --target $ARM64 -Zbuild-std=std,panic_abort,panic_unwind >&2
    )
}

build_amd64() {
    cargo build --locked --profile $PROFILE -p syncstream --no-default-features \
        --features transmitter --target $AMD64 >&2
}

# stage ARCH TRIPLE STRIP: a stripped copy for the package, and its size
stage() {
    local arch=$1 triple=$2 strip=$3 bin
    bin=$CARGO_TARGET_DIR/$triple/$PROFILE/syncstream
    mkdir -p "$STAGE/$arch"
    "$strip" -o "$STAGE/$arch/syncstream" "$bin"
    note "stripped size, $arch ($triple): $(stat -c %s "$STAGE/$arch/syncstream") bytes"
}

if want armv6; then
    timed "ARMv6 receiver ($ARMV6, std included)" build_armv6
    stage armhf $ARMV6 arm-linux-gnueabihf-strip
    log "checking every function of the ARMv6 binary"
    arm-linux-gnueabihf-objdump -d --no-show-raw-insn "$CARGO_TARGET_DIR/$ARMV6/$PROFILE/syncstream" \
        > "$WORK/armv6.dis"
    python3 "$ROOT/tools/arm_cost/check_armv6.py" --all "$WORK/armv6.dis" | tee -a "$SUMMARY" >&2
    # Control: the same check must refuse ARMv7/Thumb-2 code.
    printf 'int f(int a, int b) { return a / b + (a & 0xffff0000); }\n' > "$WORK/v7.c"
    python-zig cc -target arm-linux-musleabihf -mcpu=cortex_a7 -mthumb -O2 -c "$WORK/v7.c" -o "$WORK/v7.o"
    arm-linux-gnueabihf-objdump -d --no-show-raw-insn "$WORK/v7.o" > "$WORK/v7.dis"
    if python3 "$ROOT/tools/arm_cost/check_armv6.py" --all "$WORK/v7.dis" > "$WORK/v7.check"; then
        echo "the ARMv6 check passed ARMv7 code: it is broken" >&2
        exit 1
    fi
    note "ARMv6 check control: ARMv7/Thumb-2 object refused ($(grep -c 'NOT ARMv6' "$WORK/v7.check") function)"
fi
if want arm64; then
    timed "arm64 receiver + transmitter ($ARM64, std included)" build_arm64
    stage arm64 $ARM64 aarch64-linux-gnu-strip
fi
if want amd64; then
    timed "amd64 receiver + transmitter ($AMD64)" build_amd64
    stage amd64 $AMD64 strip
fi

if want armv6 && want amd64 && [[ ${PI_SKIP_QEMU:-0} != 1 ]]; then
    log "running the ARMv6 receiver under qemu-arm -cpu arm1176 for $QEMU_SECONDS s"
    bash "$HERE/qemu-run.sh" "$CARGO_TARGET_DIR/$ARMV6/$PROFILE/syncstream" \
        "$STAGE/amd64/syncstream" "$QEMU_SECONDS" "$WORK/qemu" | tee -a "$SUMMARY" >&2
fi

if [[ -z $ONLY ]]; then
    log "Debian packages"
    rm -f "$WORK"/syncstream_*.deb
    for v in "armhf $ARMV6" "arm64 $ARM64" "amd64 $AMD64"; do
        read -r arch triple <<< "$v"
        cargo deb --no-build --no-strip --variant "$arch" --target "$triple" -o "$WORK/" >&2
    done
    for d in "$WORK"/syncstream_*.deb; do
        note "package: $(basename "$d") ($(stat -c %s "$d") bytes)"
    done
fi
log "summary ($SUMMARY):"
cat "$SUMMARY"
