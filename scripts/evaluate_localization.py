"""How well a trained workdir's Grad-CAM points at lesion masks, against a randomised-weights copy of the model
and a centre prior (asemble_jax/evaluation/localization_report.py explains the comparison).

    python scripts/evaluate_localization.py --workdir=workdirs/demo --dataset=synthetic_sij/coronal --split=test

Every example of the split whose mask holds a lesion is scored. Writes, under --out (default WORKDIR/eval):
localization_<dataset>_<split>.md (the table), .json (the same numbers) and _cases.png (the slices with the most
and the least heat inside the lesion).
"""
import argparse
import sys
import time

from asemble_jax.data.pipeline import open_source
from asemble_jax.evaluation import localization_report
from asemble_jax.evaluation.localization import DEFAULT_TOLERANCE_PX
from asemble_jax.errors import run_main
from asemble_jax.workdir import Workdir, load_trained_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--dataset", help="NAME/CONFIG with lesion masks; default: the dataset the model was "
                        "trained on")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data_dir", help="TFDS data_dir; default: the one in the run's config")
    parser.add_argument("--out", help="output folder; default: WORKDIR/eval")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="which checkpoint")
    parser.add_argument("--tolerance_px", type=float, default=DEFAULT_TOLERANCE_PX,
                        help="pointing-game tolerance in pixels of the stored 256x256 slices")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--n_resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    start = time.perf_counter()
    model, config, step = load_trained_model(args.workdir, which=args.which)
    dataset = args.dataset or config.data.dataset
    source = open_source(dataset, args.split, args.data_dir or config.data.data_dir)
    result = localization_report.evaluate_localization(
        model, localization_report.randomised_model(config), source, image_size=config.data.image_size,
        batch_size=args.batch_size, tolerance_px=args.tolerance_px, name=f"{dataset}/{args.split}")
    stem = Workdir(args.workdir).localization_stem(dataset, args.split, args.out)
    summary = localization_report.write_report(
        result, stem, title=f"Grad-CAM localisation: {dataset} / {args.split}, `{args.workdir}` step {step}",
        n_resamples=args.n_resamples, seed=args.seed)
    for row in summary["rows"]:
        label = row["heatmap"] + (f" {row['layer']}" if row["layer"] else "")
        print(f"{label:32s} pointing {row['pointing_game']['estimate']:.3f}  heat inside "
              f"{row['heat_inside']['estimate']:.3f}  pixel AUC {row['pixel_auc']['estimate']:.3f}")
    print(f"{summary['n_examples']} lesion slices, {time.perf_counter() - start:.1f} s; wrote {stem}.md, .json, "
          f"_cases.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
