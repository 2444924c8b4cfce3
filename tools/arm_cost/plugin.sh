#!/usr/bin/env bash
# shellcheck disable=SC2148
# Builds insn_profile.c (a QEMU TCG plugin counting executed guest instructions, in
# total and per function) against the qemu-plugin.h of the installed qemu-user, taken
# from Debian's qemu source package (a deb-src entry for Debian's archives is added
# when apt has none; see run.sh for how to undo it). Sourced by run.sh and
# receiver_cost.sh.
#
# build_insn_plugin WORK: writes WORK/libinsn_profile.so.
build_insn_plugin() {
    local WORK=$1 HERE
    HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    local QEMU_SRC_VER HDR_DIR f
    QEMU_SRC_VER=$(dpkg-query -W -f='${source:Version}' qemu-user)
    HDR_DIR=$WORK/qemu-$QEMU_SRC_VER
    if [[ ! -f $HDR_DIR/qemu-plugin.h ]]; then
        if ! apt-cache showsrc qemu 2>/dev/null | grep -q '^Package: qemu'; then
            log "adding deb-src entries for Debian's own archives (for qemu-plugin.h)"
            for f in /etc/apt/sources.list.d/*.sources; do
                grep -q 'debian.org' "$f" || continue
                sed 's/^Types: deb$/Types: deb-src/' "$f"
                echo
            done > /etc/apt/sources.list.d/arm-cost-deb-src.sources
            if [[ -f /etc/apt/sources.list ]]; then
                sed -n 's/^deb \(.*debian\.org.*\)/deb-src \1/p' /etc/apt/sources.list \
                    > /etc/apt/sources.list.d/arm-cost-deb-src.list
            fi
            apt-get update -qq || true
        fi
        log "fetching qemu $QEMU_SRC_VER sources for include/qemu/qemu-plugin.h"
        mkdir -p "$HDR_DIR/src"
        (cd "$HDR_DIR/src" && apt-get source --download-only "qemu=$QEMU_SRC_VER" >&2)
        tar -xJf "$HDR_DIR"/src/qemu_*.orig.tar.xz -C "$HDR_DIR" --strip-components=3 \
            --wildcards '*/include/qemu/qemu-plugin.h'
        rm -rf "$HDR_DIR/src"
    fi
    gcc -O2 -Wall -Wextra -shared -fPIC -I "$HDR_DIR" -o "$WORK/libinsn_profile.so" \
        "$HERE/insn_profile.c"
}
