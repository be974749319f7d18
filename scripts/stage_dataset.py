"""Copies prepared TFDS datasets from a bucket to this host's disk, verified; a complete copy is kept as it is.

    python scripts/stage_dataset.py --source=gs://BUCKET/tfds --data_dir=data/tfds [--datasets NAME/CONFIG ...]

Without --datasets every prepared dataset under --source is staged. Train from the copy with
--config.data.data_dir=DATA_DIR (tfds.data_source cannot read array_record from GCS). scripts/run_tpu.sh runs
this on every worker before training. What is checked: asemble_jax/data/staging.py.
"""
import argparse
import sys

from asemble_jax.data.builders import DEFAULT_DATA_DIR
from asemble_jax.data.staging import stage
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="TFDS data_dir holding the prepared datasets (gs://...)")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="local folder to copy them into")
    parser.add_argument("--datasets", nargs="*", default=[], help="NAME/CONFIG to stage (default: all)")
    args = parser.parse_args(argv)
    for staged in stage(args.source, args.data_dir, args.datasets):
        state = "copied and verified" if staged.copied else "already here"
        print(f"{staged.name}: {state} in {args.data_dir} ({staged.num_bytes} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
