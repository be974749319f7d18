"""The Ray engine on a real local Ray and a real two-node Ray cluster on this machine: the same tiny grid as the
local runner gives the same predictions and tables, a failed cell is recorded and not retried, cells land on the
nodes their resources name, and a cell whose node dies mid-training is retried, resumes from its checkpoint, and
ends with the parameters of an uninterrupted run; a grid workdir on the local GCS server (conftest's `gcs`) runs under
Ray as on a disk. Ray starts slowly on two loaded cores: one instance per class."""
import csv
import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from asemble_jax import storage  # noqa: E402
from asemble_jax.data.builders import build  # noqa: E402
from asemble_jax.grids import cell as cell_lib  # noqa: E402
from asemble_jax.grids import ray_engine, runner  # noqa: E402
from asemble_jax.grids.grid import load_grid, parse_resources  # noqa: E402
from asemble_jax.grids.publish import write_tables  # noqa: E402
from asemble_jax.workdir import Workdir, load_weights  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 8
BROKEN = "full/seed0/fold1"  # a config typo: fails before training


def _quiet(message):
    pass


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    build("bone_mri", data_dir=directory, manual_dir=ROOT / "datasets" / "bone_mri" / "dummy_data")
    return str(directory)


SPEC = f"{ROOT}/ablations/components.py:dataset=bone_mri,folds=3,variants=full,seeds=2,steps={STEPS}"


def _overrides(data_dir):
    return {"data.data_dir": data_dir, "checkpoint_every": 2, "eval_every": 4, "log_every": 1,
            "compilation_cache_dir": os.environ["JAX_COMPILATION_CACHE_DIR"]}


def _grid(data_dir):
    """Two seeds of one tiny cell (one program to compile, shared through the compilation cache) and a broken
    cell."""
    grid = load_grid(SPEC).with_overrides(_overrides(data_dir))
    broken = dataclasses.replace(grid.select(BROKEN)[0],
                                 overrides={**grid.cells[0].overrides, "data.no_such_field": 1})
    return dataclasses.replace(grid, cells=grid.select("*/fold0") + (broken,))


@pytest.fixture(scope="module")
def local_run(data_dir, tmp_path_factory):
    """The grid under the local runner (subprocess cells), the reference of every comparison."""
    workdir = str(tmp_path_factory.mktemp("local") / "grid")
    summary = runner.run_grid(_grid(data_dir), workdir, report=_quiet)
    assert summary.failed == [BROKEN] and len(summary.ran) == 3
    return workdir


def _predictions(workdir, cell_name):
    """The cell's evaluation CSVs by name (a local workdir or gs://)."""
    folder = f"{workdir}/{cell_name}/eval"
    return {name: storage.read_bytes(f"{folder}/{name}") for name in sorted(storage.listdir(folder))
            if name.endswith(".csv")}


def _tables(workdir, out):
    """tables.csv without its provenance lines (workdir, commit, dates) and the training speed (a timing)."""
    write_tables(workdir, str(out), command="test", n_resamples=50)
    lines = [line for line in (out / "tables.csv").read_text().splitlines() if not line.startswith("#")]
    rows = list(csv.reader(lines))
    speed = rows[0].index("train_images_per_second")
    return [row[:speed] + row[speed + 1:] for row in rows]


def _latest_weights(cell_dir):
    """The step and every array of the latest checkpoint's weights (parameters, BatchNorm statistics, RNG keys)."""
    _, weights, _, step = load_weights(cell_dir, which="latest")
    leaves = jax.tree_util.tree_leaves((weights.params, weights.batch_stats, weights.other))
    return step, [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
                  for x in leaves]


def _nodes_of_log(cell_dir) -> list[str]:
    """The Ray node of every attempt, as the task wrote it at the head of its output."""
    try:
        text = storage.read_text(Workdir(cell_dir).cell_log)
    except FileNotFoundError:
        return []
    return re.findall(r"^ray: node ([0-9a-f]+),", text, flags=re.M)


def test_resources_parse_and_become_task_options():
    assert parse_resources("GPU=1") == {"GPU": 1.0}
    assert ray_engine.task_options({"CPU": 4, "GPU": 0.5, "TPU": 4, "left": 1}) == {
        "num_cpus": 4, "num_gpus": 0.5, "resources": {"TPU": 4, "left": 1}}
    assert ray_engine.slots({"GPU": 1, "CPU": 2}, {"GPU": 8.0, "CPU": 12.0}) == 6
    assert ray_engine.slots({"TPU": 4}, {"CPU": 96.0}) == 0


