#!/usr/bin/env bash
# Installs the system packages SyncStream needs to build and test (Debian/Ubuntu/Raspberry Pi OS).
# Idempotent: does nothing when everything is there.
set -euo pipefail
packages=(build-essential pkg-config cmake libasound2-dev libopus-dev mosquitto mosquitto-clients
          chromium chromium-driver
          pulseaudio pulseaudio-utils libasound2-plugins alsa-utils valgrind python3 python3-venv ffmpeg
          snapserver snapclient espeak-ng
          openssl ca-certificates curl)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from rustup.rs" >&2; exit 1; }
