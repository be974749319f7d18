r"""The Ray engine against the local runner on the same grid, in one run: Ray's start-up time, wall time per cell
of each engine (one cell at a time, so the difference is the engine's overhead) and the memory of Ray's processes.

    python scripts/benchmark_ray_engine.py --grid=ablations/components.py:dataset=bone_mri,folds=3,variants=full,seeds=2,steps=8 \
        --only='*/fold0' --workdir=/tmp/ray_benchmark --config.data.data_dir=DIR

Each engine gets a fresh folder under --workdir (local/, ray/), which must not hold them yet.
"""
import argparse
import os
import sys

from asemble_jax.config import config_flags, typed_overrides
from asemble_jax.errors import UserError, run_main
from asemble_jax.grids.grid import load_grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, help="ablations/<file>.py[:ARG]")
    parser.add_argument("--workdir", required=True, help="a new folder: each engine runs the grid under it")
    parser.add_argument("--only", help="the cells to run, a shell pattern")
    rest, texts = config_flags(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    if os.path.exists(args.workdir):
        raise UserError(f"{args.workdir} exists: the benchmark needs a new folder (finished cells would be skipped)")
    grid = load_grid(args.grid)
    grid = grid.with_overrides(typed_overrides(grid.cells[0].build_config(), texts))
    from asemble_jax.grids import ray_benchmark  # imports ray

    ray_benchmark.compare(grid, args.workdir, only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
