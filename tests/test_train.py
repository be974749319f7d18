"""The trainer end to end on a tiny learnable dataset: learning, resume, preemption, NaN guard, config guard."""
import json
import os
import signal

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from asemble_jax.data import examples, pipeline
from asemble_jax import workdir as workdir_lib
from asemble_jax.train import trainer
from asemble_jax.config import apply_overrides, load_config

ABLATIONS_BASE = os.path.join(os.path.dirname(__file__), os.pardir, "ablations", "base.py")


class TrainerToy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Healthy: noise. AS: noise plus a bright disc at a random place. Learnable in a few dozen steps."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=examples.features())

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 96), "val": self._generate_examples(1, 32)}

    def _generate_examples(self, seed, count):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:256, :256]
        for i in range(count):
            label = i % 2
            image = rng.normal(90, 25, (256, 256))
            if label:
                cy, cx = rng.integers(60, 196, 2)
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < 40 ** 2] += 110
            yield i, {"image": examples.encode_png(np.clip(image, 0, 255).astype(np.uint8)), "label": label,
                      "patient_id": f"toy-{seed}-{i // 4}", "source": "toy", "plane": "coronal", "attribution": ""}


@pytest.fixture(scope="module")
def toy_data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    TrainerToy(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
        file_format="array_record")
    return str(data_dir)


# Every run below compiles the same programs: the persistent cache that conftest.py sets up compiles them once.
COMPILATION_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]


def _config(data_dir, **overrides):
    config = load_config(f"{ABLATIONS_BASE}:model=asemblenet,preset=tiny,dataset=trainer_toy")
    config.data.data_dir = data_dir
    config.data.augment = False
    config.global_batch_size = 16
    config.total_steps = 8
    config.warmup_steps = 2
    config.log_every = 2
    config.eval_every = 4
    config.checkpoint_every = 2
    config.compilation_cache_dir = COMPILATION_CACHE
    return apply_overrides(config, overrides)


def _final_params(workdir):
    model, _, step = workdir_lib.load_trained_model(workdir, which="latest")
    from flax import nnx
    return step, jax.tree.leaves(jax.device_get(nnx.state(model, nnx.Param)))


@pytest.fixture(scope="module")
def uninterrupted(toy_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    trainer.train_and_evaluate(_config(toy_data_dir), workdir, progress=False)
    return workdir


def test_config_json_reloads_to_the_same_config(toy_data_dir, uninterrupted):
    assert json.loads(workdir_lib.read_config(uninterrupted).to_json(sort_keys=True)) == json.loads(
        _config(toy_data_dir).to_json_best_effort(sort_keys=True))


def test_metrics_log_has_training_and_validation_records(uninterrupted):
    with open(os.path.join(uninterrupted, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in train] == [2, 4, 6, 8]
    assert [r["step"] for r in val] == [4, 8]
    assert all(r["images_per_second"] > 0 and r["learning_rate"] > 0 for r in train)
    assert all(r["val_n"] == 32 for r in val), "every validation example counts exactly once"


class _SigtermAfter:
    """Wraps the training iterator; sends this process SIGTERM after `count` batches, as a TPU preemption would."""

    def __init__(self, inner, count):
        self.inner, self.count = inner, count

    def __next__(self):
        batch = next(self.inner)
        self.count -= 1
        if self.count == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_preempted_and_resumed_run_ends_with_the_same_parameters(toy_data_dir, uninterrupted, tmp_path,
                                                                   monkeypatch):
    workdir = str(tmp_path / "preempted")
    real_iterator = pipeline.train_iterator
    monkeypatch.setattr(pipeline, "train_iterator", lambda *a, **k: _SigtermAfter(real_iterator(*a, **k), 5))
    trainer.train_and_evaluate(_config(toy_data_dir), workdir, progress=False)
    step, _ = _final_params(workdir)
    assert step == 5, "SIGTERM after the 5th batch must checkpoint step 5 and stop"

    monkeypatch.setattr(pipeline, "train_iterator", real_iterator)
    trainer.train_and_evaluate(_config(toy_data_dir), workdir, progress=False)
    resumed_step, resumed = _final_params(workdir)
    final_step, expected = _final_params(uninterrupted)
    assert resumed_step == final_step == 8
    for a, b in zip(resumed, expected):
        np.testing.assert_array_equal(a, b)  # bit for bit on CPU
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if json.loads(line)["split"] == "train"]
    assert steps == [2, 4, 6, 8], "records written after the restored step are not duplicated"


def test_loss_falls_within_thirty_steps(toy_data_dir, tmp_path):
    workdir = str(tmp_path / "learn")
    metrics = trainer.train_and_evaluate(_config(toy_data_dir, total_steps=30, eval_every=30, log_every=5,
                                                 checkpoint_every=30, learning_rate=3e-3), workdir, progress=False)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f if json.loads(line)["split"] == "train"]
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses
    assert metrics["auc"] > 0.8


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(toy_data_dir, tmp_path, monkeypatch):
    real_iterator = pipeline.train_iterator

    def poisoned(*args, **kwargs):
        inner = real_iterator(*args, **kwargs)

        class Poisoned(_SigtermAfter):
            def __next__(self):
                batch = next(self.inner)
                self.count -= 1
                if self.count <= 0:
                    batch = dict(batch, image=np.full_like(batch["image"], np.nan))
                return batch

        return Poisoned(inner, 3)

    monkeypatch.setattr(pipeline, "train_iterator", poisoned)
    workdir = str(tmp_path / "nan")
    with pytest.raises(trainer.TrainingError, match="at step 3"):
        trainer.train_and_evaluate(_config(toy_data_dir), workdir, progress=False)
    step, params = _final_params(workdir)
    assert step == 2 and all(np.all(np.isfinite(p)) for p in params)


