r"""Does a leave-one-patient-out grid's pooled AUC reflect learning, or the training prior? For every arm and seed of
a bone_mri grid workdir: the pooled AUC, and the correlation between each fold's mean predicted probability and its
held-out patient's prevalence of positive slices. A model that predicts roughly the training prevalence scores a
strongly negative correlation (leaving out a patient with many positives lowers the training prevalence), and with
it a pooled AUC below 0.5 that is an artefact of pooling folds, not anti-learning.

    python scripts/check_lopo_prior.py --workdir=workdirs/ablations/bone_mri_components
"""
import argparse
import glob
import os
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a grid workdir whose cells are ARM/seedS/foldK, "
                        "ARM possibly nested (full/phantom/seed0/fold3)")
    args = parser.parse_args(argv)
    pattern = os.path.join(args.workdir, "**", "seed*", "fold*", "eval", "*_test_predictions.csv")
    files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        print(f"error: {args.workdir}: no held-out predictions ({pattern})", file=sys.stderr)
        return 2
    runs: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for path in files:
        *arm, seed = os.path.relpath(path, args.workdir).split(os.sep)[:-3]
        runs.setdefault(("/".join(arm), seed), []).append(pd.read_csv(path))
    print("| arm | seed | folds | pooled AUC | corr(fold prevalence, fold mean p) |\n|---|---|---:|---:|---:|")
    for (arm, seed), folds in sorted(runs.items()):
        pooled = pd.concat(folds)
        prevalence = np.array([f.label.mean() for f in folds])
        mean_p = np.array([f.probability.mean() for f in folds])
        print(f"| {arm} | {seed} | {len(folds)} | {roc_auc_score(pooled.label, pooled.probability):.3f} | "
              f"{np.corrcoef(prevalence, mean_p)[0, 1]:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
