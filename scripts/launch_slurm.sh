#!/bin/bash
# Splits one study over a SLURM job array, one grid shard per array task,
# and merges the shards' workdirs into one report when all have finished.
#
#   SHARDS=8 WORKDIR=/shared/runs/paper scripts/launch_slurm.sh \
#       [--config.FIELD=VALUE ...]
#
# Array task I (1..SHARDS) runs
#   python -m robustmq_jax.main --config=$CONFIG --workdir=$WORKDIR/shard_I \
#       --config.grid_shard=I/SHARDS
# a deterministic, cost-balanced share of the grid (robustmq_jax/grid_shard.py;
# every task lists the same grid, so the shares are disjoint and cover it).
# A second job, started after every task succeeded (afterok), runs
#   python scripts/make_report.py --workdir=$WORKDIR/shard_1 ... \
#       --out=$WORKDIR/merged
# A failed or preempted task is resubmitted with the same command: it skips
# the cells its workdir already holds.
#
# Environment: WORKDIR (required; a shared folder or gs://); SHARDS (4);
# CONFIG (configs/robustmq.py); NODES per task (1; above 1 the task runs one
# process per node with srun and --multihost, jax.distributed finding its
# peers from SLURM's environment); SBATCH_ARGS (e.g. "--partition=gpu
# --gres=gpu:1 --time=24:00:00 --cpus-per-task=8"); PYTHON (python);
# DRY_RUN=1 prints the sbatch commands instead of submitting.
set -euo pipefail
: "${WORKDIR:?set WORKDIR to a folder every node sees}"
SHARDS=${SHARDS:-4}
CONFIG=${CONFIG:-configs/robustmq.py}
NODES=${NODES:-1}
PYTHON=${PYTHON:-python}
read -r -a sbatch_args <<< "${SBATCH_ARGS:---gres=gpu:1 --cpus-per-task=8}"

extra=""
for arg in "$@"; do extra+=" $(printf '%q' "$arg")"; done
q_workdir=$(printf '%q' "$WORKDIR")
job="$PYTHON -m robustmq_jax.main --config=$(printf '%q' "$CONFIG")"
job+=" --workdir=$q_workdir/shard_\$SLURM_ARRAY_TASK_ID"
job+=" --config.grid_shard=\$SLURM_ARRAY_TASK_ID/$SHARDS$extra"
if (( NODES > 1 )); then
  job="srun --ntasks-per-node=1 $job --multihost"
fi
merge="$PYTHON scripts/make_report.py"
for ((i = 1; i <= SHARDS; i++)); do
  merge+=" --workdir=$q_workdir/shard_$i"
done
merge+=" --out=$q_workdir/merged"

array=(sbatch --parsable --job-name=robustmq --array="1-$SHARDS"
       --nodes="$NODES" "${sbatch_args[@]}"
       --output="robustmq_shard_%a_%A.out" --wrap="$job")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${array[@]}"; echo
  printf '%q ' sbatch --dependency=afterok:ARRAY_JOB_ID \
    --job-name=robustmq_merge --output=robustmq_merge_%j.out --wrap="$merge"
  echo
  exit 0
fi
array_id=$("${array[@]}")
merge_id=$(sbatch --parsable --dependency="afterok:$array_id" \
  --job-name=robustmq_merge --output="robustmq_merge_%j.out" --wrap="$merge")
echo "submitted array job $array_id ($SHARDS shards) and merge job $merge_id;"
echo "the merged report will be in $WORKDIR/merged/report.md"