@pytest.fixture(scope="class")
def local_ray(gcs):
    """Ray's workers, and so the cells, take the driver's environment at ray.init: conftest's GCS server (and the
    variables that point gcsfs and tensorstore at it) comes first."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="class")
def cluster():
    """A head that runs no cell (no CPU) and two nodes of one CPU each, told apart by a custom resource; yields
    the cluster and the node id of each side."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {name: cluster.add_node(num_cpus=1, resources={name: 1}) for name in ("left", "right")}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster, {name: node.node_id for name, node in nodes.items()}
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.parametrize("flags, message", [
    (["--address=auto"], "--address and --cell_resources go with --engine=ray"),
    (["--engine=ray", "--in_process"], "--in_process goes with --engine=local"),
    (["--engine=ray", "--cell_resources=GPU"], "resources 'GPU': each item is NAME=AMOUNT"),
    (["--engine=ray", "--address=127.0.0.1:1"], "no Ray cluster at --address=127.0.0.1:1"),
])
def test_flags_that_cannot_work_are_one_line_and_touch_nothing(flags, message, tmp_path, capsys):
    import importlib.util

    from asemble_jax.errors import run_main

    spec = importlib.util.spec_from_file_location("run_ablations_script", ROOT / "scripts" / "run_ablations.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    workdir = tmp_path / "grid"
    status = run_main(script.main, [f"--grid={ROOT}/ablations/components.py:seeds=1,variants=full,planes=coronal",
                                    f"--workdir={workdir}", *flags])
    assert status == 2 and message in capsys.readouterr().err and not workdir.exists()


def _run_like_the_local_runner(grid, workdir, local_run, tables):
    """Runs the grid on Ray: every cell once, the broken one failed with its error, the predictions of the others
    the local runner's bit for bit, and the same tables; returns the summary."""
    messages = []
    summary = ray_engine.run_grid(grid, workdir, report=messages.append)
    assert sorted(summary.ran) == sorted(cell.name for cell in grid.cells) and summary.failed == [BROKEN]
    assert not summary.not_done and not summary.interrupted
    assert "queued 3 cell(s) on Ray (2 at a time)" in messages[0] and "ETA" in messages[-1]
    failed = cell_lib.read_record(runner.cell_dir(workdir, grid.select(BROKEN)[0]))
    assert failed["status"] == "failed" and "no field 'data.no_such_field'" in failed["error"]
    for cell in grid.select("*/fold0"):
        assert cell_lib.read_record(runner.cell_dir(workdir, cell))["status"] == "done"
        ours, theirs = _predictions(workdir, cell.name), _predictions(local_run, cell.name)
        assert ours and ours == theirs  # the same predictions, bit for bit
        assert len(_nodes_of_log(runner.cell_dir(workdir, cell))) == 1  # ran once
    table = _tables(workdir, tables / "ray")
    assert len(table) > 1 and table == _tables(local_run, tables / "local")
    return summary


class TestLocalRay:

    def test_the_grid_on_ray_gives_the_local_runners_predictions_and_tables(self, local_run, local_ray, data_dir,
                                                                            tmp_path):
        grid = _grid(data_dir)
        workdir = str(tmp_path / "grid")
        summary = _run_like_the_local_runner(grid, workdir, local_run, tmp_path)

        # A rerun skips what is done and what failed; only when asked does it run the failed cell again.
        again = ray_engine.run_grid(grid, workdir, report=_quiet)
        assert again.ran == [] and sorted(again.skipped) == sorted(summary.ran)
        retried = ray_engine.run_grid(grid, workdir, retry_failed=True, report=_quiet)
        assert retried.ran == [BROKEN] and retried.failed == [BROKEN]

    def test_a_grid_workdir_on_the_gcs_server_runs_on_ray_as_on_a_disk(self, gcs, local_run, local_ray, data_dir,
                                                                        tmp_path):
        workdir = f"{gcs.bucket}/ray_grid"
        _run_like_the_local_runner(_grid(data_dir), workdir, local_run, tmp_path)
        for cell in _grid(data_dir).cells:
            directory = runner.cell_dir(workdir, cell)
            assert storage.read_text(Workdir(directory).cell_log).startswith("ray: node ")  # uploaded at the end
            assert not [name for name in storage.listdir(directory) if name.startswith("claim.")]
        assert not [name for name in storage.listdir(workdir) if name.startswith("claim.")]  # the grid's claim


    def test_a_stopped_driver_lets_its_cell_checkpoint_and_the_rerun_ends_it_as_if_never_stopped(
            self, local_run, local_ray, data_dir, tmp_path):
        name, workdir = "full/seed0/fold0", str(tmp_path / "grid")
        directory = f"{workdir}/{name}"
        flags = [f"--grid={SPEC}", f"--workdir={workdir}", f"--only={name}", "--engine=ray",
                 *(f"--config.{key}={value}" for key, value in _overrides(data_dir).items())]
        # The driver as a user starts it, with a Ray of its own.
        driver = subprocess.Popen([sys.executable, "scripts/run_ablations.py", *flags], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 600
        while (not os.path.isdir(os.path.join(Workdir(directory).checkpoints, "2")) and driver.poll() is None
               and time.time() < deadline):
            time.sleep(0.2)
        assert cell_lib.read_record(directory) is None, "the cell finished before it could be stopped"
        driver.send_signal(signal.SIGTERM)
        output, _ = driver.communicate(timeout=600)
        assert driver.returncode == 3, output[-3000:]  # stopped by a signal
        assert "stopping: running cells save a checkpoint" in output and f"{name}: interrupted" in output
        assert cell_lib.read_record(directory) is None and not [
            entry for entry in os.listdir(directory) if entry.startswith("claim.")]
        log = storage.read_text(Workdir(directory).cell_log)
        stopped_at = re.search(r"SIGTERM at step (\d+): checkpoint saved", log)
        assert stopped_at, log[-3000:]

        # The rerun (on this process's Ray) resumes the cell from that checkpoint and finishes it.
        summary = ray_engine.run_grid(load_grid(SPEC).with_overrides(_overrides(data_dir)), workdir, only=name,
                                      report=_quiet)
        assert summary.ran == [name] and not summary.failed and not summary.interrupted
        record = cell_lib.read_record(directory)
        assert record["status"] == "done" and record["steps_logged_at_start"] == int(stopped_at.group(1))
        step, ours = _latest_weights(directory)
        reference_step, theirs = _latest_weights(f"{local_run}/{name}")
        assert step == reference_step == STEPS
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
        assert _predictions(workdir, name) == _predictions(local_run, name)


class TestTwoNodeCluster:
    def test_cells_land_on_the_nodes_their_resources_name(self, cluster, data_dir, tmp_path):
        _, node_ids = cluster
        broken = _grid(data_dir).select(BROKEN)[0]
        # Fast cells (they fail at their config): where they ran is what counts here.
        cells = tuple(dataclasses.replace(broken, name=f"full/seed{i}/fold1", factors={**broken.factors, "seed": i},
                                          resources={"CPU": 1, side: 1})
                      for i, side in enumerate(("left", "right", "left")))
        grid = dataclasses.replace(_grid(data_dir), cells=cells)
        workdir = str(tmp_path / "grid")
        summary = ray_engine.run_grid(grid, workdir, report=_quiet)
        assert sorted(summary.failed) == sorted(cell.name for cell in cells)  # in the order they finished
        for cell, side in zip(cells, ("left", "right", "left")):
            assert _nodes_of_log(runner.cell_dir(workdir, cell)) == [node_ids[side]]

    def test_a_cell_whose_node_dies_is_retried_and_ends_as_if_never_stopped(self, cluster, local_run, data_dir,
                                                                           tmp_path):
        ray_cluster, node_ids = cluster
        grid = _grid(data_dir)
        cell = grid.select("full/seed0/fold0")[0]
        workdir = str(tmp_path / "grid")
        directory = runner.cell_dir(workdir, cell)
        summaries = []
        driver = threading.Thread(target=lambda: summaries.append(ray_engine.run_grid(
            grid, workdir, only=cell.name, report=_quiet)))
        driver.start()
        deadline = time.time() + 600
        while not os.path.isdir(os.path.join(Workdir(directory).checkpoints, "2")) and time.time() < deadline:
            time.sleep(0.2)
        assert cell_lib.read_record(directory) is None, "the cell finished before it could be stopped"
        (first_node,) = _nodes_of_log(directory)
        doomed = next(node for node in ray_cluster.list_all_nodes() if node.node_id == first_node)
        ray_cluster.remove_node(doomed, allow_graceful=False)
        driver.join(timeout=900)
        assert not driver.is_alive()
        (summary,) = summaries
        assert summary.ran == [cell.name] and not summary.failed and not summary.not_done
        record = cell_lib.read_record(directory)
        assert record["status"] == "done" and record["steps_logged_at_start"] >= 2  # resumed, not restarted
        attempts = _nodes_of_log(directory)
        assert attempts[0] == first_node and attempts[-1] != first_node and set(attempts) <= set(node_ids.values())
        step, ours = _latest_weights(directory)
        reference_step, theirs = _latest_weights(runner.cell_dir(local_run, cell))
        assert step == reference_step == STEPS
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
        assert _predictions(workdir, cell.name) == _predictions(local_run, cell.name)
