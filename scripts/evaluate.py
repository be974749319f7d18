"""Evaluates a trained workdir on a dataset split (default: its own dataset's test split).

    python scripts/evaluate.py --workdir=workdirs/demo [--dataset=synthetic_sij/shifted] [--split=test]

Writes DIR/eval/<dataset>_<split>.json and .md (metrics with 95% patient-bootstrap CIs at thresholds 0.5 and
Youden's J from validation), _predictions.csv, and ROC, confusion-matrix and calibration PNGs.
"""
import argparse
import sys

from asemble_jax.evaluation.evaluate import evaluate_workdir
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--dataset", help="NAME/CONFIG; default: the dataset the model was trained on")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data_dir", help="TFDS data_dir; default: the one in the run's config")
    parser.add_argument("--out", help="output folder; default: WORKDIR/eval")
    parser.add_argument("--n_resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    report = evaluate_workdir(args.workdir, dataset=args.dataset, split=args.split, out_dir=args.out,
                              data_dir=args.data_dir, n_resamples=args.n_resamples)
    block = report["thresholds"]["0.5"]
    print(f"{report['dataset']}/{report['split']}: n={report['n']} ({report['n_patients']} patients)  "
          f"AUC {block['auc']['estimate']:.3f} [{block['auc']['ci_low']:.3f}, {block['auc']['ci_high']:.3f}]  "
          f"accuracy {block['accuracy']['estimate']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
