r"""Tables and figures of an ablation grid workdir, from whatever cells have finished (safe while it runs).

    python scripts/make_tables.py --workdir=workdirs/ablations/synthetic_components \
        --out=results/ablations/synthetic/components [--threshold=0.5|youden] [--n_resamples=2000] \
        [--grid=ablations/components.py:ARG]

--grid tabulates another grid whose cells are all cells of the workdir's grid, e.g. the leave-one-out grid
inside a workdir that ran the factorial one.

Writes OUT/tables.md, tables.csv, tables.tex, paired_tests.csv (baseline grids) and the figures; see
asemble_jax/grids/publish.py and tables.py for what each number is.
"""
import argparse
import shlex
import sys

from asemble_jax.grids.publish import write_tables
from asemble_jax.grids.tables import THRESHOLDS
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a grid workdir (scripts/run_ablations.py --workdir)")
    parser.add_argument("--out", required=True, help="folder for the tables and figures, e.g. results/ablations/x/")
    parser.add_argument("--threshold", choices=THRESHOLDS, default="0.5",
                        help="decision threshold of accuracy, F1, sensitivity, specificity and McNemar: 0.5, or "
                             "each run's Youden threshold from its validation split")
    parser.add_argument("--n_resamples", type=int, default=2000, help="bootstrap resamples of test patients")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--grid", help="tabulate this grid (file.py:ARG), a part of the workdir's grid")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "scripts/make_tables.py", *(argv if argv is not None else sys.argv[1:])])
    collected = write_tables(args.workdir, args.out, command=command, threshold=args.threshold,
                             n_resamples=args.n_resamples, seed=args.seed, grid_spec=args.grid)
    print(f"wrote {args.out}/tables.md, tables.csv, tables.tex and {2 * len(collected.tables)} figure(s) "
          f"({len(collected.tables)} table(s))")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
