"""The factorial component grid: 14 variants that share their cells with the leave-one-out grid, the
compute-matched arm's step counts, and tables of a fabricated factorial workdir whose contributions are known."""
import csv
import os

import numpy as np
import pytest

from asemble_jax import atomic_io
from asemble_jax.evaluation import contributions as shapley
from asemble_jax.grids import factorial, runner, tables
from asemble_jax.grids.grid import GridError, conflicting_cell, load_grid
from asemble_jax.grids.publish import write_tables
from asemble_jax.models.registry import COMPONENTS, ablation_variants, factorial_variants
from asemble_jax.workdir import Workdir

ABLATIONS = os.path.join(os.path.dirname(__file__), os.pardir, "ablations")
COMPONENTS_GRID = os.path.join(ABLATIONS, "components.py")


def _switches(overrides):
    return tuple(overrides.get(c, True) for c in COMPONENTS)


def test_factorial_has_14_variants_every_combination_with_a_branch_once():
    variants = factorial_variants()
    assert len(variants) == 14
    combos = {_switches(o) for o in variants.values()}
    assert len(combos) == 14 and all(any(c[:3]) for c in combos)
    # The leave-one-out variants keep their names and overrides.
    for name, overrides in ablation_variants().items():
        assert _switches(variants[name]) == _switches(overrides)


def test_factorial_grid_shares_cells_with_leave_one_out():
    factorial_grid = load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=3,design=factorial")
    leave_one_out = load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=3")
    assert len(factorial_grid.cells) == 42 and len(leave_one_out.cells) == 24
    assert {c.name for c in leave_one_out.cells} < {c.name for c in factorial_grid.cells}
    assert conflicting_cell(factorial_grid, leave_one_out) is None
    assert factorial_grid.table.contributions == COMPONENTS and not leave_one_out.table.contributions
    other_steps = load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=3,steps=200")
    assert "total_steps" in conflicting_cell(factorial_grid, other_steps)
    # A subset of the factorial variants has no complete game: no contribution section.
    assert not load_grid(f"{COMPONENTS_GRID}:design=factorial,variants=full+no_se").table.contributions
    with pytest.raises(GridError, match="design"):
        load_grid(f"{COMPONENTS_GRID}:design=fractional")
    with pytest.raises(GridError, match="budget"):
        load_grid(f"{COMPONENTS_GRID}:budget=time")


def _components_module():
    from asemble_jax.config import load_module
    return load_module(COMPONENTS_GRID)


def test_matched_steps_rule():
    module = _components_module()
    assert module.matched_steps(300, 0.0112, 0.0112) == 300
    assert module.matched_steps(300, 0.0112, 0.0056) == 600
    assert module.matched_steps(300, 0.0112, 0.000889) == round(300 * 0.0112 / 0.000889)
    assert module.matched_steps(1, 1.0, 1000.0) == 1


def test_compute_matched_grid_gives_each_cell_the_rule_s_steps():
    module = _components_module()
    grid = load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=1,steps=100,budget=flops,"
                     "variants=full+no_vit+vit_only")
    gflops = {v: module._gflops("tiny", "synthetic_sij/coronal", v) for v in ("full", "no_vit", "vit_only")}
    steps = {c.factors["variant"]: c.overrides["total_steps"] for c in grid.cells}
    for variant in steps:
        assert steps[variant] == round(100 * gflops["full"] / gflops[variant])
    assert steps["full"] == 100 and steps["vit_only"] > steps["no_vit"] > 100  # the ViT alone is the cheapest
    assert "Compute-matched" in grid.table.budget


# ---- tables of a fabricated factorial workdir --------------------------------------------------------------------

PATIENTS, SLICES = 24, 4
MAIN = {"use_wide_resnet": 0.25, "use_convnext": 0.05, "use_vit": 0.0, "use_se": 0.02}
PAIR = {("use_wide_resnet", "use_se"): 0.04}


def _auc_of(switches):
    """The AUC each variant is built to have: 0.5 + main effects + the one interaction; the ViT does nothing."""
    on = dict(zip(COMPONENTS, switches))
    value = 0.5 + sum(effect for c, effect in MAIN.items() if on[c])
    return value + sum(b for (a, c), b in PAIR.items() if on[a] and on[c])


