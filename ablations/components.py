r"""Component ablation grid: what each part of ASembleNet contributes. Every ablation variant of the registry
(full, no_se, no_wide_resnet, no_convnext, no_vit, and each branch alone) x seeds x planes of one dataset, each
trained from scratch under the same budget (ablations/base.py with the grid's steps), then scored on the held-out
test patients (and, on the phantom, on the shifted stand-in external set of the same plane).

    python scripts/run_ablations.py --grid=ablations/components.py:preset=tiny,seeds=3 \
        --workdir=workdirs/ablations/synthetic_components
    python scripts/make_tables.py --workdir=workdirs/ablations/synthetic_components \
        --out=results/ablations/synthetic/coronal

    python scripts/run_ablations.py --grid=ablations/components.py:preset=tiny,seeds=3,dataset=bone_mri \
        --workdir=workdirs/ablations/bone_mri_components
    python scripts/make_tables.py --workdir=workdirs/ablations/bone_mri_components \
        --out=results/ablations/bone_mri/components

How long it took here (2-core CPU shared with other jobs): `preset=tiny,planes=coronal,seeds=3,steps=300`, 24
cells, 20 min of cell time (median 0.6 min per cell, subprocess cells with a warm persistent compilation cache;
the first cell of each variant compiles, ~1-2 min). The axial plane was run as a second grid
(`planes=axial`, workdir .../synthetic_components_axial). Smoke test (`variants=full+no_se`, 20 steps): 2m03s and
1m05s per cell with an empty compilation cache, 36 s and 40 s with a warm one.
Expected (x86_64, 2 CPU cores, JAX 0.10.2, seeds 0-2): `full` reaches test AUC 0.832 +- 0.006 (mean +- SD over
seeds) on the coronal phantom, 0.872 +- 0.032 on its shifted external set; tables with every variant's paired
differences: results/ablations/synthetic/coronal/ and results/ablations/synthetic/axial/ (make_tables --out there).
bone_mri (`preset=tiny,seeds=3,dataset=bone_mri`, 8 variants x 3 seeds x 5 folds = 120 cells of 300 steps): 2.2 h
of cell time, median 1.1 min per cell, 2.5 h wall while sharing the 2 cores with the baseline grid; `full` pools to
held-out AUC 0.521 +- 0.079, near chance; tables in results/ablations/bone_mri/components/.

Cells run seed by seed (every variant of seed 0 first), so a partial grid already compares all variants.

ARG, comma-separated key=value (lists joined with '+'):
  preset    ASembleNet preset: tiny (64x64), small (128x128) or paper (256x256); default tiny
  planes    axial+coronal (default for the phantom); bone_mri is coronal only
  seeds     how many seeds, 0..seeds-1; default 3 (the spec asks for at least 3)
  steps     training steps of every cell; default 300
  dataset   synthetic_sij (default) or bone_mri (leave-one-patient-out folds)
  folds     bone_mri: the number of leave-one-patient-out folds the built dataset has; default 5 (the 5 labelled
            patients of the 7-scan subset in ../shared/data)
  variants  a subset of the variants, e.g. full+no_se; default all
"""
import os

from asemble_jax.grids.grid import (Cell, Grid, TableSpec, at_least, dataset_notes, parse_list, parse_preset,
                                       parse_subset, training_sets)
from asemble_jax.config import parse_arg
from asemble_jax.models.registry import ablation_variants

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
DEFAULTS = {"preset": "tiny", "planes": "", "seeds": 3, "steps": 300, "dataset": "synthetic_sij", "folds": 5,
            "variants": "+".join(ablation_variants())}


def get_grid(arg=None) -> Grid:
    options = parse_arg(arg, **DEFAULTS)
    variants = parse_subset(options, "variants", ablation_variants(), reference="full")
    preset = parse_preset(options)
    seeds, steps = at_least(options, "seeds"), at_least(options, "steps")
    sets = training_sets(options["dataset"], parse_list(options["planes"]), at_least(options, "folds", 2))
    cells = tuple(
        Cell(name=training_set.cell_name(variant, seed),
             factors={**training_set.factors, "variant": variant, "seed": seed},
             config=f"{BASE}:model=asemblenet,preset={preset},dataset={training_set.factors['dataset']},"
                    f"variant={variant},seed={seed}",
             overrides={"total_steps": steps, **training_set.overrides},
             evaluations=training_set.evaluations)
        for seed in range(seeds) for training_set in sets for variant in variants)
    return Grid(name="components", cells=cells, notes=dataset_notes(options["dataset"]),
                table=TableSpec(arm="variant", reference="full", pooled=("fold",)))
