#!/usr/bin/env bash
# Tests the Debian packages made by scripts/build-pi.sh, as root, in a container
# without systemd as PID 1 (CI). Fails on the first thing that does not hold:
#
# 1. every package's contents: binary, units, configuration (conffiles), and its
#    binary runs `--version` (armhf under qemu-arm -cpu arm1176, arm64 under
#    qemu-aarch64 with Debian's arm64 libraries);
# 2. the amd64 package installs with `dpkg -i`: the syncstream user exists in group
#    audio, /var/lib/syncstream is its own, the units pass `systemd-analyze verify`,
#    `syncstream --version` prints the package's version;
# 3. the installed binary starts with the shipped configuration, as the service runs
#    it (user syncstream and its groups, `syncstream service transmitter|receiver`), and sends
#    READY=1 and WATCHDOG=1 (scripts/pi/notify-wait.py stands in for systemd), then
#    stops on SIGTERM with status 0. The container has no sound card: ALSA's `default`
#    is pointed at ALSA's null device through a private ~/.asoundrc (HOME of the test
#    only; /etc/syncstream is used as shipped). setpriv, not runuser: it execs, so the
#    PID that notifies and gets SIGTERM is the service's;
# 4. `dpkg -r` removes the binary and the units and keeps /etc/syncstream;
#    `dpkg --purge` then leaves nothing of the package behind.
#
# usage: test-packages.sh [DIR]   (DIR: where the .deb files are, default target/pi)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/pi}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
log() { echo "== $*" >&2; }
fail() { echo "FAILED: $*" >&2; exit 1; }
deb() { ls "$DIR"/syncstream_*_"$1".deb 2>/dev/null | head -1; }

for arch in armhf arm64 amd64; do
    d=$(deb $arch)
    [[ -n $d ]] || fail "no $arch package in $DIR"
    log "$arch: $(basename "$d")"
    x=$(mktemp -d)
    dpkg-deb -x "$d" "$x"
    dpkg-deb -e "$d" "$x/DEBIAN"
    [[ $(dpkg-deb -f "$d" Architecture) == "$arch" ]] || fail "$d: architecture"
    test -x "$x/usr/bin/syncstream" || fail "$arch: no /usr/bin/syncstream"
    test -f "$x/usr/lib/systemd/system/syncstream-receiver.service" || fail "$arch: no receiver unit"
    grep -qx /etc/syncstream/receiver.toml "$x/DEBIAN/conffiles" || fail "$arch: receiver.toml is not a conffile"
    case $arch in
        armhf)
            test ! -e "$x/usr/lib/systemd/system/syncstream-transmitter.service" || fail "armhf has no transmitter"
            out=$(qemu-arm -cpu arm1176 "$x/usr/bin/syncstream" --version) ;;
        arm64)
            test -f "$x/usr/lib/systemd/system/syncstream-transmitter.service" || fail "arm64: no transmitter unit"
            out=$(qemu-aarch64 -L /usr/aarch64-linux-gnu "$x/usr/bin/syncstream" --version) ;;
        amd64)
            test -f "$x/usr/lib/systemd/system/syncstream-transmitter.service" || fail "amd64: no transmitter unit"
            out=$("$x/usr/bin/syncstream" --version) ;;
    esac
    [[ $out == "syncstream $VERSION" ]] || fail "$arch --version printed '$out'"
    echo "$arch package: contents ok, --version: $out"
    rm -rf "$x"
done

log "installing the amd64 package with dpkg -i"
dpkg --purge syncstream > /dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive dpkg -i "$(deb amd64)" >&2
[[ $(syncstream --version) == "syncstream $VERSION" ]] || fail "installed --version"
id -nG syncstream | tr ' ' '\n' | grep -qx audio || fail "syncstream is not in group audio"
[[ $(stat -c %U /var/lib/syncstream) == syncstream ]] || fail "/var/lib/syncstream is not syncstream's"
for u in syncstream-receiver syncstream-transmitter; do
    systemd-analyze verify "/usr/lib/systemd/system/$u.service" 2>&1 | tee "/tmp/$u.verify" >&2 ||
        fail "systemd-analyze verify $u"
    ! grep -q "$u" "/tmp/$u.verify" || fail "systemd-analyze verify $u: warnings above"
done
echo "installed: --version, user syncstream (audio), /var/lib/syncstream, units verified"

log "starting the installed binary with the shipped configuration"
home=$(mktemp -d)
chmod 755 "$home"
printf 'pcm.!default { type null }\n' > "$home/.asoundrc"
run() { python3 "$ROOT/scripts/pi/notify-wait.py" 30 "$home/$1.log" \
    setpriv --reuid=syncstream --regid=syncstream --init-groups -- env HOME="$home" /usr/bin/syncstream service "$1" --config "/etc/syncstream/$1.toml"; }
# The transmitter (shipped source: ALSA's default capture), then the receiver (no
# transmitter in the shipped file: it looks for one over mDNS, ready at once).
setpriv --reuid=syncstream --regid=syncstream --init-groups -- env HOME="$home" /usr/bin/syncstream service transmitter \
    --config /etc/syncstream/transmitter.toml > "$home/tx-bg.log" 2>&1 &
txpid=$!
trap 'kill $txpid 2>/dev/null || true' EXIT
for ((i = 0; i < 200; i++)); do
    grep -q "transmitter running" "$home/tx-bg.log" && break
    kill -0 $txpid 2>/dev/null || { cat "$home/tx-bg.log" >&2; fail "the transmitter did not start"; }
    sleep 0.1
done
grep -q "transmitter running" "$home/tx-bg.log" || fail "the transmitter did not start in 20 s"
run receiver
grep -qE "receiver running|looking for a transmitter over mDNS" "$home/receiver.log" ||
    fail "neither 'receiver running' nor the mDNS search in the receiver's log"
kill $txpid
wait $txpid || true
trap - EXIT
run transmitter
grep -q "transmitter running" "$home/transmitter.log" || fail "no 'transmitter running' in its log"
echo "started with the shipped configuration: READY=1, WATCHDOG=1, clean stop on SIGTERM"

log "dpkg -r keeps the configuration"
dpkg -r syncstream >&2
test ! -e /usr/bin/syncstream || fail "/usr/bin/syncstream left after dpkg -r"
test ! -e /usr/lib/systemd/system/syncstream-receiver.service || fail "unit left after dpkg -r"
test -f /etc/syncstream/receiver.toml || fail "dpkg -r removed /etc/syncstream/receiver.toml"
dpkg-query -W -f='${Status}\n' syncstream | grep -qx "deinstall ok config-files" ||
    fail "status after dpkg -r: $(dpkg-query -W -f='${Status}' syncstream)"
dpkg --purge syncstream >&2
test ! -e /etc/syncstream/receiver.toml || fail "dpkg --purge left /etc/syncstream/receiver.toml"
test ! -e /var/lib/syncstream || fail "dpkg --purge left /var/lib/syncstream"
rm -rf "$home"
echo "removed: dpkg -r kept /etc/syncstream, dpkg --purge removed it and /var/lib/syncstream"
echo "packages: 4 passed, 0 failed"
