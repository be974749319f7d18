r"""Trains one config; rerun the same command to resume.

    python scripts/train.py --config=ablations/base.py:model=asemblenet,preset=small,dataset=synthetic_sij/coronal \
        --workdir=workdirs/demo [--config.total_steps=50] [--allow_config_change]

--config.FIELD=VALUE overrides any field of the config (read as the field's type; a field that does not exist is
an error).
"""
import argparse
import logging
import sys

from asemble_jax.config import apply_overrides, config_flags, load_config
from asemble_jax.errors import run_main
from asemble_jax.train.trainer import train_logging_failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="ablations/<file>.py[:ARG]")
    parser.add_argument("--workdir", required=True, help="where config.json, metrics.jsonl and checkpoints go")
    parser.add_argument("--allow_config_change", action="store_true",
                        help="resume a workdir whose stored config differs")
    rest, overrides = config_flags(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    # Orbax and TFDS log every call at INFO; keep theirs to warnings and ours at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("asemble_jax").setLevel(logging.INFO)
    config = apply_overrides(load_config(args.config), overrides)
    result = train_logging_failures(config, args.workdir, allow_config_change=args.allow_config_change)
    state = "already finished" if result["already_finished"] else "finished"
    if result["step"] < config.total_steps:
        state = "preempted: rerun the command to resume"
    figures = (f"validation ({config.data.val_split}): AUC {result['auc']:.4f}  accuracy {result['accuracy']:.4f}  "
               f"(n={result['n']})" if "auc" in result else "no validation yet")
    print(f"{args.workdir}: {state} at step {result['step']} of {config.total_steps}; {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
