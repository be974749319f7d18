"""Looks for the same image, or the same patient, on both sides of a split boundary in built datasets, and for the
same image in two datasets (asemble_jax/data/leakage.py says how).

    python scripts/check_leakage.py --data_dir=data/tfds --datasets elazig/axial asas/axial radiopaedia/axial
    python scripts/check_leakage.py --datasets bone_mri --splits train val test --json=leak.json --markdown=leak.md

The exit status is 1 when there is a finding (0 with --warn_only), 2 when a dataset cannot be read.
"""
import argparse
import sys

from asemble_jax import atomic_io
from asemble_jax.data import leakage
from asemble_jax.data.builders import DEFAULT_DATA_DIR
from asemble_jax.data.near_duplicates import DEFAULT_THRESHOLD
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--datasets", nargs="+", required=True, help="NAME/CONFIG of built datasets")
    parser.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD,
                        help="most differing hash bits (of 64) for two images to count as near-duplicates")
    parser.add_argument("--splits", nargs="+",
                        help="compare only these splits (default: all). Name one split scheme where a dataset has "
                             "several that overlap by design, e.g. bone_mri's train val test beside its LOPO folds")
    parser.add_argument("--warn_only", action="store_true", help="report findings but exit 0")
    parser.add_argument("--json", help="also write the report as JSON here")
    parser.add_argument("--markdown", help="also write the Markdown report here")
    args = parser.parse_args(argv)
    report = leakage.check(args.datasets, args.data_dir, args.threshold, args.splits)
    text = leakage.markdown(report)
    print(text, end="")
    if args.markdown:
        atomic_io.write_text(args.markdown, text)
    if args.json:
        atomic_io.write_json(args.json, report)
    return 1 if report["findings"] and not args.warn_only else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
