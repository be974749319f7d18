"""Checkpoints survive a corrupt latest step; metrics logs survive a resume; evaluation metrics match sklearn."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from asemble_jax.evaluation.metrics import classification_metrics
from asemble_jax import checkpoint
from asemble_jax.metrics_log import MetricsLog


def _state(value: float):
    return {"w": jnp.full((3, 2), value, jnp.float32), "step": jnp.array(int(value), jnp.int32)}


def test_restore_falls_back_when_latest_checkpoint_is_corrupt(tmp_path, caplog):
    with checkpoint.Checkpoints(tmp_path, max_to_keep=3) as ckpts:
        for step in (1, 2):
            ckpts.save(step, _state(step), {"iterator": {"position": step}})
        ckpts.wait()
        # Truncate every data file of step 2: the kind of damage a full disk or a killed copy leaves.
        damaged = 0
        for root, _, files in os.walk(tmp_path / "2"):
            for name in files:
                if not name.endswith(".json") and "metadata" not in name:
                    open(os.path.join(root, name), "wb").close()
                    damaged += 1
        assert damaged, "expected array data files inside the checkpoint"
        restored = ckpts.restore_latest(checkpoint.abstract_like(_state(0)))
    assert restored is not None
    step, state, data = restored
    assert step == 1 and data == {"iterator": {"position": 1}}
    np.testing.assert_array_equal(state["w"], np.ones((3, 2)))
    assert "unreadable" in caplog.text


def test_best_checkpoint_is_kept_apart_from_max_to_keep(tmp_path):
    with checkpoint.Checkpoints(tmp_path, max_to_keep=1) as ckpts:
        ckpts.save_best(1, _state(1), {})
        for step in (2, 3, 4):
            ckpts.save(step, _state(step), {})
        ckpts.wait()
        assert ckpts.best_step() == 1 and ckpts.latest_step() == 4
    weights = {"w": checkpoint.abstract_like(_state(0))["w"]}
    assert checkpoint.restore_weights(tmp_path, weights, "best")[0] == 1
    assert checkpoint.restore_weights(tmp_path, weights, "latest")[0] == 4


def test_weights_are_restored_without_the_rest_of_the_state(tmp_path):
    """Inference reads the named fields only: an optimiser state whose structure it cannot know stays on disk."""
    with checkpoint.Checkpoints(tmp_path, max_to_keep=2) as ckpts:
        ckpts.save(3, {**_state(3), "opt_state": {"mu": jnp.ones(5), "count": jnp.int32(7)}}, {})
    step, parts = checkpoint.restore_weights(tmp_path, {"w": jax.ShapeDtypeStruct((3, 2), jnp.float32)}, "best")
    assert step == 3 and set(parts) == {"w"}  # no best step saved: the latest one stands in
    assert isinstance(parts["w"], jax.Array)  # placed on a device, as a freshly built model's weights are
    np.testing.assert_array_equal(parts["w"], np.full((3, 2), 3.0))


def test_no_checkpoint_restores_nothing(tmp_path):
    with checkpoint.Checkpoints(tmp_path, max_to_keep=2) as ckpts:
        assert ckpts.restore_latest(checkpoint.abstract_like(_state(0))) is None
    assert checkpoint.restore_weights(tmp_path / "absent", {"w": checkpoint.abstract_like(_state(0))["w"]},
                                      "best") is None


def test_a_failure_in_the_block_lets_the_save_in_flight_complete_and_keeps_its_own_error(tmp_path):
    """The block's error is what the caller sees, and the checkpoint being written when it came is complete on
    leaving the block (not torn down later by the interpreter's exit)."""
    state = {f"w{i}": jnp.full((256, 1024), float(i), jnp.float32) for i in range(40)}  # 42 MB in 40 arrays
    with pytest.raises(KeyError, match="the block's own"):
        with checkpoint.Checkpoints(tmp_path, max_to_keep=1) as ckpts:
            ckpts.save(5, state, {})  # returns while its writes go on in the background
            raise KeyError("the block's own")
    abstract = checkpoint.abstract_like({"w39": state["w39"]})
    step, parts = checkpoint.restore_weights(tmp_path, abstract, "latest")
    assert step == 5
    np.testing.assert_array_equal(parts["w39"], np.full((256, 1024), 39.0))


def test_metrics_log_drops_records_after_the_restored_step(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (10, 20, 30):
        log.write({"step": step, "loss": np.float32(0.5), "auc": float("nan")})
    log.truncate_after(20)
    records = log.read()
    assert [r["step"] for r in records] == [10, 20]
    assert records[0]["loss"] == 0.5 and records[0]["auc"] == "nan"  # valid JSON, no bare NaN
    json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])


def test_disabled_metrics_log_writes_nothing(tmp_path):
    MetricsLog(tmp_path / "m.jsonl", enabled=False).write({"step": 1})
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    m = classification_metrics(labels, probs, threshold=0.5)
    predictions = (probs >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, predictions))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, predictions))
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - labels, 1 - predictions))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, predictions))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, probs))
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, predictions).tolist()


def test_metrics_with_one_class_report_nan_not_zero():
    m = classification_metrics(np.zeros(5, int), np.full(5, 0.2))
    assert np.isnan(m["auc"]) and np.isnan(m["recall"]) and m["specificity"] == 1.0
