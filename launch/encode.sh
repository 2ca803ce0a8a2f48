#!/usr/bin/env bash
# SLURM launcher for the VQ encode (python -m data_pipeline encode) over N nodes x G GPUs, one encode rank per GPU.
# From the repo root (logs/ must exist: slurmstepd opens --output before this script runs):
#   mkdir -p logs && sbatch --nodes=4 launch/encode.sh /data/laion/*.tar -o /shared/vq/laion [encode flags]
#   # and build the indexed dataset once every rank is done:
#   mkdir -p logs && TOKENIZER=/models/Qwen2.5-7B BUILD_PREFIX=/shared/idx/laion_pairs sbatch launch/encode.sh ...
#
# - One srun step with --ntasks-per-node tasks per node (= GPUs per node, 8 by default): task k is encode rank
#   SLURM_PROCID of SLURM_NTASKS and uses cuda:SLURM_LOCALID. Unit i of the sorted inputs belongs to rank
#   i % world (data_pipeline/distributed.py); the ranks need no communication, only one shared output directory.
#   A job array (--array=0-K) multiplies the world by the array size.
# - Threads: each task owns --cpus-per-task CPUs; encode's default --threads is that // (workers + 1).
# - Resume: every finished shard survives; a rerun (or the requeued job) skips it and redoes the rest, and the
#   recorded settings (encode_settings.json) make a rerun with other flags stop before it writes anything.
# - Time limit / preemption: --signal=B:USR1@120 reaches this batch shell two minutes before the limit; the trap
#   requeues the job (needs --requeue and JobRequeue on the cluster). Shards in progress are redone on restart;
#   --open-mode=append keeps every run in one log.
# - After all ranks succeed, if TOKENIZER and BUILD_PREFIX are set, `build pairs` runs once over the merged output
#   (it refuses an unfinished encode).
# Every #SBATCH line can be overridden on the sbatch command line, e.g. CPU nodes:
#   sbatch --gpus-per-node=0 --ntasks-per-node=2 --cpus-per-task=8 launch/encode.sh ... --device cpu
# Tested for real by tests/test_slurm_launch.py (slurmctld + slurmd on localhost: 2 ranks, resume, USR1 requeue,
# build).
#SBATCH --job-name=liquid-encode
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out
set -uo pipefail
repo="${LIQUID_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
cd "$repo" || { echo "[encode] cannot cd to repo $repo (set LIQUID_REPO)" >&2; exit 2; }
PYTHON="${PYTHON:-${LIQUID_VENV:-$repo/.venv}/bin/python}"

out=""; prev=""; force=0
for arg in "$@"; do
  case "$prev" in -o|--output-dir) out="$arg" ;; esac
  case "$arg" in --output-dir=*) out="${arg#*=}" ;; --force) force=1 ;; esac
  prev="$arg"
done
[ -n "$out" ] || { echo "[encode] pass the output directory with -o (shared by every rank)" >&2; exit 2; }
if [ -n "${BUILD_PREFIX:-}" ]; then
  [ -n "${TOKENIZER:-}" ] || { echo "[encode] BUILD_PREFIX needs TOKENIZER=<base model's HF directory>" >&2; exit 2; }
  [ "$force" = 0 ] || { echo "[encode] --force may write a new directory: build it with the path encode reports" >&2; exit 2; }
fi
echo "[encode] job ${SLURM_JOB_ID:-none} restart ${SLURM_RESTART_COUNT:-0} nodes ${SLURM_JOB_NUM_NODES:-1}" \
  "tasks ${SLURM_NTASKS:-1} cpus/task ${SLURM_CPUS_PER_TASK:-?} output $out"

requeue() {
  trap '' USR1
  echo "[encode] SIGUSR1 before the time limit: requeueing job ${SLURM_JOB_ID:-none}; finished shards are kept"
  scontrol requeue "${SLURM_JOB_ID}" || { echo "[encode] scontrol requeue failed" >&2; exit 1; }
  exit 0
}
trap requeue USR1

# -c explicitly: srun >= 22.05 no longer inherits the job's --cpus-per-task. The step's tasks get SLURM_PROCID,
# SLURM_NTASKS and SLURM_LOCALID, from which encode derives its rank and GPU. --label prefixes each output line
# with the task (rank) number.
srun --kill-on-bad-exit=1 --label --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
  "$PYTHON" -m data_pipeline encode "$@" &
child=$!
wait "$child"
rc=$?
echo "[encode] ranks exited with $rc"
[ "$rc" = 0 ] || exit "$rc"
if [ -n "${BUILD_PREFIX:-}" ]; then
  "$PYTHON" -m data_pipeline build pairs "$out" -t "$TOKENIZER" -o "$BUILD_PREFIX" --no-progress
  rc=$?
  echo "[encode] build pairs $out -> $BUILD_PREFIX exited with $rc"
fi
exit $rc
