#!/usr/bin/env bash
# Runs the same training on every worker of a Cloud TPU VM slice, with the workdir (checkpoints, metrics) on a
# bucket. Not run for real by the project yet: see README, "Cloud TPU and GPU".
#
#   scripts/run_tpu.sh setup TPU_NAME ZONE                    # once: clone, install with JAX for TPU, on all workers
#   scripts/run_tpu.sh train TPU_NAME ZONE gs://BUCKET/workdirs/RUN \
#       'ablations/base.py:model=asemblenet,preset=paper,dataset=synthetic_sij/coronal' \
#       --config.data.data_dir=gs://BUCKET/tfds --config.model.dtype=bfloat16
#
# Rerunning `train` with the same arguments resumes from the newest checkpoint in the bucket (a preempted slice
# gets SIGTERM, saves, and exits cleanly). Every worker runs the same command; jax.distributed.initialize() joins
# them (ASEMBLE_MULTIHOST=1), each feeds its own shard of the global batch, only worker 0 writes logs.
set -euo pipefail

usage() { sed -n '2,12p' "$0"; exit 2; }
[ $# -ge 3 ] || usage
action=$1 name=$2 zone=$3
shift 3
REPO_URL=${REPO_URL:-$(git config --get remote.origin.url || true)}

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$action" in
  setup)
    [ -n "$REPO_URL" ] || { echo "set REPO_URL to the repository to clone" >&2; exit 2; }
    on_all_workers "set -e; [ -d asemble_jax ] || git clone '$REPO_URL' asemble_jax; cd asemble_jax;
      python3 -m venv .venv; .venv/bin/pip install -q -e . ; .venv/bin/pip install -q -U 'jax[tpu]'"
    ;;
  train)
    [ $# -ge 2 ] || usage
    workdir=$1 config=$2
    shift 2
    on_all_workers "cd asemble_jax && ASEMBLE_MULTIHOST=1 .venv/bin/python scripts/train.py \
      --config='$config' --workdir='$workdir' $*"
    ;;
  *) usage ;;
esac
