"""Writes results/models/table.md: every ASembleNet preset and ablation variant, and the baselines, with parameter
counts, forward FLOPs at 256x256 and the modules each one contains (asemble_jax/models/table.py says how).

    python scripts/model_table.py [--out results/models/table.md] [--size 256]
"""
import argparse
import pathlib
import sys

from asemble_jax import atomic_io
from asemble_jax.errors import run_main
from asemble_jax.models.table import model_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/models/table.md"))
    parser.add_argument("--size", type=int, default=256, help="input size for the FLOPs column")
    args = parser.parse_args(argv)
    atomic_io.write_text(args.out, model_table(args.size))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
