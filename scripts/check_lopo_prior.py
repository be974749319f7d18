r"""Does a leave-one-patient-out grid's pooled AUC reflect learning, or the training prior? Per run (arm and seed):
the pooled AUC and the correlation of each fold's mean prediction with its held-out patient's prevalence
(asemble_jax/grids/prior_check.py says how to read it).

    python scripts/check_lopo_prior.py --workdir=workdirs/ablations/bone_mri_components \
        [--out=results/ablations/bone_mri/components/lopo_prior_check.md]
"""
import argparse
import sys

from asemble_jax import atomic_io
from asemble_jax.grids.prior_check import prior_check
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a grid workdir (scripts/run_ablations.py)")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    table = prior_check(args.workdir)
    print(table, end="")
    if args.out:
        atomic_io.write_text(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
