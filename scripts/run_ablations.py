r"""Runs an ablation grid, resumably; several copies of this command may share one workdir (on one machine or a
shared filesystem) and never run the same cell.

    python scripts/run_ablations.py --grid=ablations/components.py:preset=tiny,seeds=3 \
        --workdir=workdirs/ablations/synthetic_components [--dry_run] [--only='coronal/*'] [--in_process] \
        [--retry_failed] [--config.total_steps=20 ...] [--engine=ray [--address=auto|HOST:PORT]
        [--cell_resources=GPU=1] [--max_retries=3]]

--dry_run lists the cells with their status and config. Finished cells (done or failed) are skipped; an
interrupted cell resumes from its last checkpoint; a failed cell is recorded with its error (--retry_failed runs
it again). Each cell runs in a subprocess (isolation; programs shared through the persistent compilation cache)
unless --in_process. --config.FIELD=VALUE overrides a config field of every cell and is part of the grid: rerun
with the same overrides, or use another workdir. SIGTERM or Ctrl-C: the running cell saves a checkpoint, the
worker stops. Exit status: 0 every selected cell done, 1 some failed, 3 stopped by a signal, 4 cells left that
another worker is running (or whose worker died on another machine), listed by name. Tables:
scripts/make_tables.py --workdir=DIR.

--engine=ray runs the cells as Ray tasks, as many at once as the cluster's resources allow (asemble_jax/grids/
ray_engine.py; needs the `ray` extra): a local Ray without --address, a running cluster with one. Each cell takes
--cell_resources (Ray's names: CPU, GPU, TPU or a custom resource; default the grid's, else CPU=1); a cell whose
node died is retried up to --max_retries times and resumes from its checkpoint.
"""
import argparse
import sys

from asemble_jax.grids import claims, runner
from asemble_jax.grids.grid import load_grid, parse_resources
from asemble_jax.config import config_flags, typed_overrides
from asemble_jax.errors import UserError, run_main


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
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: one cell at a time in this process's loop; ray: cells as Ray tasks")
    parser.add_argument("--address", help="ray: a running cluster (auto, or HOST:PORT); default a local Ray")
    parser.add_argument("--cell_resources",
                        help="ray: what each cell takes, e.g. GPU=1, CPU=4 or TPU=4 (default the grid's, else CPU=1)")
    parser.add_argument("--max_retries", type=int, default=3, help="ray: retries of a cell whose node died")
    rest, texts = config_flags(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    grid = load_grid(args.grid)
    overrides = typed_overrides(grid.cells[0].build_config(), texts)
    grid = grid.with_overrides(overrides)
    if args.engine == "local" and (args.address or args.cell_resources):
        raise UserError("--address and --cell_resources go with --engine=ray")
    if args.engine == "ray" and args.in_process:
        raise UserError("--in_process goes with --engine=local: Ray runs every cell in a process of its own")
    if args.dry_run:
        print(runner.describe(grid, grid.select(args.only), args.workdir, stale_after=args.stale_after), flush=True)
        return 0
    common = dict(only=args.only, retry_failed=args.retry_failed, stale_after=args.stale_after,
                  heartbeat=args.heartbeat, command=runner.command_line(grid, args.workdir, overrides))
    if args.engine == "ray":
        try:
            from asemble_jax.grids import ray_engine  # imports ray: only this engine needs it
        except ModuleNotFoundError as error:
            raise UserError(f"--engine=ray needs {error.name}: pip install -e '.[ray]'") from None
        resources = parse_resources(args.cell_resources) if args.cell_resources else None
        summary = ray_engine.run_grid(grid, args.workdir, address=args.address, resources=resources,
                                      max_retries=args.max_retries, **common)
    else:
        summary = runner.run_grid(grid, args.workdir, in_process=args.in_process, **common)
    if summary.interrupted:
        return 3
    if summary.failed:
        return 1
    return 4 if summary.not_done else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
