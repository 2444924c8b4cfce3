#!/usr/bin/env bash
# Installs what scripts/build-pi.sh needs on Debian 12 (bookworm), as root (or with
# sudo). Idempotent: does nothing when everything is there.
#
# - Debian's Rust toolchain with its std sources (rustc-web, cargo-web, rust-web-src):
#   the rustup toolchain here has no ARM targets and no rust-src, so std is built for
#   each ARM target with -Zbuild-std;
# - the aarch64 cross gcc and ALSA's arm64 development files (the arm64 package links
#   Debian's arm64 glibc and libasound, i.e. Raspberry Pi OS 64-bit / Debian 12 and later);
# - binutils for armhf (objdump and strip for the ARMv6 binary), qemu-user (qemu-arm
#   -cpu arm1176), dpkg-dev, systemd (systemd-analyze), mosquitto-clients;
# - Zig (PyPI `ziglang`) and cargo-zigbuild (PyPI) in a virtualenv at
#   $PI_ZIG_VENV (/opt/syncstream-zig): the ARMv6 receiver's C code, musl libc,
#   libunwind and compiler-rt are all compiled by Zig's clang for the ARM1176JZF-S;
# - cargo-deb (crates.io, `cargo install --locked`);
# - a deb-src entry for Debian's own archives, for alsa-lib's source (built static for
#   ARMv6 by build-pi.sh).
#
# It changes the machine: dpkg gets the arm64 architecture (so `apt-get update` also
# fetches the arm64 indices) and apt a deb-src list. To undo:
#   dpkg --purge $(dpkg -l | awk '$4 == "arm64" {print $2}')
#   dpkg --remove-architecture arm64
#   rm -f /etc/apt/sources.list.d/syncstream-deb-src.{sources,list}
#   rm -rf /opt/syncstream-zig; apt-get update
set -euo pipefail

ZIG_VENV=${PI_ZIG_VENV:-/opt/syncstream-zig}
ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
CARGO_DEB_VERSION=3.8.0

log() { echo "== $*" >&2; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

updated=0
apt_update() {
    if [[ $updated == 0 ]]; then
        $sudo apt-get update -qq || log "apt-get update reported errors (see above); going on"
        updated=1
    fi
}

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the arm64 architecture (for libasound2-dev:arm64)"
    $sudo dpkg --add-architecture arm64
    updated=0
    apt_update
fi

DEB_SRC=/etc/apt/sources.list.d/syncstream-deb-src.sources
if ! grep -qs -e '^Types:.*deb-src' -e '^deb-src' /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list /etc/apt/sources.list; then
    log "adding deb-src entries for Debian's own archives (alsa-lib's source) in $DEB_SRC"
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f && $f != "$DEB_SRC" ]] && grep -q 'debian.org' "$f" || continue
        sed 's/^Types: deb$/Types: deb-src/' "$f"
        echo
    done > /tmp/syncstream-deb-src.$$
    $sudo cp /tmp/syncstream-deb-src.$$ "$DEB_SRC" && rm -f /tmp/syncstream-deb-src.$$
    if [[ -f /etc/apt/sources.list ]]; then
        sed -n 's/^deb \(.*debian\.org.*\)/deb-src \1/p' /etc/apt/sources.list |
            $sudo tee "${DEB_SRC%.sources}.list" > /dev/null
    fi
    updated=0
    apt_update
fi

PKGS=(rustc-web cargo-web rust-web-src gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu
      binutils-arm-linux-gnueabihf libasound2-dev:arm64 libasound2-dev qemu-user cmake
      pkg-config dpkg-dev systemd mosquitto mosquitto-clients python3 python3-venv
      bzip2 xz-utils make)
missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi

if ! "$ZIG_VENV/bin/python-zig" version 2>/dev/null | grep -qx "$ZIGLANG_VERSION" ||
        ! "$ZIG_VENV/bin/cargo-zigbuild" --version 2>/dev/null | grep -q "$CARGO_ZIGBUILD_VERSION"; then
    log "installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $CARGO_ZIGBUILD_VERSION into $ZIG_VENV"
    $sudo python3 -m venv "$ZIG_VENV"
    $sudo "$ZIG_VENV/bin/pip" install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
fi

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    log "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install -q --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
