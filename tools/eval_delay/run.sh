#!/usr/bin/env bash
# Regenerates the evaluation table in docs/delay-estimation.md:
#   tools/eval_delay/run.sh [--cases N] [--seed S] [--no-doc]
# Makes a Python venv under target/ (numpy, scipy from PyPI), builds the Rust side
# (the eval_delay example of syncstream-dsp, release) and runs the harness.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
venv="$root/target/eval-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import numpy, scipy" 2>/dev/null || "$venv/bin/pip" install -q numpy scipy
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p syncstream-dsp --example eval_delay
exec "$venv/bin/python" tools/eval_delay/eval_delay.py --binary "$target/release/examples/eval_delay" "$@"
