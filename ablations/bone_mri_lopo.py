r"""ASembleNet on real SIJ MRI: bone_mri (Hepburn et al.), slice with active inflammation vs without, one
leave-one-patient-out fold.

    python scripts/train.py --config=ablations/bone_mri_lopo.py:fold=0 --workdir=workdirs/bone_mri_lopo/fold0
    python scripts/run_bone_mri_lopo.py   # every fold, then pooled results in results/bone_mri/

ARG: fold=K (required; K indexes the dataset's fold{K}_train / fold{K}_test splits, one held-out patient each),
and optionally preset (default small), seed (default 0).

Sized for CPU: the small preset at 128x128, 150 steps of 16 slices (about 24 epochs of the ~100 training
slices). Trained from scratch; to start from phantom-pretrained weights instead, train the same preset on
synthetic_sij/coronal and add --config.init_from=<that workdir>. ablations/pretraining.py runs that comparison,
paired and over seeds, for the component grid's tiny preset.

There is no validation patient to spare (5 labelled patients in all), so nothing is selected on held-out data:
the held-out patient is evaluated once, at the last step, and that last checkpoint is the model.
"""
import os

import ml_collections

from asemble_jax.train.config_file import load_config_file, parse_key_values

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
ARG_DEFAULTS = {"fold": "", "preset": "small", "seed": "0"}


def parse_arg(arg: str | None) -> dict[str, str]:
    fields = parse_key_values(arg, ARG_DEFAULTS)
    if not fields["fold"].isdigit():
        raise ValueError("bone_mri_lopo needs fold=K, K >= 0 (e.g. ablations/bone_mri_lopo.py:fold=0)")
    return fields


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    fields = parse_arg(arg)
    config = load_config_file(f"{BASE}:model=asemblenet,preset={fields['preset']},dataset=bone_mri,"
                              f"seed={fields['seed']}")
    config.arg = arg or ""
    fold = int(fields["fold"])
    config.data.train_split = f"fold{fold}_train"
    config.data.val_split = f"fold{fold}_test"
    config.data.test_split = f"fold{fold}_test"
    config.global_batch_size = 16
    config.total_steps = 150
    config.warmup_steps = 15
    config.log_every = 10
    config.eval_every = config.total_steps
    config.checkpoint_every = config.total_steps
    return config
