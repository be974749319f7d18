"""The LOPO prior check (asemble_jax/grids/prior_check.py, scripts/check_lopo_prior.py) on fabricated grid
records whose answer is known."""
import os
import pathlib
import subprocess
import sys

import pytest

from asemble_jax import atomic_io
from asemble_jax.grids import runner
from asemble_jax.grids.grid import Cell, Evaluation, Grid, TableSpec
from asemble_jax.grids.prior_check import prior_check
from asemble_jax.workdir import GridWorkdir

ROOT = pathlib.Path(__file__).parent.parent
PREVALENCES = [0.2, 0.4, 0.6, 0.8]


def _grid_workdir(workdir, arms: dict, nested: bool = False) -> str:
    """A grid of len(PREVALENCES) folds per arm, every cell done, each predicting with arms[arm]."""
    cells = []
    for arm in arms:
        for k in range(len(PREVALENCES)):
            factors = {"dataset": "bone_mri/stir", "fold": k, "seed": 0}
            factors.update({"variant": "full", "init": arm} if nested else {"variant": arm})
            name = f"full/{arm}/seed0/fold{k}" if nested else f"{arm}/seed0/fold{k}"
            cells.append(Cell(name, factors, "base.py", {}, (Evaluation("test", "bone_mri/stir", f"fold{k}_test"),)))
    table = TableSpec(arm="init" if nested else "variant", reference=next(iter(arms)), pooled=("fold",))
    grid = Grid("lopo", tuple(cells), table, spec="lopo.py")
    runner.write_grid_record(grid, str(workdir), "test")
    for cell in cells:
        arm, k = cell.factors[table.arm], cell.factors["fold"]
        prevalence = PREVALENCES[k]
        labels = [1] * int(10 * prevalence) + [0] * (10 - int(10 * prevalence))
        rest = sum(PREVALENCES) - prevalence
        paths = GridWorkdir(str(workdir)).cell(cell.name)
        atomic_io.write_text(paths.path("eval", "p.csv"), "\n".join(["example,patient_id,label,probability"] + [
            f"{i},p{k},{y},{arms[arm](y, rest, i)}" for i, y in enumerate(labels)]) + "\n")
        atomic_io.write_json(paths.cell_record, {"name": cell.name, "status": "done", "evaluations": [
            {"role": "test", "predictions": "eval/p.csv", "thresholds": {"0.5": 0.5}}]})
    return str(workdir)


def _rows(table: str) -> dict:
    return {line.split("|")[1].strip(): line.split("|") for line in table.splitlines()[2:]}


def prior(y, rest, i):
    # the training prevalence (+ a tiny per-slice jitter): lower when the held-out patient has more positives
    return rest / 3 + 1e-4 * i


def learner(y, rest, i):
    return 0.8 if y else 0.2


def test_a_prior_only_model_shows_negative_correlation_and_auc_below_chance(tmp_path):
    rows = _rows(prior_check(_grid_workdir(tmp_path, {"prior": prior, "learner": learner})))
    assert float(rows["prior"][5]) == pytest.approx(-1.0)
    assert float(rows["prior"][4]) < 0.5
    assert float(rows["learner"][4]) == 1.0 and int(rows["learner"][3]) == 4


def test_arms_nested_under_other_factors_are_told_apart(tmp_path):
    # the pretraining grid: the arm is the initialisation, the variant a factor of its own
    rows = _rows(prior_check(_grid_workdir(tmp_path, {"scratch": prior, "phantom": learner}, nested=True)))
    assert set(rows) == {"full/scratch", "full/phantom"}
    assert float(rows["full/scratch"][5]) == pytest.approx(-1.0)
    assert float(rows["full/phantom"][4]) == 1.0


def test_script_writes_the_table_and_a_non_grid_folder_is_a_one_line_error(tmp_path):
    workdir = _grid_workdir(tmp_path / "grid", {"prior": prior, "learner": learner})
    out = tmp_path / "check.md"
    script = [sys.executable, str(ROOT / "scripts" / "check_lopo_prior.py")]
    done = subprocess.run(script + [f"--workdir={workdir}", f"--out={out}"], capture_output=True, text=True)
    assert done.returncode == 0 and out.read_text() == done.stdout == prior_check(workdir)
    failed = subprocess.run(script + [f"--workdir={tmp_path / 'empty'}"], capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "grid.json" in failed.stderr
    assert os.path.basename(str(tmp_path / "empty")) in failed.stderr
