r"""Our CPU training step against PyTorch's: ResNet50 (ours through the project's training program, one device,
against torchvision with the same 1-channel stem, default and channels_last) and ASembleNet with and without the
project's XLA CPU flags; then per part of the ResNet50 step (asemble_jax/cpu_vs_torch.py says how). Needs torch
and torchvision (the `oracle` extra), in this Python or the one given as --torch_python; CI never runs it.

    .venv/bin/python scripts/benchmark_cpu_vs_torch.py --torch_python=/tmp/venv_oracle/bin/python \
        --lock=/tmp/bench.lock --out results/performance/cpu_vs_torch.md
"""
import argparse
import pathlib
import sys

from asemble_jax import cpu_vs_torch, provenance
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="ResNet50 input size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (at least 10)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, alternating")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--asemblenet_preset", default="small", help="'' leaves ASembleNet out")
    parser.add_argument("--no_parts", action="store_true", help="leave out the per-part measurement")
    parser.add_argument("--repeats", type=int, default=5, help="calls per part after a warm-up one")
    parser.add_argument("--torch_python", default=sys.executable, help="a Python with torch and torchvision")
    parser.add_argument("--background_load", type=int, default=0,
                        help="busy processes to run beside the comparison (the flag's loaded-machine check)")
    parser.add_argument("--lock", help="a file to flock around each timed process (other benchmarks' lock)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/performance/cpu_vs_torch.md"))
    args = parser.parse_args(argv)
    command = provenance.command_line(__file__, argv)
    cpu_vs_torch.compare(size=args.size, batch=args.batch, steps=args.steps, rounds=args.rounds,
                         threads=args.threads, asemblenet_preset=args.asemblenet_preset or None,
                         parts=not args.no_parts, repeats=args.repeats, torch_python=args.torch_python,
                         lock=args.lock, background_load=args.background_load,
                         save=lambda result: cpu_vs_torch.write(args.out, result, command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
