"""Writes the golden fixtures that tests compare our JAX code against, from reference implementations.

    .venv-oracle/bin/python scripts/make_golden_fixtures.py --seed 0 --out tests/golden

Needs the `oracle` extra (torch, torchvision, timm, Keras 3 with the JAX backend, pytorch-grad-cam); CI never
installs it and only reads the committed .npz files. Every module in scripts/golden/ defines
`make(seed: int, out: pathlib.Path) -> list[pathlib.Path]`; `--only NAME` runs one of them. Any seed must give
fixtures that the tests pass with: nothing may depend on one seed's numbers.
"""
import argparse
import importlib.util
import os
import pathlib
import sys

from asemble_jax.errors import UserError, run_main

os.environ.setdefault("KERAS_BACKEND", "jax")
GOLDEN_MAKERS = pathlib.Path(__file__).resolve().parent / "golden"


def load_makers(only: str | None):
    for path in sorted(GOLDEN_MAKERS.glob("*.py")):
        if path.stem.startswith("_") or (only and path.stem != only):
            continue
        spec = importlib.util.spec_from_file_location(f"golden_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield path.stem, module.make


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("tests/golden"))
    parser.add_argument("--only", help="run only scripts/golden/<ONLY>.py")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    makers = list(load_makers(args.only))
    if not makers:
        raise UserError(f"no fixture maker matches {args.only!r} in {GOLDEN_MAKERS}")
    for name, make in makers:
        for written in make(args.seed, args.out):
            print(f"{name}: wrote {written} ({written.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
