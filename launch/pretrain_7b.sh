#!/usr/bin/env bash
# gemma_7b on 1 node(s) of 8x H100 (layout: configs/models/gemma_7b.yaml, checked by tools/plan.py).
# Usage, from the repo root (logs/ must exist: slurm opens --output before the script runs):
#   mkdir -p logs && CONFIG=<run config composed by tools/sweep.py> sbatch launch/pretrain_7b.sh [key=value ...]
# Signal -> checkpoint -> requeue -> resume: see launch/pretrain.sh (exec keeps this batch shell's pid for the USR1).
#SBATCH --job-name=liquid-7b
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out
repo="${LIQUID_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
exec bash "$repo/launch/pretrain.sh" "$@"
