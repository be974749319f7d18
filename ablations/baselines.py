r"""Baseline grid, the paper's Table 2 analogue: ASembleNet against ResNet50, Xception and InceptionV3 (the Keras
applications' architectures in Flax, trained from scratch), x seeds x planes of one dataset, all under the same
training budget: the same steps, batch, optimiser, schedule, augmentation and input size (ablations/base.py with
the grid's steps and size). ASembleNet's `preset` sets only its own width and depth; the baselines have one
architecture each, whatever the preset.

The committed CPU-sized runs, one workdir per plane (several workers may share a workdir; --only splits them):

    python scripts/run_ablations.py --grid=ablations/baselines.py:size=80,steps=200,planes=coronal,seeds=3 \
        --workdir=workdirs/ablations/synthetic_baselines
    python scripts/make_tables.py --workdir=workdirs/ablations/synthetic_baselines \
        --out=results/ablations/synthetic/baselines/coronal
    (the same with planes=axial, workdir .../synthetic_baselines_axial, out .../baselines/axial)

At the paper's size: `preset=paper,size=256` (not run: a GPU job).

How long it took here (2-core CPU shared with 2-4 other jobs, load 6-10, so upper bounds), per cell at 80 px and
200 steps of 32 slices (`wall_time_s` of each cell's cell.json): ASembleNet-small 1.9-4.1 min, InceptionV3 6.8-11.8 min, ResNet50 15-25 min, Xception
47-60 min (depthwise-separable convolutions are slow on XLA:CPU: 9-20 s per step). 8.7 h of cell time for the
24 cells of both planes, run over two sessions by up to three workers at once. The baselines are ~21-24M
parameters each (results/models/table.md); ASembleNet-small is 1.2M.
Expected (coronal, seeds 0-2, 80 px, 200 steps): ASembleNet-small test AUC 0.821 +- 0.015 (mean +- SD over seeds),
0.865 +- 0.037 on the shifted external set; the baselines' rows and paired tests are in
results/ablations/synthetic/baselines/{coronal,axial}/.

Cells run seed by seed (every model of seed 0 first), so a partial grid already compares all models.

ARG, comma-separated key=value (lists joined with '+'):
  preset    ASembleNet's preset: tiny, small (default) or paper
  size      input size of every model; default 128. At least 75 (InceptionV3's minimum; Xception needs 71,
            ResNet50 32) and a multiple of 16 (ASembleNet's ViT patch), e.g. 80, 96, 128, 256
  planes    axial+coronal (default for the phantom); bone_mri is coronal only
  seeds     how many seeds, 0..seeds-1; default 3
  steps     training steps of every cell; default 300
  dataset   synthetic_sij (default) or bone_mri (leave-one-patient-out folds)
  folds     bone_mri: the number of leave-one-patient-out folds of the built dataset; default 5
  models    a subset, e.g. asemblenet+resnet50; default all four
  bn_momentum  BatchNorm momentum of every model; default 0.9 (ASembleNet's own, PyTorch's default). The Keras
            applications' 0.99 leaves their running statistics unconverged after a few hundred steps (ResNet50,
            200 steps at 80 px: validation AUC 0.46 with them, 0.93 with batch statistics), which would compare
            BatchNorm bookkeeping rather than models; 0 keeps each model's own
"""
import os

from asemble_jax.grids.grid import (Cell, Grid, GridError, TableSpec, at_least, dataset_notes, parse_list,
                                       parse_preset, parse_subset, training_sets)
from asemble_jax.config import parse_arg

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
MODELS = ("asemblenet", "resnet50", "xception", "inception_v3")
MIN_INPUT_SIZE = 75  # the largest of the baselines' minimum input sizes (InceptionV3)
VIT_PATCH = 16
DEFAULTS = {"preset": "small", "size": 128, "planes": "", "seeds": 3, "steps": 300, "dataset": "synthetic_sij",
            "folds": 5, "models": "+".join(MODELS), "bn_momentum": 0.9}


def get_grid(arg=None) -> Grid:
    options = parse_arg(arg, **DEFAULTS)
    models = parse_subset(options, "models", MODELS, reference="asemblenet")
    preset = parse_preset(options)
    size = at_least(options, "size", MIN_INPUT_SIZE)
    if size % VIT_PATCH:
        raise GridError(f"size={size} must be a multiple of {VIT_PATCH} (ASembleNet's ViT patch)")
    seeds, steps = at_least(options, "seeds"), at_least(options, "steps")
    momentum = options["bn_momentum"]
    if not (momentum == 0.0 or 0.0 < momentum < 1.0):
        raise GridError(f"bn_momentum={options['bn_momentum']} must be 0 (each model's own) or lie in (0, 1)")
    sets = training_sets(options["dataset"], parse_list(options["planes"]), at_least(options, "folds", 2))
    cells = tuple(
        Cell(name=training_set.cell_name(model, seed),
             factors={**training_set.factors, "model": model, "seed": seed},
             config=f"{BASE}:model={model},preset={preset},dataset={training_set.factors['dataset']},"
                    f"seed={seed}",
             overrides={"total_steps": steps, "data.image_size": size, "model.batch_norm_momentum": momentum,
                        **training_set.overrides},
             evaluations=training_set.evaluations)
        for seed in range(seeds) for training_set in sets for model in models)
    return Grid(name="baselines", cells=cells, notes=dataset_notes(options["dataset"]),
                table=TableSpec(arm="model", reference="asemblenet", pooled=("fold",),
                                tests=("paired_bootstrap", "mcnemar", "delong")))
