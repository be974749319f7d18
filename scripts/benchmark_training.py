r"""Speed of the real training step and prediction step per model, preset and input size: step time, images/s,
cold and warm compile time, and MFU where the device's peak is known (asemble_jax/benchmark.py says how each
number is measured).

    # this CPU: tiny and small presets on 1 device and on 8 simulated devices
    python scripts/benchmark_training.py --presets tiny small --simulated_devices 1 8 \
        --out results/training/benchmark_cpu.md
    # every ASembleNet preset at three input sizes, batch 16
    python scripts/benchmark_training.py --presets tiny small paper --sizes 64 128 256 --batch 16 --steps 3 \
        --out results/models/benchmark.md
    # a GPU or TPU host: the paper preset in bfloat16 on every local device
    python scripts/benchmark_training.py --presets paper --dtype bfloat16 --batch 128 --steps 100 \
        --out results/training/benchmark_gpu.md
"""
import argparse
import pathlib
import sys

from asemble_jax import benchmark, provenance
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["asemblenet"], help="registered model names")
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[0], help="input sizes; default: the preset's")
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the compiling one")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--simulated_devices", nargs="+", type=int,
                        help="CPU only: run once per count of simulated devices; default: the real devices")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="per device; default: benchmark.PEAK_TFLOPS")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/training/benchmark.md"))
    args = parser.parse_args(argv)
    rows = benchmark.benchmark(args.models, args.presets, args.sizes, batch=args.batch, steps=args.steps,
                               dtype=args.dtype, simulated_devices=args.simulated_devices,
                               peak_tflops_per_device=args.peak_tflops or None)
    benchmark.write(args.out, rows, provenance.command_line(__file__, argv))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
