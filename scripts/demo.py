"""The main job behind `make demo` (asemble_jax/demo.py says what it does).

    python scripts/demo.py --data_dir=data/tfds --out=results/demo [--workdir=workdirs/demo]
"""
import argparse
import sys

from asemble_jax.demo import run_demo, summary_table
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/tfds")
    parser.add_argument("--out", default="results/demo")
    parser.add_argument("--workdir", default="workdirs/demo")
    args = parser.parse_args(argv)
    summary, reports = run_demo(args.data_dir, args.out, args.workdir)
    print(summary_table(summary, reports, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
