#!/usr/bin/env bash
# Install slurm-wlm (slurmctld + slurmd + munge, Debian packages) for the SLURM launch tests. Idempotent: a no-op when
# slurmctld is already present; exits 0 with a message where apt-get is unavailable (the tests then skip with a reason).
set -uo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if have slurmctld && have slurmd && have sbatch && have munged; then
  echo "[install_slurm] slurm-wlm already installed"; exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[install_slurm] apt-get not available: SLURM tests will be skipped"; exit 0
fi
SUDO=""; if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else echo "[install_slurm] not root and no sudo: skipping"; exit 0; fi
fi
export DEBIAN_FRONTEND=noninteractive
# slurm-wlm = slurmctld + slurmd + slurm-client (+ munge, basic plugins); its recommends (extra plugins) are not needed.
if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends slurm-wlm >/dev/null; then
  echo "[install_slurm] installed slurm-wlm"
else
  echo "[install_slurm] apt-get install slurm-wlm failed: SLURM tests will be skipped"
fi
exit 0
