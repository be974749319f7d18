r"""Runs an ablation grid, resumably; several copies of this command may share one workdir (on one machine or a
shared filesystem) and never run the same cell.

    python scripts/run_ablations.py --grid=ablations/components.py:preset=tiny,seeds=3 \
        --workdir=workdirs/ablations/synthetic_components [--dry_run] [--only='coronal/*'] [--in_process] \
        [--retry_failed] [--config.total_steps=20 ...]

--dry_run lists the cells with their status and config. Finished cells (done or failed) are skipped; an
interrupted cell resumes from its last checkpoint; a failed cell is recorded with its error (--retry_failed runs
it again). Each cell runs in a subprocess (isolation; programs shared through the persistent compilation cache)
unless --in_process. --config.FIELD=VALUE overrides a config field of every cell and is part of the grid: rerun
with the same overrides, or use another workdir. SIGTERM or Ctrl-C: the running cell saves a checkpoint, the
worker stops. Exit status: 0 every selected cell done, 1 some failed, 3 stopped by a signal, 4 cells left that
another worker is running (or whose worker died on another machine), listed by name. Tables:
scripts/make_tables.py --workdir=DIR.
"""
import argparse
import sys

from asemble_jax.grids import claims, runner
from asemble_jax.grids.grid import load_grid
from asemble_jax.config import config_flags, typed_overrides
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, help="ablations/<file>.py[:ARG]")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--dry_run", action="store_true", help="list the cells and their status, run nothing")
    parser.add_argument("--only", help="run only the cells whose name matches this shell pattern, e.g. 'coronal/*'")
    parser.add_argument("--in_process", action="store_true", help="run cells in this process, not as subprocesses")
    parser.add_argument("--retry_failed", action="store_true", help="run cells recorded as failed again")
    parser.add_argument("--stale_after", type=float, default=claims.DEFAULT_STALE_AFTER_S,
                        help="seconds without a heartbeat after which another worker may take a cell over")
    parser.add_argument("--heartbeat", type=float, default=claims.DEFAULT_HEARTBEAT_S,
                        help="seconds between a running cell's heartbeats")
    rest, texts = config_flags(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    grid = load_grid(args.grid)
    overrides = typed_overrides(grid.cells[0].build_config(), texts)
    grid = grid.with_overrides(overrides)
    if args.dry_run:
        print(runner.describe(grid, grid.select(args.only), args.workdir, stale_after=args.stale_after), flush=True)
        return 0
    summary = runner.run_grid(grid, args.workdir, only=args.only, in_process=args.in_process,
                              retry_failed=args.retry_failed, stale_after=args.stale_after, heartbeat=args.heartbeat,
                              command=runner.command_line(grid, args.workdir, overrides))
    if summary.interrupted:
        return 3
    if summary.failed:
        return 1
    return 4 if summary.not_done else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
