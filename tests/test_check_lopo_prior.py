"""scripts/check_lopo_prior.py on fabricated LOPO predictions whose answer is known."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parent.parent
spec = importlib.util.spec_from_file_location("check_lopo_prior", ROOT / "scripts" / "check_lopo_prior.py")
check_lopo_prior = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_lopo_prior)


def _write_folds(workdir, arm, predict):
    prevalences = [0.2, 0.4, 0.6, 0.8]
    for k, prevalence in enumerate(prevalences):
        labels = [1] * int(10 * prevalence) + [0] * (10 - int(10 * prevalence))
        folder = workdir / arm / "seed0" / f"fold{k}" / "eval"
        folder.mkdir(parents=True)
        lines = ["example,patient_id,label,probability"] + [
            f"{i},p{k},{y},{predict(y, prevalence, sum(prevalences) - prevalence, i)}" for i, y in enumerate(labels)]
        (folder / f"bone_mri_stir_fold{k}_test_predictions.csv").write_text("\n".join(lines) + "\n")


def test_a_prior_only_model_shows_negative_correlation_and_auc_below_chance(tmp_path, capsys):
    # predicts the training prevalence (+ a tiny per-slice jitter): lower when the held-out patient has more positives
    _write_folds(tmp_path, "prior", lambda y, prev, rest, i: rest / 3 + 1e-4 * i)
    _write_folds(tmp_path, "learner", lambda y, prev, rest, i: 0.8 if y else 0.2)
    assert check_lopo_prior.main([f"--workdir={tmp_path}"]) == 0
    rows = {line.split("|")[1].strip(): line.split("|") for line in capsys.readouterr().out.splitlines()[2:]}
    assert float(rows["prior"][5]) == pytest.approx(-1.0)
    assert float(rows["prior"][4]) < 0.5
    assert float(rows["learner"][4]) == 1.0


def test_arms_nested_in_several_folders_are_told_apart(tmp_path, capsys):
    # the pretraining grid's cells are VARIANT/INIT/seedS/foldK
    _write_folds(tmp_path, "full/scratch", lambda y, prev, rest, i: rest / 3 + 1e-4 * i)
    _write_folds(tmp_path, "full/phantom", lambda y, prev, rest, i: 0.8 if y else 0.2)
    assert check_lopo_prior.main([f"--workdir={tmp_path}"]) == 0
    rows = {line.split("|")[1].strip(): line.split("|") for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"full/scratch", "full/phantom"}
    assert float(rows["full/scratch"][5]) == pytest.approx(-1.0)
    assert float(rows["full/phantom"][4]) == 1.0 and int(rows["full/phantom"][3]) == 4


def test_a_workdir_without_predictions_is_a_one_line_error(tmp_path, capsys):
    assert check_lopo_prior.main([f"--workdir={tmp_path}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
