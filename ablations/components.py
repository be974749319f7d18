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

The factorial design (`design=factorial`, issue 14): every combination of the four switches that keeps a branch,
7 branch subsets x SE on/off = 14 variants (asemble_jax.models.registry.factorial_variants); its tables add each
component's exact Shapley contribution and the pairwise interactions (grids/tables.py). Its cells are the
leave-one-out grid's cells where they coincide (same names, configs and overrides), so running it in a
leave-one-out workdir trains only the 6 new variants, and the leave-one-out tables can still be made from it
(make_tables --grid=<the leave-one-out spec>):

    python scripts/run_ablations.py --grid=ablations/components.py:preset=tiny,planes=coronal,seeds=3,design=factorial \
        --workdir=workdirs/ablations/synthetic_components
    python scripts/make_tables.py --workdir=workdirs/ablations/synthetic_components \
        --out=results/ablations/synthetic/factorial_coronal --n_resamples=20000
    python scripts/make_tables.py --workdir=workdirs/ablations/synthetic_components \
        --out=results/ablations/synthetic/coronal --grid=ablations/components.py:preset=tiny,planes=coronal,seeds=3,steps=300

How long it took here: 42 cells of 300 steps (none reused: the workdir was new), 3.87 h of cell time, median 5.1 min
per cell (1.5 to 11.5), 97 min wall with three workers on the 2 cores, shared with other jobs at a load average of
12 to 29 (so every time is an upper bound; the leave-one-out grid above took a median 0.6 min per cell at a lighter
load). The leave-one-out grid run afterwards in the same workdir trained nothing (24 cells done). Tables: 135 s wall (74 s CPU) for
both test sets at 20,000 resamples (2,000 resamples give a smallest p of 0.001, which Holm over a table's 65 p-values can only raise
to 0.065).

The compute-matched arm (`budget=flops`): every variant gets the training FLOPs of `full` at `steps` steps, i.e.
round(steps x GFLOPs(full) / GFLOPs(variant)) steps, GFLOPs being XLA's count of one forward pass at the preset's
input size (grids/cell.py:model_costs, the count the tables show; a training step costs a fixed multiple of it for
every variant, so the ratio is the ratio of training FLOPs). Only `full` keeps the cells of the equal-steps grid;
run it in its own workdir. Equal wall-clock budgets are not offered: on a shared machine they would not be
reproducible.

ARG, comma-separated key=value (lists joined with '+'):
  preset    ASembleNet preset: tiny (64x64), small (128x128) or paper (256x256); default tiny
  planes    axial+coronal (default for the phantom); bone_mri is coronal only
  seeds     how many seeds, 0..seeds-1; default 3 (the spec asks for at least 3)
  steps     training steps of every cell; default 300
  dataset   synthetic_sij (default) or bone_mri (leave-one-patient-out folds)
  folds     bone_mri: the number of leave-one-patient-out folds the built dataset has; default 5 (the 5 labelled
            patients of the 7-scan subset in ../shared/data)
  variants  a subset of the variants, e.g. full+no_se; default all of the design
  design    leave_one_out (default: the 8 variants above) or factorial (the 14 of the four switches)
  budget    steps (default: every variant trains `steps` steps) or flops (every variant the FLOPs of `full`)
"""
import functools
import os

from asemble_jax.config import load_config, parse_arg
from asemble_jax.grids.cell import model_costs
from asemble_jax.grids.grid import (Cell, Grid, GridError, TableSpec, at_least, dataset_notes, parse_list,
                                    parse_preset, parse_subset, training_sets)
from asemble_jax.models.registry import COMPONENTS, ablation_variants, factorial_variants

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
DESIGNS = {"leave_one_out": ablation_variants, "factorial": factorial_variants}
BUDGETS = ("steps", "flops")
DEFAULTS = {"preset": "tiny", "planes": "", "seeds": 3, "steps": 300, "dataset": "synthetic_sij", "folds": 5,
            "variants": "", "design": "leave_one_out", "budget": "steps"}


def _config(preset: str, dataset: str, variant: str, seed: int) -> str:
    return f"{BASE}:model=asemblenet,preset={preset},dataset={dataset},variant={variant},seed={seed}"


@functools.cache
def _gflops(preset: str, dataset: str, variant: str) -> float:
    return model_costs(load_config(_config(preset, dataset, variant, 0)))["gflops"]


def matched_steps(steps: int, full_gflops: float, variant_gflops: float) -> int:
    """Steps that give a variant of `variant_gflops` per image the training FLOPs of `steps` steps of full."""
    return max(1, round(steps * full_gflops / variant_gflops))


def get_grid(arg=None) -> Grid:
    options = parse_arg(arg, **DEFAULTS)
    if options["design"] not in DESIGNS:
        raise GridError(f"design {options['design']!r} unknown; valid: {', '.join(DESIGNS)}")
    if options["budget"] not in BUDGETS:
        raise GridError(f"budget {options['budget']!r} unknown; valid: {', '.join(BUDGETS)}")
    design = DESIGNS[options["design"]]()
    variants = parse_subset({"variants": options["variants"] or "+".join(design)}, "variants", design,
                            reference="full")
    preset = parse_preset(options)
    seeds, steps = at_least(options, "seeds"), at_least(options, "steps")
    sets = training_sets(options["dataset"], parse_list(options["planes"]), at_least(options, "folds", 2))

    def cell_steps(dataset: str, variant: str) -> int:
        if options["budget"] == "steps":
            return steps
        return matched_steps(steps, _gflops(preset, dataset, "full"), _gflops(preset, dataset, variant))

    cells = tuple(
        Cell(name=training_set.cell_name(variant, seed),
             factors={**training_set.factors, "variant": variant, "seed": seed},
             config=_config(preset, training_set.factors["dataset"], variant, seed),
             overrides={"total_steps": cell_steps(training_set.factors["dataset"], variant), **training_set.overrides},
             evaluations=training_set.evaluations)
        for seed in range(seeds) for training_set in sets for variant in variants)
    budget = (f"Equal steps: every variant trains {steps} steps of {cells[0].build_config().global_batch_size} "
              "slices." if options["budget"] == "steps" else
              f"Compute-matched: every variant trains for the FLOPs of {steps} steps of full "
              "(steps x GFLOPs(full) / GFLOPs(variant), XLA's forward count at the input size).")
    factorial = options["design"] == "factorial" and set(variants) == set(design)
    return Grid(name="components", cells=cells, notes=dataset_notes(options["dataset"]),
                table=TableSpec(arm="variant", reference="full", pooled=("fold",), budget=budget,
                                contributions=COMPONENTS if factorial else ()))
