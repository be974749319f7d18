"""config.tensorboard (asemble_jax/tensorboard_log.py): the trainer's scalars as TensorBoard events in the workdir,
read back with TensorBoard's own readers; after a resume every step appears once, and only as the resumed run
wrote it; a grid workdir is one run per cell."""
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator, event_file_loader, plugin_event_multiplexer
from tensorboard.util import tensor_util

from asemble_jax import tensorboard_log
from asemble_jax.config import apply_overrides, load_config
from asemble_jax.data.builders import build
from asemble_jax.errors import UserError
from asemble_jax.train import trainer
from asemble_jax.workdir import GridWorkdir, Workdir

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("tfds")
    build("bone_mri", data_dir=data_dir, manual_dir=ROOT / "datasets" / "bone_mri" / "dummy_data")
    return os.fspath(data_dir)


def _config(data_dir: str, **overrides):
    config = load_config(f"{ROOT / 'ablations' / 'base.py'}:preset=tiny,dataset=bone_mri/stir")
    return apply_overrides(config, {
        "data.data_dir": data_dir, "data.train_split": "fold0_train", "data.val_split": "fold0_train",
        "data.augment": False, "global_batch_size": 8, "total_steps": STEPS, "warmup_steps": 2, "log_every": 2,
        "eval_every": 4, "checkpoint_every": 2, "max_to_keep": 10, "tensorboard": True,
        "compilation_cache_dir": os.environ["JAX_COMPILATION_CACHE_DIR"], **overrides})


def _events(workdir) -> list:
    """Every scalar event of the workdir's event files as (tag, step, value, wall_time), read file by file with
    TensorBoard's plain loader (no de-duplication of its own; scalars come as the tensors TensorBoard sees)."""
    found = []
    for path in sorted(pathlib.Path(workdir).glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(os.fspath(path)).Load():
            found += [(value.tag, event.step, float(tensor_util.make_ndarray(value.tensor)), event.wall_time)
                      for value in event.summary.value]
    return found


def _records(workdir) -> list[dict]:
    with open(Workdir(workdir).metrics) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory) -> str:
    workdir = os.fspath(tmp_path_factory.mktemp("grid") / "full" / "seed0")
    trainer.train_and_evaluate(_config(data_dir), workdir, progress=False)
    return workdir


def test_every_logged_scalar_is_an_event_at_its_step(uninterrupted):
    accumulator = event_accumulator.EventAccumulator(uninterrupted)
    accumulator.Reload()
    records = _records(uninterrupted)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "fold0_train" and "val_auc" in r]
    assert [r["step"] for r in train] == [2, 4, 6, 8] and [r["step"] for r in val] == [4, 8]
    for tag, key, logged in (("train/loss", "loss", train), ("train/learning_rate", "learning_rate", train),
                             ("fold0_train/auc", "val_auc", val), ("fold0_train/n", "val_n", val)):
        scalars = accumulator.Scalars(tag)
        assert [s.step for s in scalars] == [r["step"] for r in logged], tag
        np.testing.assert_array_equal([s.value for s in scalars], np.float32([r[key] for r in logged]))


def test_a_resumed_run_keeps_no_event_past_the_restored_step(data_dir, uninterrupted, tmp_path):
    """The first run got to step 8 and wrote its events; its checkpoints after step 4 are lost (a kill after the
    events were written, before the checkpoint was), so the rerun redoes steps 5-8. Each step's events must then
    appear once, those after step 4 written by the rerun, with the values of a run that never stopped."""
    workdir = tmp_path / "resumed"
    shutil.copytree(uninterrupted, workdir)
    for step in ("6", "8"):
        shutil.rmtree(workdir / "checkpoints" / step)
    first_run = {(tag, step) for tag, step, _, _ in _events(workdir)}
    assert ("train/loss", 8) in first_run
    rerun_started = time.time()
    trainer.train_and_evaluate(_config(data_dir), os.fspath(workdir), progress=False)

    events = _events(workdir)
    keys = [(tag, step) for tag, step, _, _ in events]
    assert len(keys) == len(set(keys)), "a step appears twice"
    assert set(keys) == first_run
    assert all(wall >= rerun_started for _, step, _, wall in events if step > 4), "an event of the first run past " \
                                                                                  "the restored step survived"
    expected = {(tag, step): value for tag, step, value, _ in _events(uninterrupted) if tag != "train/images_per_second"}
    assert {(tag, step): value for tag, step, value, _ in events if (tag, step) in expected} == expected


