"""The default number of grain worker processes (asemble_jax/data/pipeline.py:default_worker_count): the rule,
that the config's -1 reaches it, and that a run resumes across worker counts (its batches do not depend on it)."""
import importlib.util
import json
import os
import pathlib

import pytest

from asemble_jax.config import load_config
from asemble_jax.data import pipeline
from asemble_jax.data.pipeline import AUTO_WORKERS, MAX_DEFAULT_WORKERS, default_worker_count, train_iterator
from asemble_jax.train import trainer

REPO = pathlib.Path(__file__).resolve().parent.parent
# The pipeline tests' records and batch comparisons.
_spec = importlib.util.spec_from_file_location("tests.test_pipeline", REPO / "tests" / "test_pipeline.py")
_pipeline_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pipeline_tests)
SIZE, fake_source, take, assert_same_batches = (_pipeline_tests.SIZE, _pipeline_tests.fake_source,
                                                _pipeline_tests.take, _pipeline_tests.assert_same_batches)


@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 0), (3, 2), (4, 3), (16, 15), (33, 32), (192, 32)])
def test_one_worker_per_core_but_one_and_none_on_two_cores(cores, workers):
    assert default_worker_count(cores) == workers
    assert workers <= MAX_DEFAULT_WORKERS


def test_this_hosts_default_counts_the_cores_this_process_may_use():
    assert default_worker_count() == default_worker_count(len(os.sched_getaffinity(0)))


def test_the_config_asks_for_the_hosts_default():
    config = load_config(os.path.join(REPO, "ablations", "base.py"))
    assert config.data.worker_count == AUTO_WORKERS


def test_auto_gives_the_batches_of_an_explicit_count(monkeypatch):
    source = fake_source(12)
    expected = take(train_iterator([(source, 1.0)], global_batch_size=4, seed=3, image_size=SIZE, worker_count=0), 3)
    picked = []
    monkeypatch.setattr(pipeline, "default_worker_count", lambda: picked.append(True) or 0)
    auto = train_iterator([(source, 1.0)], global_batch_size=4, seed=3, image_size=SIZE, worker_count=AUTO_WORKERS)
    assert picked, "AUTO_WORKERS goes through default_worker_count"
    assert_same_batches(take(auto, 3), expected)


def test_a_negative_count_other_than_auto_is_refused():
    with pytest.raises(ValueError, match="worker_count"):
        train_iterator([(fake_source(4), 1.0)], global_batch_size=2, seed=0, image_size=SIZE, worker_count=-2)


def test_a_run_resumes_under_another_worker_count_but_not_another_seed(tmp_path):
    config = load_config(os.path.join(REPO, "ablations", "base.py"))
    trainer.guard_workdir_config(str(tmp_path), config, allow_change=False)
    stored = json.loads((tmp_path / "config.json").read_text())
    stored["data"]["worker_count"] = 0  # a run started when the default was 0
    (tmp_path / "config.json").write_text(json.dumps(stored))
    trainer.guard_workdir_config(str(tmp_path), config, allow_change=False)
    config.seed = 5
    with pytest.raises(trainer.TrainingError, match=r"changed: seed\)"):
        trainer.guard_workdir_config(str(tmp_path), config, allow_change=False)
