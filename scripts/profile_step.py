r"""Where the training step's time goes, per kind of XLA operation (asemble_jax/step_profile.py says how).

    # the demo's step: ASembleNet-small, 128 px, batch 32
    python scripts/profile_step.py --config=ablations/base.py:model=asemblenet,preset=small \
        --out results/performance/step_profile_asemblenet_small.md
"""
import argparse
import sys

from asemble_jax import atomic_io, provenance, step_profile
from asemble_jax.config import apply_overrides, load_config
from asemble_jax.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="ablations/base.py:model=asemblenet,preset=small")
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps, after two unprofiled ones")
    parser.add_argument("--out", default="results/performance/step_profile_asemblenet_small.md")
    args = parser.parse_args(argv)
    config = apply_overrides(load_config(args.config), {"global_batch_size": args.batch})
    result = step_profile.profile(config, steps=args.steps)
    title = f"{args.config}, batch {args.batch}"
    atomic_io.write_text(args.out, step_profile.render(result, title, provenance.command_line(__file__, argv)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
