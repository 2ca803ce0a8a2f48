#!/usr/bin/env bash
# Generic SLURM launcher for liquid-train: `CONFIG=<run.yaml> sbatch --nodes=N launch/pretrain.sh [key=value ...]`.
# One srun task per node runs torchrun (8 GPUs) with a c10d rendezvous on the first node of the allocation.
# `--signal=B:USR1@300`: SLURM signals this batch shell 5 min before the time limit; we forward SIGUSR1 to the
# trainer (which checkpoints at the next step boundary and exits), then `scontrol requeue` the job; on restart the
# trainer auto-resumes from the run dir's `latest` checkpoint.
#SBATCH --job-name=liquid
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out
set -uo pipefail
repo="${LIQUID_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
cd "$repo"
mkdir -p logs
: "${CONFIG:?set CONFIG=<run config yaml>}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
PYTHON="${PYTHON:-${LIQUID_VENV:-$repo/.venv}/bin/python}"
export MASTER_ADDR="${MASTER_ADDR:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n1 || echo localhost)}"
export MASTER_PORT="${MASTER_PORT:-$(( 20000 + ${SLURM_JOB_ID:-0} % 20000 ))}"
# NCCL: InfiniBand + NVLink on H100 nodes; async error handling so a dead rank fails the job instead of hanging.
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}" NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-1}"
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1 CUDA_DEVICE_MAX_CONNECTIONS=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
echo "[pretrain] job ${SLURM_JOB_ID:-none} restart ${SLURM_RESTART_COUNT:-0} nodes ${SLURM_JOB_NUM_NODES:-1} master $MASTER_ADDR:$MASTER_PORT config $CONFIG"

requeue() {
  echo "[pretrain] SIGUSR1: asking the trainer to checkpoint, then requeueing"
  [ -n "${child:-}" ] && kill -USR1 "$child" 2>/dev/null
  wait "$child"
  scontrol requeue "${SLURM_JOB_ID}" && echo "[pretrain] requeued ${SLURM_JOB_ID}"
  exit 0
}
trap requeue USR1

srun --kill-on-bad-exit=1 --ntasks-per-node=1 \
  "$PYTHON" -m torch.distributed.run --nnodes="${SLURM_JOB_NUM_NODES:-1}" --nproc-per-node="$GPUS_PER_NODE" \
    --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="${SLURM_JOB_ID:-0}" \
    -m liquid_train.cli --config "$CONFIG" "$@" &
child=$!
wait "$child"
rc=$?
echo "[pretrain] trainer exited with $rc"
exit $rc
