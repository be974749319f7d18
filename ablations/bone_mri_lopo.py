r"""ASembleNet on real SIJ MRI: bone_mri (Hepburn et al.; semi-coronal STIR of axSpA patients with expert
bone-marrow-oedema masks), slice with active inflammation vs without, leave-one-patient-out, and Grad-CAM scored
against the expert masks. One arm (the full model), the held-out predictions of every fold pooled.

    python scripts/build_dataset.py --dataset=bone_mri --manual_dir=../shared/data/bone_mri --data_dir=data/tfds
    python scripts/run_ablations.py --grid=ablations/bone_mri_lopo.py --workdir=workdirs/bone_mri_lopo
    python scripts/make_tables.py --workdir=workdirs/bone_mri_lopo --out=results/bone_mri
    python scripts/check_lopo_prior.py --workdir=workdirs/bone_mri_lopo --out=results/bone_mri/lopo_prior_check.md

Expected (x86_64, 2 CPU cores shared with other jobs, JAX 0.10.2 on CPU, seed 0; results/bone_mri/): pooled
held-out AUC 0.725 over 123 slices of 5 patients, accuracy 0.569 at threshold 0.5; Grad-CAM of the fused map
finds the expert mask less often than the same architecture with random weights (pointing game 0.107 vs 0.290).
5 cells, 21 min of cell time (4.5 min median per cell).

Per fold: train on the other labelled patients; the held-out patient is classified (every labelled slice) and,
on every slice whose expert mask (>= 2 of 4 readings) is not empty, Grad-CAM of the inflammation class is scored
against the mask, against the same architecture with randomised weights and against a centre prior
(asemble_jax/evaluation/localization_report.py). With 5 labelled patients no validation patient can be spared:
the training split plays the validation split, so the best checkpoint and the Youden threshold are chosen on
training patients, never on the held-out one (tests/test_lopo_held_out.py proves it for every cell).

ARG, comma-separated key=value:
  preset  ASembleNet preset; default small (128x128)
  seeds   how many seeds, 0..seeds-1; default 1
  steps   training steps of every fold; default 150 (16 slices each: ~24 epochs of the ~100 training slices)
  folds   the number of leave-one-patient-out folds of the built dataset; default 5

Trained from scratch; ablations/pretraining.py compares a phantom-pretrained start, paired over seeds.
"""
import os

from asemble_jax.grids.grid import (LOCALIZATION, Cell, Evaluation, Grid, TableSpec, at_least, dataset_notes,
                                       parse_preset, training_sets)
from asemble_jax.config import parse_arg

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
ARM = "full"


def get_grid(arg=None) -> Grid:
    options = parse_arg(arg, preset="small", seeds=1, steps=150, folds=5)
    preset, seeds, steps = parse_preset(options), at_least(options, "seeds"), at_least(options, "steps")
    folds = training_sets("bone_mri", [], at_least(options, "folds", 2))
    cells = tuple(
        Cell(name=fold.cell_name(ARM, seed),
             factors={**fold.factors, "variant": ARM, "seed": seed},
             config=f"{BASE}:model=asemblenet,preset={preset},dataset={fold.factors['dataset']},variant={ARM},"
                    f"seed={seed}",
             overrides={"total_steps": steps, "global_batch_size": 16, "warmup_steps": max(1, steps // 10),
                        **fold.overrides},
             evaluations=(*fold.evaluations, Evaluation("localization", fold.factors["dataset"],
                                                        fold.evaluations[0].split, kind=LOCALIZATION)))
        for seed in range(seeds) for fold in folds)
    return Grid(name="bone_mri_lopo", cells=cells, notes=dataset_notes("bone_mri"),
                table=TableSpec(arm="variant", reference=ARM, pooled=("fold",)))
