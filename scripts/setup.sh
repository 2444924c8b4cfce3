#!/usr/bin/env bash
# Installs the system packages SyncStream needs to build and test (Debian/Ubuntu/Raspberry Pi OS).
# Idempotent: does nothing when everything is there.
set -euo pipefail
packages=(build-essential pkg-config cmake libasound2-dev libopus-dev mosquitto mosquitto-clients
          chromium chromium-driver
          pulseaudio pulseaudio-utils libasound2-plugins alsa-utils valgrind python3 python3-venv ffmpeg
          snapserver snapclient espeak-ng
          openssl ca-certificates curl
          iproute2)  # ip netns: tests/discovery.rs (mDNS between two network namespaces)
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

# Home Assistant core, for tests/homeassistant.rs: a Python 3.13 virtual environment
# (Debian 12 has 3.11; pyenv has 3.13). SYNCSTREAM_HA_VENV moves it.
ha_venv="${SYNCSTREAM_HA_VENV:-/opt/syncstream-ha}"
ha_version=2025.4.4
if ! "$ha_venv/bin/python" -c "import sys, homeassistant.const as c; import paho.mqtt, hass_frontend; sys.exit(c.__version__ != '$ha_version')" 2>/dev/null; then
  py=""
  # A pyenv shim named python3.13 exists even when 3.13 is not the selected version,
  # so each candidate must actually run; pyenv's own install directories come first.
  pyenv_root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  for c in "$pyenv_root"/versions/3.13*/bin/python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13 python3.13; do
    if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then py="$c"; break; fi
  done
  if [ -z "$py" ]; then
    echo "Home Assistant's test needs Python 3.13 (e.g. pyenv install 3.13)" >&2
    exit 1
  fi
  echo "installing Home Assistant $ha_version into $ha_venv (with $py)"
  rm -rf "$ha_venv"
  "$py" -m venv "$ha_venv"
  "$ha_venv/bin/pip" install -q --upgrade pip
  # The MQTT integration's and the frontend's requirements (the test runs Home Assistant
  # with --skip-pip, offline; without its frontend it starts in recovery mode).
  "$ha_venv/bin/pip" install -q "homeassistant==$ha_version" paho-mqtt==2.1.0 \
    home-assistant-frontend==20250411.0
fi