def test_workdir_with_another_config_is_refused_unless_allowed(toy_data_dir, uninterrupted):
    changed = _config(toy_data_dir, learning_rate=0.5)
    with pytest.raises(trainer.TrainingError, match="learning_rate"):
        trainer.train_and_evaluate(changed, uninterrupted, progress=False)


def test_unknown_variant_is_a_clear_error(toy_data_dir, tmp_path):
    with pytest.raises(workdir_lib.WorkdirError, match="unknown model variant"):
        trainer.train_and_evaluate(_config(toy_data_dir, **{"model.variant": "no_fusion"}), str(tmp_path),
                                   progress=False)


def test_evaluation_report_matches_its_own_predictions(uninterrupted, tmp_path):
    from sklearn.metrics import roc_auc_score

    from asemble_jax.evaluation.evaluate import evaluate_workdir

    report = evaluate_workdir(uninterrupted, split="val", out_dir=str(tmp_path), n_resamples=200)
    stem = tmp_path / "trainer_toy_val"
    for suffix in (".json", ".md", "_predictions.csv", "_roc.png", "_confusion.png", "_calibration.png"):
        assert (tmp_path / f"trainer_toy_val{suffix}").stat().st_size > 0, suffix
    rows = (tmp_path / "trainer_toy_val_predictions.csv").read_text().splitlines()[1:]
    labels = np.array([int(r.split(",")[2]) for r in rows])
    probs = np.array([float(r.split(",")[3]) for r in rows])
    assert report["n"] == len(rows) == 32 and report["n_patients"] == 8
    auc = report["thresholds"]["0.5"]["auc"]
    assert auc["estimate"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-6)
    assert auc["ci_low"] <= auc["estimate"] <= auc["ci_high"]
    assert json.loads((tmp_path / "trainer_toy_val.json").read_text())["thresholds"].keys() == {"0.5", "youden"}
    assert stem.with_suffix(".md").read_text().startswith("# trainer_toy / val")


def test_initial_weights_are_the_source_runs_best_checkpoint(toy_data_dir, uninterrupted):
    from flax import nnx
    config = _config(toy_data_dir, init_from=uninterrupted)
    fresh = trainer.training_program(config).state
    state = trainer.initialised_from(fresh, config)
    source, _, _ = workdir_lib.load_trained_model(uninterrupted, which="best")
    expected = jax.tree.leaves(jax.device_get(nnx.state(source, nnx.Param)))
    for got, want in zip(jax.tree.leaves(jax.device_get(state.params)), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(expected, jax.tree.leaves(jax.device_get(fresh.params))))
    assert int(state.step) == 0


def test_fine_tuning_starts_from_the_source_once_then_resumes_its_own_checkpoints(toy_data_dir, uninterrupted,
                                                                                  tmp_path, monkeypatch):
    calls = []
    real = trainer.initialised_from
    monkeypatch.setattr(trainer, "initialised_from", lambda state, config: calls.append(1) or real(state, config))
    workdir = str(tmp_path / "finetune")
    config = _config(toy_data_dir, init_from=uninterrupted, total_steps=4)
    trainer.train_and_evaluate(config, workdir, progress=False)
    trainer.train_and_evaluate(_config(toy_data_dir, init_from=uninterrupted), workdir, allow_config_change=True,
                               progress=False)
    assert calls == [1], "the second run resumed from its own step-4 checkpoint"
    assert _final_params(workdir)[0] == 8


@pytest.mark.parametrize("override, field", [({"model.preset": "small"}, "model.preset"),
                                             ({"data.image_size": 128}, "data.image_size")])
def test_initial_weights_from_another_architecture_are_refused(toy_data_dir, uninterrupted, override, field):
    config = _config(toy_data_dir, init_from=uninterrupted, **override)
    with pytest.raises(trainer.TrainingError, match=f"differs from this one in {field}"):
        trainer.initialised_from(None, config)


def test_batch_norm_momentum_override_reaches_every_batch_norm(toy_data_dir):
    from flax import nnx

    def momenta(config):
        return {node.momentum for _, node in nnx.iter_graph(workdir_lib.build_model(config))
                if isinstance(node, nnx.BatchNorm)}

    assert momenta(_config(toy_data_dir)) == {0.9}  # the wide-ResNet branch's own (PyTorch's default)
    assert momenta(_config(toy_data_dir, **{"model.batch_norm_momentum": 0.99})) == {0.99}
    with pytest.raises(workdir_lib.WorkdirError, match="batch_norm_momentum"):
        workdir_lib.build_model(_config(toy_data_dir, **{"model.batch_norm_momentum": 1.5}))


