r"""The paper's Table 1 (dataset distribution) and Table 2 (ASembleNet against Xception, ResNet50 and InceptionV3),
from the datasets built under --data_dir and from baseline grid workdirs, beside the abstract's figures.

    python scripts/paper_tables.py --data_dir=data/tfds --datasets synthetic_sij/axial synthetic_sij/coronal \
        bone_mri/stir [--grid_workdir DIR [DIR ...]] --out=results/paper_tables [--threshold=0.5|youden]

The paper's sources (elazig, asas, radiopaedia) are always listed, "not built" where --data_dir has no build.
Writes OUT/tables.md, table1.csv, table2.csv and tables.tex; asemble_jax/grids/paper_tables.py says what each
number is.
"""
import argparse
import shlex
import sys

from asemble_jax.data.builders import DEFAULT_DATA_DIR
from asemble_jax.errors import run_main
from asemble_jax.grids.paper_tables import write_paper_tables
from asemble_jax.grids.tables import THRESHOLDS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="where the TFDS datasets were built")
    parser.add_argument("--datasets", nargs="*", default=[], help="NAME/CONFIG of datasets besides the paper's")
    parser.add_argument("--grid_workdir", nargs="*", default=[],
                        help="baseline grid workdirs (scripts/run_ablations.py --grid=ablations/baselines.py)")
    parser.add_argument("--out", required=True, help="folder for the tables, e.g. results/paper_tables")
    parser.add_argument("--threshold", choices=THRESHOLDS, default="0.5",
                        help="decision threshold of Table 2: 0.5, or each run's Youden threshold from validation")
    parser.add_argument("--n_resamples", type=int, default=2000, help="bootstrap resamples of test patients")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "scripts/paper_tables.py", *(argv if argv is not None else sys.argv[1:])])
    distributions, papers = write_paper_tables(
        args.out, data_dir=args.data_dir, datasets=args.datasets, grid_workdirs=args.grid_workdir, command=command,
        threshold=args.threshold, n_resamples=args.n_resamples, seed=args.seed)
    print(f"wrote {args.out}/tables.md, table1.csv, table2.csv and tables.tex ({len(distributions)} dataset(s), "
          f"{sum(d.built for d in distributions)} built; {len(papers)} Table 2 part(s))")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
