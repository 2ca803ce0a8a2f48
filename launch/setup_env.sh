#!/usr/bin/env bash
# Create (or reuse) the project virtualenv at $LIQUID_VENV (default: <repo>/.venv) and install liquid-train.
# torch is installed first, on its own: anything that pulls torch into an empty venv gets a multi-GB CUDA build.
# On CPU machines this takes the CPU wheel of torch==2.13.0; set LIQUID_TORCH_SPEC to choose another build.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LIQUID_VENV:-$repo/.venv}"
torch_spec="${LIQUID_TORCH_SPEC:-torch==2.13.0}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup_env] creating virtualenv $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.liquid-installed"
want="$(cat "$repo/setup.py" "$repo/requirements/constraints-cpu.txt" "$repo/launch/setup_env.sh" | sha1sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup_env] $venv is up to date"
  exit 0
fi
"$venv/bin/python" -m pip install -q --upgrade pip
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup_env] installing $torch_spec"
  "$venv/bin/python" -m pip install -q "$torch_spec"
fi
# deepspeed (engine=deepspeed) is an sdist whose setup.py imports torch: installed after torch, without build
# isolation (an isolated build would pull a CUDA torch) and without prebuilt ops (DS_BUILD_OPS=0; none is needed on
# CPU, liquid_train/engines/deepspeed_cpu.py). Its version is pinned in requirements/constraints-cpu.txt.
ds_pin="$(grep -E '^deepspeed==' "$repo/requirements/constraints-cpu.txt")"
if ! "$venv/bin/python" -m pip show -q deepspeed >/dev/null 2>&1; then
  echo "[setup_env] installing $ds_pin (--no-build-isolation, DS_BUILD_OPS=0)"
  DS_BUILD_OPS=0 "$venv/bin/python" -m pip install -q --no-build-isolation -c "$repo/requirements/constraints-cpu.txt" "$ds_pin"
fi
echo "[setup_env] installing liquid-train[dev] (constraints: requirements/constraints-cpu.txt)"
"$venv/bin/python" -m pip install -q -c "$repo/requirements/constraints-cpu.txt" -e "$repo[dev]"
echo "$want" > "$stamp"
echo "[setup_env] done"
