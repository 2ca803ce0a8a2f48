#!/usr/bin/env bash
# The CPU quickstart: the whole system end to end on the embedded tiny default (see README).
# Installs into the project venv if needed, then runs liquid_train.quickstart with any extra arguments.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/launch/setup_env.sh"
export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$repo"
exec "${LIQUID_VENV:-$repo/.venv}/bin/python" -m liquid_train.quickstart "$@"
