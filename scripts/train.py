r"""Trains one config; rerun the same command to resume.

    python scripts/train.py --config=ablations/base.py:model=asemblenet,preset=small,dataset=synthetic_sij/coronal \
        --workdir=workdirs/demo [--config.total_steps=50] [--allow_config_change]
"""
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from asemble_jax.train.trainer import TrainingError, train_and_evaluate

config_flags.DEFINE_config_file("config", None, "ablations/<file>.py[:ARG]", lock_config=True)
flags.DEFINE_string("workdir", None, "where config.json, metrics.jsonl and checkpoints go", required=True)
flags.DEFINE_bool("allow_config_change", False, "resume a workdir whose stored config differs")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    # Orbax and TFDS log every call at INFO; keep theirs to warnings and ours at INFO.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("asemble_jax").setLevel(logging.INFO)
    try:
        metrics = train_and_evaluate(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if metrics:
        print(f"validation: AUC {metrics['auc']:.4f}  accuracy {metrics['accuracy']:.4f}  (n={metrics['n']})")
    return 0


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
