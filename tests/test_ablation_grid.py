"""Grid files expand to the cells the spec asks for, with unique names, and bad arguments are one-line errors."""
import os

import pytest

from asemble_jax.grids.grid import Cell, Evaluation, Grid, GridError, TableSpec, load_grid
from asemble_jax.errors import UserError
from asemble_jax.config import ConfigError, apply_overrides, config_flags, load_config, typed_overrides
from asemble_jax.models.registry import ablation_variants

ABLATIONS = os.path.join(os.path.dirname(__file__), os.pardir, "ablations")
COMPONENTS = os.path.join(ABLATIONS, "components.py")
BASELINES = os.path.join(ABLATIONS, "baselines.py")
PRETRAINING = os.path.join(ABLATIONS, "pretraining.py")
BASE = os.path.join(ABLATIONS, "base.py")


def test_components_grid_crosses_every_variant_seed_and_plane():
    grid = load_grid(f"{COMPONENTS}:seeds=3")
    variants = list(ablation_variants())
    assert {"full", "no_se", "no_vit", "no_convnext", "no_wide_resnet", "wide_resnet_only", "convnext_only",
            "vit_only"} <= set(variants)
    expected = {(f"synthetic_sij/{plane}", variant, seed)
                for plane in ("axial", "coronal") for variant in variants for seed in range(3)}
    assert {(c.factors["dataset"], c.factors["variant"], c.factors["seed"]) for c in grid.cells} == expected
    assert len(grid.cells) == len(expected)
    assert len({cell.name for cell in grid.cells}) == len(grid.cells)
    cell = next(c for c in grid.cells if c.name == "coronal/no_vit/seed2")
    assert cell.factors == {"dataset": "synthetic_sij/coronal", "variant": "no_vit", "seed": 2}
    assert grid.table.arm == "variant" and grid.table.reference == "full"


@pytest.mark.parametrize("grid_file", [COMPONENTS, BASELINES])
@pytest.mark.parametrize("arg", ["seeds=2", "seeds=2,dataset=bone_mri,folds=3"])
def test_every_seed_of_the_grid_comes_before_the_next_seed(grid_file, arg):
    # A partial grid then already compares all variants on every plane or every fold (the pooled LOPO test set)
    # of the first seeds.
    cells = load_grid(f"{grid_file}:{arg}").cells
    seeds = [cell.factors["seed"] for cell in cells]
    assert seeds == sorted(seeds)
    sets_of_seed_0 = {(c.factors["dataset"], c.factors.get("fold")) for c in cells if c.factors["seed"] == 0}
    assert len(sets_of_seed_0) == (2 if "bone_mri" not in arg else 3)


def test_phantom_cells_are_tested_on_their_plane_and_its_shifted_external_set():
    grid = load_grid(f"{COMPONENTS}:seeds=1,variants=full")
    by_plane = {cell.name.split("/")[0]: cell.evaluations for cell in grid.cells}
    assert by_plane["coronal"] == (Evaluation("test", "synthetic_sij/coronal", "test"),
                                   Evaluation("external", "synthetic_sij/shifted", "test"))
    assert by_plane["axial"] == (Evaluation("test", "synthetic_sij/axial", "test"),
                                 Evaluation("external", "synthetic_sij/shifted_axial", "test"))


def test_a_cell_config_is_the_base_config_with_the_cells_choices():
    grid = load_grid(f"{COMPONENTS}:preset=small,planes=axial,seeds=2,steps=40,variants=full+no_se")
    cell = next(c for c in grid.cells if c.name == "axial/no_se/seed1")
    config = cell.build_config()
    assert (config.model.name, config.model.preset, config.model.variant) == ("asemblenet", "small", "no_se")
    assert (config.seed, config.total_steps, config.data.dataset) == (1, 40, "synthetic_sij/axial")
    # Everything else is the base config's.
    base = load_config(f"{BASE}:model=asemblenet,preset=small,dataset=synthetic_sij/axial,variant=no_se,seed=1")
    assert config.global_batch_size == base.global_batch_size and config.learning_rate == base.learning_rate


def test_bone_mri_cells_are_leave_one_patient_out_folds():
    grid = load_grid(f"{COMPONENTS}:dataset=bone_mri,folds=4,seeds=1,variants=full+vit_only")
    assert len(grid.cells) == 4 * 2
    cell = next(c for c in grid.cells if c.name == "vit_only/seed0/fold3")
    config = cell.build_config()
    assert config.data.dataset == "bone_mri/stir"
    assert config.data.train_split == "fold3_train"
    assert config.data.val_split == "fold3_train"  # no patient can be spared: never the held-out one
    assert cell.evaluations == (Evaluation("test", "bone_mri/stir", "fold3_test"),)
    assert "fold" in grid.table.pooled and "leave-one-patient-out" in grid.notes
    with pytest.raises(GridError, match="coronal"):
        load_grid(f"{COMPONENTS}:dataset=bone_mri,planes=axial")


