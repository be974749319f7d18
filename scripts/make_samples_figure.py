"""Writes the grid of synthetic SIJ phantoms (healthy and AS, axial and coronal) with lesion masks outlined.

    python scripts/build_dataset.py --dataset=synthetic_sij/axial --data_dir=data/tfds
    python scripts/build_dataset.py --dataset=synthetic_sij/coronal --data_dir=data/tfds
    python scripts/make_samples_figure.py --data_dir=data/tfds --out=results/demo/samples.png
"""
import argparse
import sys

from asemble_jax.data.builders import DEFAULT_DATA_DIR
from asemble_jax.data.figures import write_samples_figure
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="TFDS data_dir holding the built datasets")
    parser.add_argument("--out", default="results/demo/samples.png")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per_class", type=int, default=4, help="patients shown per plane and class")
    args = parser.parse_args(argv)
    path = write_samples_figure(args.data_dir, args.out, split=args.split, per_class=args.per_class)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
