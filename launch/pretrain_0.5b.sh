#!/usr/bin/env bash
# qwen2.5_0.5b on 1 node(s) of 8x H100 (layout: configs/models/qwen2.5_0.5b.yaml, checked by tools/plan.py).
# Qwen2.5-0.5B, the paper's smallest scaling size.
# Usage, from the repo root (logs/ must exist: slurm opens --output before the script runs):
#   mkdir -p logs && sbatch launch/pretrain_0.5b.sh model.init_from=CKPT data.tokenizer=TOK data.pairs_path=P data.text_path=T
# CONFIG defaults to configs/runs/qwen2.5_0.5b_mixed.yaml; set CONFIG=<run config> to launch another (e.g. one composed by tools/sweep.py).
# Signal -> checkpoint -> requeue -> resume: see launch/pretrain.sh (exec keeps this batch shell's pid for the USR1).
#SBATCH --job-name=liquid-0.5b
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
export CONFIG="${CONFIG:-$repo/configs/runs/qwen2.5_0.5b_mixed.yaml}"
exec bash "$repo/launch/pretrain.sh" "$@"