def test_baselines_share_one_budget_and_one_input_size():
    grid = load_grid(f"{BASELINES}:size=96,seeds=2,planes=coronal,steps=50")
    assert {c.factors["model"] for c in grid.cells} == {"asemblenet", "resnet50", "xception", "inception_v3"}
    configs = [cell.build_config() for cell in grid.cells]
    assert {(c.data.image_size, c.total_steps, c.global_batch_size, c.learning_rate,
             c.model.batch_norm_momentum) for c in configs} == {(96, 50, 32, configs[0].learning_rate, 0.9)}
    own = load_grid(f"{BASELINES}:seeds=1,planes=coronal,bn_momentum=0").cells
    assert {cell.build_config().model.batch_norm_momentum for cell in own} == {0.0}
    assert grid.table.reference == "asemblenet"
    assert {"mcnemar", "delong"} <= set(grid.table.tests)


@pytest.mark.parametrize("arg, message", [
    ("size=64", "at least 75"),  # InceptionV3's minimum input
    ("size=100", "multiple of 16"),
    ("models=resnet50+xception", "include asemblenet"),
    ("bn_momentum=1.5", "bn_momentum"),
    ("bn_momentum=fast", "bn_momentum"),
])
def test_baseline_arguments_are_checked(arg, message):
    with pytest.raises(UserError, match=message):
        load_grid(f"{BASELINES}:{arg}")


@pytest.mark.parametrize("arg, message", [
    ("colour=blue", "not one of"),
    ("seeds=three", "expected a whole number"),
    ("seeds=0", "at least 1"),
    ("variants=full+no_brain", "no_brain"),
    ("variants=no_se", "include full"),
    ("preset=huge", "preset"),
    ("dataset=imagenet", "imagenet"),
    ("planes=sagittal", "sagittal"),
])
def test_component_arguments_are_checked(arg, message):
    with pytest.raises(UserError, match=message):
        load_grid(f"{COMPONENTS}:{arg}")


def test_pretraining_pairs_differ_only_in_initial_weights_from_the_same_variant_and_seed(tmp_path):
    (tmp_path / "coronal").mkdir()
    grid = load_grid(f"{PRETRAINING}:source={tmp_path},variants=full+no_vit,seeds=2,folds=3,steps=40")
    assert len(grid.cells) == 2 * 2 * 3 * 2
    assert (grid.table.arm, grid.table.reference, grid.table.pooled) == ("init", "scratch", ("fold",))
    by_name = {cell.name: cell for cell in grid.cells}
    for cell in grid.cells:
        if cell.factors["init"] == "scratch":
            continue
        twin = by_name[cell.name.replace("/phantom/", "/scratch/")]
        variant, seed = cell.factors["variant"], cell.factors["seed"]
        assert cell.overrides["init_from"] == str(tmp_path / "coronal" / variant / f"seed{seed}")
        assert {k: v for k, v in cell.overrides.items() if k != "init_from"} == twin.overrides
        assert cell.config == twin.config
        assert {k: v for k, v in cell.factors.items() if k != "init"} == {
            k: v for k, v in twin.factors.items() if k != "init"}
    # The scratch arm is the bone_mri component grid's cell of the same variant, seed and fold, run for run.
    components = {c.name: c for c in load_grid(f"{COMPONENTS}:dataset=bone_mri,folds=3,seeds=2,steps=40").cells}
    scratch = by_name["no_vit/scratch/seed1/fold2"]
    assert scratch.identity() | {"name": "", "factors": {}} == components["no_vit/seed1/fold2"].identity() | {
        "name": "", "factors": {}}
    assert scratch.build_config().init_from == ""
    assert by_name["no_vit/phantom/seed1/fold2"].build_config().init_from.endswith("coronal/no_vit/seed1")


@pytest.mark.parametrize("arg, message", [
    ("", "needs source"),
    ("source=/nonexistent/grid", "no coronal/ cells"),
    ("source={tmp},variants=full+no_brain", "no_brain"),
    ("source={tmp},preset=huge", "preset"),
    ("source={tmp},folds=1", "at least 2"),
])
def test_pretraining_arguments_are_checked(tmp_path, arg, message):
    (tmp_path / "coronal").mkdir()
    with pytest.raises(GridError, match=message):
        load_grid(f"{PRETRAINING}:{arg.format(tmp=tmp_path)}")


def _cell(name, variant="full", seed=0, **overrides):
    return Cell(name=name, factors={"variant": variant, "seed": seed}, config=f"{BASE}:preset=tiny",
                overrides=overrides, evaluations=(Evaluation("test", "synthetic_sij/coronal", "test"),))


