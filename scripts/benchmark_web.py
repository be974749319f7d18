r"""Latency and throughput of the clinician web page, batching on and off in one run, and a screenshot.

    python scripts/benchmark_web.py --workdir=workdirs/demo --eval_dir=results/demo/eval --out=results/web \
        [--screenshot=results/web/page.png]

Writes OUT/benchmark.json and OUT/benchmark.md (the command at the top). The work is asemble_jax/web/benchmark.py.
"""
import argparse
import pathlib
import sys

from asemble_jax.errors import run_main
from asemble_jax.provenance import command_line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--eval_dir", help="evaluation reports (default WORKDIR/eval)")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--screenshot", type=pathlib.Path, help="also save the page with a result here")
    args = parser.parse_args(argv)
    from asemble_jax.web import benchmark

    result = benchmark.run(args.workdir, args.eval_dir, out=args.out, screenshot_path=args.screenshot,
                           command=command_line(__file__, argv))
    print(benchmark.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