def _predictions_with_auc(target):
    """Scores whose slice-level AUC is exactly `target` (a multiple of 1/(positives*negatives)), and patients each
    holding one positive and one negative pair of slices, so every patient is an equal share of the ranking."""
    labels = np.tile([1, 1, 0, 0], PATIENTS)
    n_pos = n_neg = labels.sum()
    # Positives ranked above a share of the negatives: scores from a rank order with exactly k concordant pairs.
    concordant = round(target * n_pos * n_neg)
    order = np.zeros(labels.size)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    order[negatives] = np.arange(n_neg)
    # positive i sits above the first c_i negatives; spread the concordant pairs evenly over the positives
    per = np.full(n_pos, concordant // n_pos)
    per[: concordant % n_pos] += 1
    order[positives] = per - 0.5
    probabilities = (order - order.min() + 1) / (order.max() - order.min() + 2)
    patients = np.repeat([f"p{i:02d}" for i in range(PATIENTS)], SLICES)
    return labels, probabilities, patients


def _write_cell(workdir, cell, labels, probabilities, patients):
    directory = runner.cell_dir(workdir, cell)
    relative = os.path.join("eval", "predictions.csv")
    rows = ["example,patient_id,label,probability"]
    rows += [f"{i},{p},{y},{float(q)!r}" for i, (p, y, q) in enumerate(zip(patients, labels, probabilities))]
    atomic_io.write_text(os.path.join(directory, relative), "\n".join(rows) + "\n")
    atomic_io.write_json(Workdir(directory).cell_record, {
        "name": cell.name, "status": "done", "error": None, "factors": dict(cell.factors), "wall_time_s": 30.0,
        "gflops": 0.01, "params": 1000, "train_images_per_second": 100.0,
        "provenance": {"git_commit": "abc1234", "machine": "test", "versions": {"jax": "0.10.2"}},
        "evaluations": [{"role": role, "predictions": relative, "thresholds": {"0.5": 0.5, "youden": 0.5}}
                        for role in ("test", "external")]})


@pytest.fixture
def factorial_workdir(tmp_path):
    workdir = str(tmp_path / "grid")
    grid = load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=2,design=factorial")
    runner.write_grid_record(grid, workdir, "python scripts/run_ablations.py --grid=... --workdir=grid")
    variants = factorial_variants()
    for cell in grid.cells:
        target = _auc_of(_switches(variants[cell.factors["variant"]]))
        _write_cell(workdir, cell, *_predictions_with_auc(target))
    return workdir, grid


def test_fabricated_game_gives_its_known_contributions(factorial_workdir):
    workdir, grid = factorial_workdir
    collected = tables.collect(workdir, grid, n_resamples=200)
    table = next(t for t in collected.tables if t.role == "test")
    realised = {row.arm: row.mean["auc"] for row in table.rows}
    for variant, overrides in factorial_variants().items():  # the built AUCs, up to the 1/48^2 steps of an AUC
        assert realised[variant] == pytest.approx(_auc_of(_switches(overrides)), abs=1 / 48 ** 2)
    result = factorial.compute(table, grid.table, n_resamples=200, seed=0)
    auc = result.results["auc"]
    # The game: each coalition's variant's AUC, or chance (0.5) for the two without a branch, so SE alone adds
    # nothing and SE's main effect appears only beside a branch: an SE x branch interaction on top of the built one.
    names = factorial.coalition_variants(COMPONENTS)
    values = np.array([0.5 if name is None else realised[name] for name in names])
    assert [name is None for name in names] == [m & 0b0111 == 0 for m in range(16)]
    expected = shapley.shapley_values(values)
    for i, player in enumerate(COMPONENTS):
        assert auc.shapley[player].estimate == pytest.approx(expected[i], abs=1e-12)
    assert sum(auc.shapley[p].estimate for p in COMPONENTS) == pytest.approx(values[15] - 0.5, abs=1e-12)
    # By hand: SE's effect (0.02) needs a branch, so in the one context {SE} (weight 1!2!/4! = 1/12) each branch
    # adds 0.02; the ViT does nothing else, the wide-residual branch also has its own 0.25 and half of the built
    # interaction, and SE keeps what is left of its own effect plus the other half.
    assert auc.shapley["use_vit"].estimate == pytest.approx(0.02 / 12, abs=0.001)
    assert auc.shapley["use_wide_resnet"].estimate == pytest.approx(0.25 + 0.02 / 12 + 0.04 / 2, abs=0.001)
    assert auc.shapley["use_se"].estimate == pytest.approx(0.02 - 3 * 0.02 / 12 + 0.04 / 2, abs=0.001)
    # Two branches are redundant in enabling SE: in the context {SE} (weight 1!1!/3! = 1/6) their second
    # difference is -0.02; elsewhere it is 0.
    assert auc.interactions[("use_wide_resnet", "use_convnext")].estimate == pytest.approx(-0.02 / 6, abs=0.001)
    assert auc.interactions[("use_wide_resnet", "use_se")].estimate > 0.04  # the built one, plus SE's branch need
    # Leave-one-out beside it: full − no_wide_resnet.
    assert result.leave_one_out["use_wide_resnet"]["auc"].difference == pytest.approx(
        values[15] - values[0b1110], abs=1e-9)
    # Identical seeds: no seed-to-seed variance, so the power is the patient variance's alone.
    assert result.power["use_wide_resnet"].seed_variance == pytest.approx(0.0, abs=1e-18)
    assert len(result.adjusted) == (4 + 6) * len(result.metrics)
    assert set(result.metrics) == {"auc", "accuracy", "recall", "specificity"}


def test_written_factorial_tables(factorial_workdir, tmp_path):
    workdir, _ = factorial_workdir
    out = str(tmp_path / "results")
    write_tables(workdir, out, command="python scripts/make_tables.py --workdir=grid --out=results", n_resamples=200)
    md = open(os.path.join(out, "tables.md")).read()
    for text in ("contributions and interactions", "Shapley interaction index", "valued at chance",
                 "Holm", "Benjamini-Hochberg", "Power (two-sided", "Equal steps", "leave-one-out"):
        assert text in md, text
    with open(os.path.join(out, "contributions.csv")) as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    kinds = {(r["role"], r["kind"]) for r in rows}
    assert {("test", "shapley"), ("test", "interaction"), ("test", "leave_one_out"), ("external", "shapley")} <= kinds
    wide = next(r for r in rows if r["role"] == "test" and r["kind"] == "shapley" and r["name"] == "use_wide_resnet"
                and r["metric"] == "auc")
    assert float(wide["p_holm"]) >= float(wide["p"]) and float(wide["q_bh"]) >= float(wide["p"])
    assert float(wide["min_detectable"]) > 0
    assert os.path.getsize(os.path.join(out, "synthetic_sij_coronal_test_contributions.png")) > 1000
    tex = open(os.path.join(out, "tables.tex")).read()
    assert "tab:contributions_synthetic_sij_coronal_test_shapley" in tex
    with open(os.path.join(out, "tables.csv")) as f:
        header = next(csv.reader(line for line in f if not line.startswith("#")))
    assert {"delta_auc_p_holm", "delta_auc_q_bh", "delta_auc_min_detectable"} <= set(header)


def test_leave_one_out_tables_from_a_factorial_workdir(factorial_workdir, tmp_path):
    workdir, _ = factorial_workdir
    out = str(tmp_path / "loo")
    spec = f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=2"
    collected = write_tables(workdir, out, command="make_tables", n_resamples=50, grid_spec=spec)
    assert {row.arm for row in collected.tables[0].rows} == set(ablation_variants())
    assert not os.path.exists(os.path.join(out, "contributions.csv"))
    assert "Tabulated as the grid" in open(os.path.join(out, "tables.md")).read()
    with pytest.raises(tables.TableError, match="does not hold"):
        write_tables(workdir, out, command="make_tables", n_resamples=50,
                     grid_spec=f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=3")


def test_factorial_and_leave_one_out_share_a_workdir_and_its_cells(tmp_path):
    workdir = str(tmp_path / "shared")
    leave_one_out = load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=1")
    factorial_grid = load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=1,design=factorial")
    runner.write_grid_record(leave_one_out, workdir, "leave-one-out")
    done = leave_one_out.cells[0]
    _write_cell(workdir, done, *_predictions_with_auc(0.8))
    runner.write_grid_record(factorial_grid, workdir, "factorial")  # the larger grid: the record becomes it
    stored, command = runner.read_grid_record(workdir)
    assert command == "factorial" and len(stored.cells) == 14
    assert runner.cell_status(workdir, done) == "done"  # trained once, whichever grid asks
    runner.write_grid_record(leave_one_out, workdir, "leave-one-out again")  # a part of it: accepted, kept
    assert runner.read_grid_record(workdir)[1] == "factorial"
    with pytest.raises(runner.RunnerError, match="another grid"):
        runner.write_grid_record(load_grid(f"{COMPONENTS_GRID}:preset=tiny,planes=coronal,seeds=1,steps=5"),
                                 workdir, "other steps")