def test_grids_refuse_duplicate_names_bad_names_and_a_missing_reference():
    spec = TableSpec(arm="variant", reference="full")
    with pytest.raises(GridError, match="several cells"):
        Grid("g", (_cell("a"), _cell("a", seed=1)), spec)
    with pytest.raises(GridError, match="relative path"):
        Grid("g", (_cell("../escape"),), spec)
    with pytest.raises(GridError, match="reference"):
        Grid("g", (_cell("a", variant="no_se"),), spec)
    with pytest.raises(GridError, match="unknown"):
        TableSpec(arm="variant", reference="full", metrics=("auc", "vibes"))


def test_select_takes_shell_patterns_and_says_when_nothing_matches():
    grid = load_grid(f"{COMPONENTS}:seeds=2,variants=full+no_se")
    assert {c.name for c in grid.select("coronal/*/seed1")} == {"coronal/full/seed1", "coronal/no_se/seed1"}
    assert grid.select(None) == grid.cells
    with pytest.raises(GridError, match="no cell"):
        grid.select("sagittal/*")


def test_overrides_reach_every_cell_and_unknown_fields_are_errors():
    grid = load_grid(f"{COMPONENTS}:seeds=1,variants=full,planes=coronal")
    overrides = typed_overrides(grid.cells[0].build_config(), {"total_steps": "20", "data.data_dir": "/tmp/x"})
    assert overrides == {"total_steps": 20, "data.data_dir": "/tmp/x"}  # what grid.json records: typed
    config = grid.with_overrides(overrides).cells[0].build_config()
    assert (config.total_steps, config.data.data_dir) == (20, "/tmp/x")
    with pytest.raises(ConfigError, match="no field 'data.dat_dir'"):
        apply_overrides(config, {"data.dat_dir": "x"})
    with pytest.raises(ConfigError, match="total_steps='many': expected a whole number"):
        apply_overrides(config, {"total_steps": "many"})
    with pytest.raises(ConfigError, match="no field 'model'"):
        apply_overrides(config, {"model": "resnet50"})  # a group is not a field


def test_override_text_takes_the_type_of_its_field():
    config = load_config(f"{ABLATIONS}/base.py")
    applied = apply_overrides(config, {"total_steps": "20", "data.augment": "false", "learning_rate": "3e-4",
                                       "data.dataset": "synthetic_sij/axial", "compilation_cache_dir": ""})
    assert (applied.total_steps, applied.data.augment, applied.learning_rate) == (20, False, 3e-4)
    assert (applied.data.dataset, applied.compilation_cache_dir) == ("synthetic_sij/axial", "")
    for text in ("2e1", "20.0"):
        with pytest.raises(ConfigError, match="whole number"):
            apply_overrides(config, {"total_steps": text})
    with pytest.raises(ConfigError, match="true or false"):
        apply_overrides(config, {"data.augment": "maybe"})
    assert config_flags(["--workdir=w", "--config.total_steps=3", "--config.data.data_dir=a=b"]) == (
        ["--workdir=w"], {"total_steps": "3", "data.data_dir": "a=b"})
    with pytest.raises(ConfigError, match="--config.field.name=value"):
        config_flags(["--config.total_steps"])


def test_config_and_grid_arguments_are_typed_and_strict():
    config = load_config(f"{ABLATIONS}/base.py:seed=3,preset=tiny")
    assert config.seed == 3 and isinstance(config.seed, int) and config.data.image_size == 64
    with pytest.raises(ConfigError, match="'sed=3' is not one of"):
        load_config(f"{ABLATIONS}/base.py:sed=3")
    with pytest.raises(ConfigError, match="seed='one': expected a whole number"):
        load_config(f"{ABLATIONS}/base.py:seed=one")
    with pytest.raises(ConfigError, match="seeds='x'"):
        load_grid(f"{COMPONENTS}:seeds=x")


def test_grid_json_round_trip_and_identity_ignores_where_the_repository_is():
    grid = load_grid(f"{COMPONENTS}:dataset=bone_mri,folds=2,seeds=1,variants=full")
    assert Grid.from_json(grid.to_json()) == grid
    cell = grid.cells[0]
    path, _, arg = cell.config.partition(":")
    moved = Cell.from_json({**cell.to_json(), "config": f"/elsewhere/ablations/{os.path.basename(path)}:{arg}"})
    assert moved.identity() == cell.identity()
    assert Cell.from_json({**cell.to_json(), "overrides": {"total_steps": 1}}).identity() != cell.identity()


def test_tables_are_split_by_every_factor_but_arm_seed_and_fold():
    spec = TableSpec(arm="variant", reference="full", pooled=("fold",))
    assert spec.group_of({"dataset": "bone_mri/stir", "fold": 3, "variant": "no_se", "seed": 1}) == (
        ("dataset", "bone_mri/stir"),)
