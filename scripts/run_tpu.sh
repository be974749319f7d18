#!/usr/bin/env bash
# Runs the same training on every worker of a Cloud TPU VM slice, workdir (checkpoints, metrics) on a bucket,
# data staged from the bucket to each worker's disk. Not run on a real TPU by the project yet: README, "Cloud TPU".
#
#   scripts/run_tpu.sh [--dry_run] setup TPU_NAME ZONE        # clone or update, install with JAX for TPU
#   scripts/run_tpu.sh [--dry_run] train TPU_NAME ZONE gs://BUCKET/workdirs/RUN gs://BUCKET/tfds \
#       'ablations/base.py:model=asemblenet,preset=paper,dataset=synthetic_sij/coronal' \
#       [--config.model.dtype=bfloat16 ...]
#
# --dry_run prints the gcloud commands, exactly, instead of running them. PROJECT=ID adds --project=ID (else
# gcloud's default project); REPO_URL is what setup clones (default: this checkout's origin).
# `train` first runs scripts/stage_dataset.py on every worker: the prepared datasets under gs://BUCKET/tfds are
# copied to data/tfds on the worker's disk once (verified; a complete copy is kept) and the run reads them from
# there (tfds.data_source cannot read array_record from GCS). Rerunning `train` with the same arguments resumes
# from the newest checkpoint in the bucket (a preempted slice gets SIGTERM, saves, exits cleanly). Every worker
# runs the same command; jax.distributed.initialize() joins them (ASEMBLE_MULTIHOST=1), each feeds its own
# shard of the global batch, only worker 0 writes logs.
set -euo pipefail

usage() { sed -n '2,17p' "$0" >&2; exit 2; }
dry_run=0
if [ "${1:-}" = --dry_run ]; then dry_run=1; shift; fi
[ $# -ge 3 ] || usage
action=$1 name=$2 zone=$3
shift 3
if [ $dry_run = 0 ] && ! command -v gcloud >/dev/null; then
  echo "error: gcloud not found: install the Google Cloud CLI (or use --dry_run to see the commands)" >&2
  exit 2
fi

# The words as a shell reads them back: single quotes around any with a character the shell would act on. The
# remote shell reads --command once more, and --dry_run prints commands to paste (bash 3.2, macOS's, included).
quoted() {
  local arg words=()
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then words+=("$arg"); else words+=("'${arg//\'/\'\\\'\'}'"); fi
  done
  echo "${words[*]}"
}

on_all_workers() {
  local command=(gcloud compute tpus tpu-vm ssh "$name" "--zone=$zone")
  [ -z "${PROJECT:-}" ] || command+=("--project=$PROJECT")
  command+=(--worker=all "--command=$1")
  if [ $dry_run = 1 ]; then quoted "${command[@]}"; else "${command[@]}"; fi
}

case "$action" in
  setup)
    [ $# -eq 0 ] || usage
    repo=${REPO_URL:-$(git config --get remote.origin.url || true)}
    [ -n "$repo" ] || { echo "error: set REPO_URL to the repository to clone" >&2; exit 2; }
    # TPU VM images come with Python 3.10; the project and the newest JAX need 3.11 or later, which uv installs.
    on_all_workers "set -e; if [ -d asemble_jax ]; then git -C asemble_jax pull --ff-only; \
else git clone $(quoted "$repo") asemble_jax; fi; cd asemble_jax; python3 -m pip install -q --user uv; \
~/.local/bin/uv venv -q --allow-existing --python 3.12 .venv; \
~/.local/bin/uv pip install -q --python .venv/bin/python -e '.[gcs,tensorboard]' -U 'jax[tpu]'"
    ;;
  train)
    [ $# -ge 3 ] || usage
    workdir=$1 source=$2 config=$3
    shift 3
    on_all_workers "set -e; cd asemble_jax; \
.venv/bin/python scripts/stage_dataset.py $(quoted "--source=$source") --data_dir=data/tfds; \
ASEMBLE_MULTIHOST=1 .venv/bin/python scripts/train.py $(quoted "--config=$config" "--workdir=$workdir" \
--config.data.data_dir=data/tfds "$@")"
    ;;
  *) usage ;;
esac