def test_a_grid_workdir_is_one_run_per_cell(uninterrupted, tmp_path):
    grid = GridWorkdir(os.fspath(tmp_path / "grid"))
    names = ["coronal/full/seed0", "coronal/no_se/seed0"]
    for name in names:
        shutil.copytree(uninterrupted, grid.cell(name).root)
    multiplexer = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(grid.root)
    multiplexer.Reload()
    scalars = multiplexer.PluginRunToTagToContent("scalars")  # what TensorBoard's scalars page lists
    assert sorted(scalars) == names
    assert all({"train/loss", "fold0_train/auc"} <= set(scalars[name]) for name in names)


def test_long_runs_go_on_in_new_files_each_written_whole(tmp_path):
    log = tensorboard_log.TensorBoardLog(tmp_path, flush_secs=0, segment_bytes=200)
    log.restart([{"step": 1, "split": "train", "loss": 1.0}])
    for step in range(2, 30):
        log.write({"step": step, "split": "train", "loss": 1.0 / step, "note": "not a number"})
    log.close()
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) > 3 and all(f.stat().st_size < 400 for f in files)
    accumulator = event_accumulator.EventAccumulator(os.fspath(tmp_path))
    accumulator.Reload()
    assert accumulator.Tags()["scalars"] == ["train/loss"]
    assert [s.step for s in accumulator.Scalars("train/loss")] == list(range(1, 30))

    log.restart([{"step": 1, "split": "train", "loss": 1.0}])  # a resume at step 1: the later files are gone
    log.close()
    assert [step for _, step, _, _ in _events(tmp_path)] == [1]


def test_without_tensorboardx_it_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    for module in [name for name in sys.modules if name.split(".")[0] == "tensorboardX"] + ["tensorboardX"]:
        monkeypatch.setitem(sys.modules, module, None)  # importing it fails, as without the extra
    with pytest.raises(UserError, match=r"asemble_jax\[tensorboard\]"):
        tensorboard_log.TensorBoardLog(tmp_path)
    tensorboard_log.TensorBoardLog(tmp_path, enabled=False).restart([{"step": 1, "loss": 1.0}])
    assert not list(tmp_path.iterdir())


def test_events_in_a_workdir_on_gcs_are_whole_objects_replaced_at_a_restart(gcs_bucket, tmp_path):
    from asemble_jax import storage

    run = f"{gcs_bucket}/grid/coronal/full/seed0"
    log = tensorboard_log.TensorBoardLog(run, flush_secs=0)
    log.restart([{"step": 1, "split": "train", "loss": 1.0}, {"step": 2, "split": "train", "loss": 0.5}])
    log.write({"step": 3, "split": "train", "loss": 0.25})
    log.close()
    resumed = tensorboard_log.TensorBoardLog(run)  # a resume at step 2: step 3 of the first run must go
    resumed.restart([{"step": 1, "split": "train", "loss": 1.0}, {"step": 2, "split": "train", "loss": 0.5}])
    resumed.write({"step": 3, "split": "train", "loss": 0.125})
    resumed.close()
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name in storage.listdir(run):
        (downloaded / name).write_bytes(storage.read_bytes(f"{run}/{name}"))
    assert [(step, value) for _, step, value, _ in _events(downloaded)] == [(1, 1.0), (2, 0.5), (3, 0.125)]
    assert not [p for p in (ROOT, pathlib.Path.cwd(), tmp_path) for q in p.iterdir() if q.name.startswith("gs:")]