def test_config_guard_accepts_fields_added_since_the_run_started_and_nothing_else(toy_data_dir, tmp_path):
    config, path = _config(toy_data_dir), tmp_path / "config.json"
    trainer.guard_workdir_config(str(tmp_path), config, allow_change=False)
    stored = json.loads(path.read_text())
    del stored["init_from"], stored["model"]["batch_norm_momentum"]  # a run started before these fields existed
    path.write_text(json.dumps(stored))
    trainer.guard_workdir_config(str(tmp_path), config, allow_change=False)
    assert json.loads(path.read_text())["model"]["batch_norm_momentum"] == 0.0, "config.json is brought up to date"

    stored["model"]["dropped_field"] = 1  # a field the code no longer has: the run cannot be reproduced by it
    path.write_text(json.dumps(stored))
    with pytest.raises(trainer.TrainingError, match=r"changed: model\.dropped_field\)"):
        trainer.guard_workdir_config(str(tmp_path), config, allow_change=False)
    with pytest.raises(trainer.TrainingError, match=r"changed: model\.dropped_field, seed\)"):
        trainer.guard_workdir_config(str(tmp_path), _config(toy_data_dir, seed=5), allow_change=False)


def test_global_batch_not_divisible_by_the_devices_is_a_one_line_error(toy_data_dir):
    with pytest.raises(trainer.TrainingError, match="not divisible by the 8 devices"):
        trainer.training_program(_config(toy_data_dir, global_batch_size=12))


def _copy_without_latest(uninterrupted, tmp_path, keep_best: bool) -> str:
    """The uninterrupted workdir as a kill leaves it: every latest checkpoint gone (killed while the first was
    written, or after best/S was complete but before S was), best/ kept or gone."""
    import shutil

    workdir = str(tmp_path / "killed")
    shutil.copytree(uninterrupted, workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    for name in os.listdir(checkpoints):
        if name != "best" or not keep_best:
            shutil.rmtree(os.path.join(checkpoints, name))
    return workdir


def test_a_kill_between_best_and_latest_checkpoint_still_resumes(toy_data_dir, uninterrupted, tmp_path):
    """Issue 18, 1: best/S complete, latest S not: the rerun reaches S again and must neither re-save best/S
    (Orbax: StepAlreadyExistsError, for ever) nor count the same AUC as an improvement."""
    workdir = _copy_without_latest(uninterrupted, tmp_path, keep_best=True)
    best_steps = sorted(os.listdir(os.path.join(workdir, "checkpoints", "best")))
    result = trainer.train_and_evaluate(_config(toy_data_dir), workdir, progress=False)
    assert result["step"] == 8 and not result["already_finished"]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "best"))) == best_steps
    (step, resumed), (_, expected) = _final_params(workdir), _final_params(uninterrupted)
    assert step == 8
    for a, b in zip(resumed, expected):
        np.testing.assert_array_equal(a, b)


def test_a_fresh_start_after_a_kill_does_not_duplicate_metrics(toy_data_dir, uninterrupted, tmp_path):
    """Issue 18, 2: no readable checkpoint, but metrics.jsonl has records: the fresh start drops them."""
    workdir = _copy_without_latest(uninterrupted, tmp_path, keep_best=False)
    trainer.train_and_evaluate(_config(toy_data_dir), workdir, progress=False)

    def steps(path):
        with open(os.path.join(path, "metrics.jsonl")) as f:
            return [(r["step"], r["split"]) for r in map(json.loads, f)]

    assert steps(workdir) == steps(uninterrupted)


def test_rerunning_a_finished_workdir_reports_its_result(toy_data_dir, uninterrupted):
    """Issue 18, 3: nothing to train; the step and the last validation figures come back."""
    result = trainer.train_and_evaluate(_config(toy_data_dir), uninterrupted, progress=False)
    with open(os.path.join(uninterrupted, "metrics.jsonl")) as f:
        last = [r for r in map(json.loads, f) if r["split"] == "val"][-1]
    assert result["already_finished"] and result["step"] == 8
    assert result["auc"] == last["val_auc"] and result["n"] == 32


def test_an_error_that_is_not_the_users_is_one_line_with_its_traceback_in_the_workdir(toy_data_dir, tmp_path):
    """Issue 18, 4: an Orbax (or any other) exception reaching scripts/train.py is one line naming the workdir."""
    workdir = tmp_path / "broken"
    workdir.mkdir()
    (workdir / "checkpoints").write_text("a file where the checkpoint folder belongs")
    with pytest.raises(trainer.TrainingError) as raised:
        trainer.train_logging_failures(_config(toy_data_dir), str(workdir), progress=False)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{workdir}: training stopped by ")
    assert "train.log" in message and "Traceback" in (workdir / "train.log").read_text()
