#!/usr/bin/env bash
# Generic SLURM launcher for liquid-train. From the repo root:
#   mkdir -p logs && CONFIG=<run.yaml> sbatch --nodes=N launch/pretrain.sh [key=value ...]
# (`--output=logs/%x-%j.out` is opened by slurmstepd relative to the submit dir BEFORE this script runs: a missing
# logs/ fails the job at launch with JobLaunchFailure and no log, so it must exist at submit time.)
#
# One srun task per node runs torchrun (GPUS_PER_NODE processes, default 8) with a c10d rendezvous on the first node
# of the allocation (MASTER_ADDR/MASTER_PORT, overridable). Every #SBATCH line can be overridden on the sbatch command
# line, e.g. a CPU-only node: `sbatch --gpus-per-node=0 --cpus-per-task=2 ...` with GPUS_PER_NODE=1.
#
# Preemption / time limit -> checkpoint -> requeue -> auto-resume:
# - `--signal=B:USR1@300`: SLURM sends SIGUSR1 to this batch shell only, 5 min before the time limit (tests send it
#   with `scancel --signal=USR1 --batch <job>`).
# - The trap below forwards it to the srun client (`kill -USR1 <srun>`); srun forwards it to its job step, and
#   slurmstepd signals EVERY process of the step on every node (the whole step container, not just the task), so
#   each trainer rank gets SIGUSR1 directly; the trainer agrees on it across ranks, checkpoints at the next step
#   boundary and exits 0.
# - torchrun itself must not act on SIGUSR1: its default action would kill the agent (srun then reports the task
#   "User defined signal 1" and ends the step, killing ranks mid-checkpoint), and adding SIGUSR1 to
#   TORCHELASTIC_SIGNALS_TO_HANDLE makes it SIGKILL the ranks 30 s later, too short for a large checkpoint. So the
#   srun task runs torchrun with SIGUSR1 ignored (`trap "" USR1; exec ...`); the ranks inherit "ignored" and the
#   trainer installs its own handler for the training loop (a signal that arrives before the loop starts is
#   dropped, not fatal). torchrun then sees its ranks succeed and exits 0.
# - After srun returns, the trap calls `scontrol requeue` (needs `--requeue`, and JobRequeue on the cluster);
#   slurm ends this run and requeues the job with the same id, SLURM_RESTART_COUNT incremented; `--open-mode=append`
#   keeps both runs in one log. On restart the trainer resumes from the run dir's `checkpoints/latest`.
# Tested for real by tests/test_slurm_launch.py (slurmctld + slurmd on localhost, a tiny CPU run through
# launch/pretrain_0.5b.sh: signal, checkpoint, requeue, resume, COMPLETED).
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
cd "$repo" || { echo "[pretrain] cannot cd to repo $repo (set LIQUID_REPO)" >&2; exit 1; }
: "${CONFIG:?set CONFIG=<run config yaml>}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
PYTHON="${PYTHON:-${LIQUID_VENV:-$repo/.venv}/bin/python}"
export MASTER_ADDR="${MASTER_ADDR:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n1 || echo localhost)}"
export MASTER_PORT="${MASTER_PORT:-$(( 20000 + ${SLURM_JOB_ID:-0} % 20000 ))}"
# NCCL: InfiniBand + NVLink on H100 nodes; async error handling so a dead rank fails the job instead of hanging.
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}" NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-1}"
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1 CUDA_DEVICE_MAX_CONNECTIONS=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
echo "[pretrain] job ${SLURM_JOB_ID:-none} restart ${SLURM_RESTART_COUNT:-0} nodes ${SLURM_JOB_NUM_NODES:-1} master $MASTER_ADDR:$MASTER_PORT config $CONFIG"

child=""
requeue() {
  trap '' USR1  # a second signal while we wait must not re-enter
  echo "[pretrain] SIGUSR1: asking the trainer to checkpoint, then requeueing"
  local rc=0
  if [ -n "$child" ]; then
    kill -USR1 "$child" 2>/dev/null
    wait "$child"; rc=$?
  fi
  echo "[pretrain] trainer exited with $rc after the signal; requeueing job ${SLURM_JOB_ID:-none}"
  # slurm ends this run as soon as the requeue is accepted: nothing after this line is guaranteed to run.
  scontrol requeue "${SLURM_JOB_ID}" || { echo "[pretrain] scontrol requeue failed" >&2; exit 1; }
  exit 0
}
trap requeue USR1

# The step gets the job's CPUs on each node explicitly: srun 22.05 no longer inherits SLURM_CPUS_PER_TASK, and
# without -c a task/affinity or task/cgroup cluster would pin torchrun and all its ranks to one CPU.
srun --kill-on-bad-exit=1 --ntasks-per-node=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}" \
  bash -c 'trap "" USR1; exec "$@"' torchrun-usr1-ignored \
  "$PYTHON" -m torch.distributed.run --nnodes="${SLURM_JOB_NUM_NODES:-1}" --nproc-per-node="$GPUS_PER_NODE" \
    --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="${SLURM_JOB_ID:-0}" \
    -m liquid_train.cli --config "$CONFIG" "$@" &
child=$!
wait "$child"
rc=$?
echo "[pretrain] trainer exited with $rc"
exit $rc
