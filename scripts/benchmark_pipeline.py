"""Throughput of the training input path at 256x256, in images per second on one CPU core: augment alone,
decode+augment, and the whole grain pipeline (asemble_jax/data/pipeline_benchmark.py says how); with --workers,
the whole pipeline's images per second of wall time at each grain worker count instead.

    python scripts/benchmark_pipeline.py                      # stand-in MRI-like images, under a minute
    python scripts/benchmark_pipeline.py --dataset synthetic_sij/coronal --data_dir data/tfds
    python scripts/benchmark_pipeline.py --dataset synthetic_sij/coronal --data_dir data/tfds --workers 0 1 2
"""
import argparse
import json
import sys

from asemble_jax.data import pipeline_benchmark
from asemble_jax.data.pipeline import open_source
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="prepared TFDS dataset to read instead of stand-in images, e.g. "
                                          "synthetic_sij/coronal")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--images", type=int, default=1024, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", help="grain worker counts to time the pipeline at")
    parser.add_argument("--image_size", type=int, default=256, help="with --workers: the model's input size")
    args = parser.parse_args(argv)
    records = (open_source(args.dataset, args.split, args.data_dir) if args.dataset
               else pipeline_benchmark.long_stand_in_source())
    if args.workers:
        results = pipeline_benchmark.worker_rates(records, args.workers, images=args.images,
                                                  image_size=args.image_size)
    else:
        results = pipeline_benchmark.pipeline_throughput(records, images=args.images, repeats=args.repeats,
                                                         source=args.dataset or "stand-in")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
