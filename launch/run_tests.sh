#!/usr/bin/env bash
# The README's test command: make sure the venv exists, then run the CPU test suite.
# Extra arguments go to pytest (e.g. `bash launch/run_tests.sh tests/test_vocab.py -x`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/launch/setup_env.sh"
cd "$repo"
exec "${LIQUID_VENV:-$repo/.venv}/bin/python" -m pytest "$@"
