#!/bin/bash
# Runs the main job on every host of a TPU pod slice, one process per host.
#
#   TPU=my-v5e-32 ZONE=us-west4-a WORKDIR=gs://my-bucket/runs/paper \
#       scripts/launch_tpu_pod.sh [--config.FIELD=VALUE ...]
#
# Every worker runs
#   python -m robustmq_jax.main --multihost --config=$CONFIG --workdir=$WORKDIR
# through `gcloud compute tpus tpu-vm ssh --worker=all`; --multihost calls
# jax.distributed.initialize(), which finds its peers from the TPU metadata,
# so the slice is one job: one mesh over all its chips, each host reading
# its own share of every batch, process 0 writing. WORKDIR must be visible
# to every host: a gs:// bucket (needs gcsfs) or a shared mount.
#
# Several slices split one study: give each slice SHARD=I/N (I = 1..N, the
# same N and config everywhere) and its own WORKDIR, then merge:
#   python scripts/make_report.py --workdir=gs://b/s1 --workdir=gs://b/s2 \
#       --out=gs://b/merged
#
# Environment: TPU, ZONE (required); PROJECT; CONFIG (configs/robustmq.py);
# REPO (the checkout on the workers, ~/robustmq_jax); SHARD; INSTALL=1 to
# `pip install` the checkout on every worker first; DRY_RUN=1 prints the
# gcloud command instead of running it.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM (pod slice) name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
: "${WORKDIR:?set WORKDIR to a folder every host sees (gs://bucket/run)}"
CONFIG=${CONFIG:-configs/robustmq.py}
REPO=${REPO:-'~/robustmq_jax'}

extra=""
for arg in "$@"; do extra+=" $(printf '%q' "$arg")"; done
if [[ -n "${SHARD:-}" ]]; then
  extra+=" --config.grid_shard=$(printf '%q' "$SHARD")"
fi

remote="cd $REPO"
if [[ "${INSTALL:-0}" == 1 ]]; then
  remote+=" && pip install -q -e '.[imagenet]' gcsfs"
  remote+=" && pip install -q --no-deps -r requirements-nodeps.txt"
fi
remote+=" && python -m robustmq_jax.main --multihost"
remote+=" --config=$(printf '%q' "$CONFIG") --workdir=$(printf '%q' "$WORKDIR")"
remote+="$extra"

cmd=(gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all
     --command="$remote")
if [[ -n "${PROJECT:-}" ]]; then cmd+=(--project="$PROJECT"); fi
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  "${cmd[@]}"
fi
