r"""Does phantom pretraining help on real MRI? ASembleNet on bone_mri (leave-one-patient-out folds), each
variant trained from scratch and, paired with it, started from the same variant and seed trained on the coronal
phantom by a component grid (`source`), under the same budget; the table compares `phantom` with `scratch`.

    python scripts/run_ablations.py --grid=ablations/components.py:preset=tiny,seeds=3,planes=coronal \
        --workdir=workdirs/ablations/synthetic_components        # the pretrained source, if not there yet
    python scripts/run_ablations.py \
        --grid=ablations/pretraining.py:source=workdirs/ablations/synthetic_components,seeds=3 \
        --workdir=workdirs/ablations/bone_mri_pretraining
    python scripts/make_tables.py --workdir=workdirs/ablations/bone_mri_pretraining \
        --out=results/ablations/bone_mri/pretraining

A `phantom` cell loads the best checkpoint of `source`/coronal/VARIANT/seedS (weights, BatchNorm statistics and
the classification head; step, optimiser and schedule start afresh: config.init_from), so the pair differs only
in its initial weights: same seed, data order, augmentation and steps. The scratch arm repeats the bone_mri
component grid's cells of the same variants (same configs), so that each pair lives in one workdir and is
bootstrapped together.

How long it took here (2-core CPU shared with 3-4 baseline grid jobs, load 8-10): `seeds=3` with the committed
tiny component grid as source, 30 cells of 300 steps, 1.13 h of cell time (median 2.2 min per cell), 1.2 h wall.
The 15 scratch cells reproduced the bone_mri component grid's `full` cells bit for bit (identical held-out
predictions), though run at another commit and load. Expected: `full` pooled held-out AUC 0.521 +- 0.079 from
scratch, 0.505 +- 0.073 from the phantom (paired difference -0.016, 95% CI -0.075 to 0.043);
results/ablations/bone_mri/pretraining/.
`variants=no_wide_resnet` (workdir .../bone_mri_pretraining_no_wide_resnet, two workers, otherwise idle machine):
30 cells, 0.48 h of cell time, 16 min wall; tables in results/ablations/bone_mri/pretraining_no_wide_resnet/.

ARG, comma-separated key=value (lists joined with '+'):
  source    (required) a component-grid workdir trained on synthetic_sij/coronal with the same preset and input
            size; a relative path is taken from the current folder and stored absolute
  preset    ASembleNet preset of both arms; default tiny (the preset of the committed component grids)
  variants  which variants to compare, e.g. full+no_vit; default full (one table each)
  seeds     how many seeds, 0..seeds-1; default 3; the source needs the same seeds
  steps     training steps on bone_mri of every cell; default 300
  folds     the number of leave-one-patient-out folds of the built dataset; default 5
"""
import os

from asemble_jax.grids.grid import (Cell, Grid, GridError, TableSpec, at_least, dataset_notes, parse_preset,
                                       parse_subset, training_sets)
from asemble_jax.config import parse_arg
from asemble_jax.models.registry import ablation_variants

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
INITS = ("scratch", "phantom")
SOURCE_PLANE = "coronal"  # bone_mri's scans are semi-coronal
DEFAULTS = {"source": "", "preset": "tiny", "variants": "full", "seeds": 3, "steps": 300, "folds": 5}


def get_grid(arg=None) -> Grid:
    options = parse_arg(arg, **DEFAULTS)
    if not options["source"]:
        raise GridError("pretraining needs source=WORKDIR, a component grid trained on synthetic_sij/coronal "
                        "(e.g. ablations/pretraining.py:source=workdirs/ablations/synthetic_components)")
    source = os.path.abspath(options["source"])
    if not os.path.isdir(os.path.join(source, SOURCE_PLANE)):
        raise GridError(f"source {options['source']}: no {SOURCE_PLANE}/ cells there; it must be the workdir of a "
                        "component grid run on synthetic_sij/coronal")
    variants = parse_subset(options, "variants", ablation_variants())
    preset = parse_preset(options)
    seeds, steps = at_least(options, "seeds"), at_least(options, "steps")
    folds = training_sets("bone_mri", [], at_least(options, "folds", 2))

    def init_overrides(init: str, variant: str, seed: int) -> dict:
        if init == "scratch":
            return {}
        return {"init_from": os.path.join(source, SOURCE_PLANE, variant, f"seed{seed}")}

    cells = tuple(
        Cell(name=f"{variant}/{init}/seed{seed}/{fold.name_suffix}",
             factors={**fold.factors, "variant": variant, "init": init, "seed": seed},
             config=f"{BASE}:model=asemblenet,preset={preset},"
                    f"dataset={fold.factors['dataset']},variant={variant},seed={seed}",
             overrides={"total_steps": steps, **fold.overrides, **init_overrides(init, variant, seed)},
             evaluations=fold.evaluations)
        for seed in range(seeds) for fold in folds for variant in variants for init in INITS)
    notes = (f"phantom: initial weights from the best checkpoint of the same variant and seed in {source} "
             f"({SOURCE_PLANE} phantom); scratch: the base config's random initialisation. "
             + dataset_notes("bone_mri"))
    return Grid(name="pretraining", cells=cells, notes=notes,
                table=TableSpec(arm="init", reference="scratch", pooled=("fold",)))
