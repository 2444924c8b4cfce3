#!/usr/bin/env bash
# The demo: a transmitter, three receivers (analog, HDMI TV, Chromecast) and a virtual
# room in one process. Extra arguments go to `syncstream demo` (e.g. --audio FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
exec cargo run --release --quiet -- demo --duration 40 --report out/demo-report.json "$@"
