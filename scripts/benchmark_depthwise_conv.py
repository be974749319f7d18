r"""Depthwise convolution on the CPU, lax's grouped convolution against asemble_jax/models/cpu_convolution.py's
shifted multiply-adds: forward, input gradient, weight gradient, compile time. The default shapes are the
ConvNeXt branch's four stages in the demo's step (ASembleNet-small, 128 px, batch 32).

    python scripts/benchmark_depthwise_conv.py --out results/performance/depthwise_conv.md
"""
import argparse
import sys

from asemble_jax import atomic_io, benchmark, provenance
from asemble_jax.errors import run_main

SMALL_PRESET_CONVNEXT = ["32x32x32x24", "32x16x16x48", "32x8x8x96", "32x4x4x192"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=SMALL_PRESET_CONVNEXT, help="NHWC input shapes, BxHxWxC")
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--out", default="results/performance/depthwise_conv.md")
    args = parser.parse_args(argv)
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes]
    rows = benchmark.depthwise_conv_rows(shapes, args.kernel, args.steps)
    atomic_io.write_text(args.out, benchmark.render_depthwise(rows, provenance.command_line(__file__, argv)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
