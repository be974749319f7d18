"""Builds one of the project's TFDS datasets as array_record (no TensorFlow needed).

    python scripts/build_dataset.py --dataset=synthetic_sij/coronal --data_dir=data/tfds
    python scripts/build_dataset.py --dataset=bone_mri --manual_dir=../shared/data/bone_mri
    python scripts/build_dataset.py --dataset=elazig/axial --manual_dir=/path/to/elazig --strict

Without --strict an unreadable input file is skipped, logged and listed in the dataset's metadata; with it the
build stops at the first one.

A dataset already built in data_dir is reused, unless --force, or unless it was built from a manual_dir whose
files (names, sizes, modification times) have changed since: then it is rebuilt, and the old build stays readable
until the new one is complete.
"""
import argparse
import sys
import time

from asemble_jax.data.builders import DEFAULT_DATA_DIR, build
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="NAME/CONFIG, e.g. synthetic_sij/coronal")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--manual_dir", help="folder the user filled by hand (elazig, asas, radiopaedia, bone_mri)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable input file")
    parser.add_argument("--force", action="store_true", help="rebuild even if already built in data_dir")
    args = parser.parse_args(argv)
    kwargs = {"strict": True} if args.strict else {}
    start = time.perf_counter()
    builder = build(args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir, force=args.force, **kwargs)
    splits = ", ".join(f"{name}={info.num_examples}" for name, info in sorted(builder.info.splits.items()))
    print(f"{builder.info.full_name} in {builder.data_dir} ({time.perf_counter() - start:.1f} s): {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
