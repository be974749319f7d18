#!/usr/bin/env bash
# The accelerator checks of the training issue, as one command for a short GPU/TPU lease:
#   1. training throughput and model FLOPs utilisation of ASembleNet-paper, bfloat16 and float32
#      (scripts/benchmark_training.py);
#   2. a few hundred real training steps of ASembleNet-paper in bfloat16 on the coronal phantom, then its test-set
#      evaluation (scripts/train.py, scripts/evaluate.py).
#
#   bash scripts/device_check.sh --prepare   # here, with PyPI reachable: wheels the GPU host lacks, into .whl/
#   bash scripts/device_check.sh OUT_DIR     # on the accelerator host (the device tool: carry .whl)
#
# The lent GPU machines have Python 3.12 with JAX, Flax, Optax and Orbax but not TFDS, grain, ml_collections or
# the DICOM/NIfTI readers: --prepare downloads those (~21 MB of Python 3.12 wheels, no dependencies resolved, so
# the host's own JAX stays) and the check installs them into a temporary folder, never into the host's packages.
# Settings through the environment: PRESET (paper), BATCH (128), STEPS (300 training steps), BENCH_STEPS (50),
# WHEELS (.whl). Tested on this CPU with PRESET=tiny BATCH=16 STEPS=20 BENCH_STEPS=1 WHEELS=none; not yet run on
# a GPU.
set -euo pipefail
if [ "${1:-}" = "--prepare" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any -d .whl \
      array-record googleapis-common-protos grain immutabledict importlib_resources ml-collections nibabel \
      portpicker pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg tensorflow-datasets tensorflow-metadata toml
  python3 -m pip wheel -q --no-deps -w .whl promise  # published as a source archive only
  exit
fi
out=${1:?usage: bash scripts/device_check.sh --prepare | OUT_DIR}
preset=${PRESET:-paper} batch=${BATCH:-128} steps=${STEPS:-300} bench_steps=${BENCH_STEPS:-50}
mkdir -p "$out"
work=$(mktemp -d /tmp/device_check.XXXXXX)
wheels=${WHEELS:-.whl}
if [ -d "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$wheels"/*.whl
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The package from this checkout, and datasets/ under the name it is installed as (pyproject.toml).
mkdir -p "$work/project" && ln -s "$PWD/datasets" "$work/project/asemble_datasets"
export PYTHONPATH="$PWD:$work/project${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

python3 -c "import jax; print(jax.__version__, jax.devices())" | tee "$out/devices.txt"
for dtype in bfloat16 float32; do
  python3 scripts/benchmark_training.py --presets "$preset" --dtype "$dtype" --batch "$batch" \
      --steps "$bench_steps" --out "$out/benchmark_$dtype.md"
done

python3 scripts/build_dataset.py --dataset=synthetic_sij/coronal --data_dir="$work/tfds"
start=$(date +%s)
python3 scripts/train.py --config="ablations/base.py:preset=$preset" --workdir="$work/run" \
    --config.model.dtype=bfloat16 --config.global_batch_size="$batch" --config.total_steps="$steps" \
    --config.data.data_dir="$work/tfds" --config.compilation_cache_dir="$work/jax_cache" \
    --config.eval_every=100 --config.checkpoint_every=100
echo "training wall time: $(( $(date +%s) - start )) s for $steps steps" | tee "$out/train_wall.txt"
cp "$work/run/metrics.jsonl" "$out/train_metrics.jsonl"
python3 scripts/evaluate.py --workdir="$work/run" --split=test --out="$work/eval" --n_resamples=500
cp "$work/eval/"*.md "$out/"
