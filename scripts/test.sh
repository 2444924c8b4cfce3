#!/usr/bin/env bash
# The test command: installs the system packages (scripts/setup.sh), runs every test of
# the workspace, and runs the receiver's tests once more in a release build (the checks
# of extreme input must hold with overflow checks, in debug, and without, in release).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --no-fail-fast
cargo test --release -p syncstream-receiver
