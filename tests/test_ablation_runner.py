"""The runner's bookkeeping: claims (free, held, stale, raced), cell statuses, skip/resume/failure handling, two
workers on one workdir, and one cell record written by the real cell code around a fabricated training run."""
import json
import os
import threading
import time

import ml_collections
import numpy as np
import pytest

from asemble_jax import atomic_io
from asemble_jax.workdir import GridWorkdir, Workdir
from asemble_jax.grids import cell as cell_lib
from asemble_jax.grids import claims, runner
from asemble_jax.grids.grid import Cell, Evaluation, Grid, TableSpec

BASE = os.path.join(os.path.dirname(__file__), os.pardir, "ablations", "base.py")
LONG_AGO = 10_000.0


def _grid(names=("a/full/seed0", "a/no_se/seed0", "a/full/seed1", "a/no_se/seed1"), **overrides):
    cells = tuple(Cell(name=name, factors={"variant": name.split("/")[1], "seed": int(name[-1])},
                       config=f"{BASE}:preset=tiny", overrides=dict(overrides),
                       evaluations=(Evaluation("test", "synthetic_sij/coronal", "test"),)) for name in names)
    return Grid("test_grid", cells, TableSpec(arm="variant", reference="full"), spec="test_grid.py")


def _record(workdir, name, status, **extra):
    atomic_io.write_json(GridWorkdir(workdir).cell(name).cell_record,
                         {"name": name, "status": status, "wall_time_s": 1.0, **extra})


def _age(path, seconds):
    past = time.time() - seconds
    os.utime(path, (past, past))


# ---- claims ---------------------------------------------------------------------------------------------------

def test_a_free_cell_is_claimed_once_and_then_held(tmp_path):
    first = claims.try_claim(str(tmp_path), owner="worker-1")
    assert first is not None and os.path.basename(first.path) == "claim.0"
    assert claims.try_claim(str(tmp_path), owner="worker-2") is None
    state = claims.inspect(str(tmp_path))
    assert state.held and state.owner == "worker-1"
    first.release()
    assert not os.path.exists(first.path)
    assert claims.inspect(str(tmp_path)).generation is None


def test_a_stale_claim_is_taken_over_and_its_old_owner_knows_it_lost(tmp_path):
    dead = claims.try_claim(str(tmp_path), owner="dead")
    _age(dead.path, 120)
    assert claims.try_claim(str(tmp_path), stale_after=300) is None  # 2 min without heartbeat: still alive
    assert claims.inspect(str(tmp_path), stale_after=60).stale
    new = claims.try_claim(str(tmp_path), stale_after=60, owner="new")
    assert new is not None and new.generation == dead.generation + 1
    assert not os.path.exists(dead.path)  # the older generation is cleared away
    assert dead.check() is False and dead.lost.is_set()
    dead.release()  # a lost claim's release must not remove the new owner's file
    assert os.path.exists(new.path) and new.check()


def test_a_paused_owner_whose_file_survived_still_sees_the_higher_generation(tmp_path):
    paused = claims.try_claim(str(tmp_path))
    _age(paused.path, 120)
    # Another worker's claim one generation up, created before it could clear the older file.
    with open(os.path.join(tmp_path, f"claim.{paused.generation + 1}"), "w") as f:
        json.dump({"owner": "other"}, f)
    assert paused.check() is False


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    claim = claims.try_claim(str(tmp_path))
    _age(claim.path, 120)
    claim.start_heartbeat(interval=0.02)
    time.sleep(0.3)
    claim.release()
    assert claims.inspect(str(tmp_path)).generation is None
    claim = claims.try_claim(str(tmp_path))
    _age(claim.path, 120)
    claim.start_heartbeat(interval=0.02)
    time.sleep(0.3)
    assert claims.inspect(str(tmp_path), stale_after=60).held
    claim.release()


@pytest.mark.parametrize("stale", [False, True])
def test_workers_racing_for_one_cell_never_both_get_it(tmp_path, stale):
    for attempt in range(15):
        directory = str(tmp_path / f"cell{attempt}")
        if stale:
            _age(claims.try_claim(directory).path, LONG_AGO)
        barrier = threading.Barrier(8)
        won = []

        def race():
            barrier.wait()
            claim = claims.try_claim(directory, stale_after=60)
            if claim is not None:
                won.append(claim)

        threads = [threading.Thread(target=race) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1, f"attempt {attempt}: {len(won)} workers got the cell"


# ---- statuses and the grid loop -----------------------------------------------------------------------------

def test_cell_status_tells_done_failed_running_stale_partial_and_pending(tmp_path):
    workdir = str(tmp_path)
    grid = _grid(names=("a/full/seed0", "a/full/seed1", "a/full/seed2", "a/full/seed3", "a/full/seed4",
                        "a/full/seed5"))
    done, failed, running, stale, partial, pending = grid.cells
    _record(workdir, done.name, "done")
    _record(workdir, failed.name, "failed", error="boom")
    claims.try_claim(runner.cell_dir(workdir, running))
    _age(claims.try_claim(runner.cell_dir(workdir, stale)).path, LONG_AGO)
    os.makedirs(runner.cell_dir(workdir, partial))
    open(os.path.join(runner.cell_dir(workdir, partial), "metrics.jsonl"), "w").close()
    statuses = [runner.cell_status(workdir, c, stale_after=60) for c in grid.cells]
    assert statuses == ["done", "failed", "running", "stale", "partial", "pending"]


@pytest.fixture
def fake_cells(monkeypatch):
    """execute_cell replaced by a stand-in that records which thread ran which cell and writes a record."""
    ran = []
    outcomes = {}

    def execute(cell, cell_dir, *, grid_name, claim=None, progress=False):
        ran.append((cell.name, threading.current_thread().name))
        assert claim is not None and claims.inspect(cell_dir).held  # never run without holding the claim
        time.sleep(0.02)
        outcome = outcomes.get(cell.name, "done")
        if outcome == "interrupted":
            raise cell_lib.CellInterrupted(cell.name)
        record = {"name": cell.name, "status": outcome, "wall_time_s": 0.02,
                  "error": "TrainingError: loss is nan at step 3" if outcome == "failed" else None}
        atomic_io.write_json(Workdir(cell_dir).cell_record, record)
        return record

    monkeypatch.setattr(cell_lib, "execute_cell", execute)
    return ran, outcomes


def test_finished_and_live_cells_are_skipped_and_dead_ones_resumed(tmp_path, fake_cells):
    ran, _ = fake_cells
    workdir = str(tmp_path)
    grid = _grid(names=("a/full/seed0", "a/full/seed1", "a/full/seed2", "a/full/seed3", "a/full/seed4"))
    done, failed, running, stale, pending = grid.cells
    _record(workdir, done.name, "done")
    _record(workdir, failed.name, "failed", error="boom")
    live = claims.try_claim(runner.cell_dir(workdir, running), owner="other worker")
    _age(claims.try_claim(runner.cell_dir(workdir, stale)).path, LONG_AGO)
    messages = []
    summary = runner.run_grid(grid, workdir, in_process=True, stale_after=60, heartbeat=5, report=messages.append)
    assert [name for name, _ in ran] == [stale.name, pending.name]
    assert summary.ran == [stale.name, pending.name] and not summary.failed
    assert set(summary.skipped) == {done.name, failed.name, running.name}
    assert live.check()  # the other worker's claim is untouched
    assert not any(name.startswith("claim.") for name in os.listdir(runner.cell_dir(workdir, stale)))
    assert "ETA" in messages[-2]
    assert summary.not_done == [running.name] and running.name in messages[-1]  # held elsewhere: not done yet

    ran.clear()
    live.release()
    summary = runner.run_grid(grid, workdir, in_process=True, retry_failed=True, stale_after=60, heartbeat=5,
                              report=messages.append)
    assert [name for name, _ in ran] == [failed.name, running.name]


def test_a_failed_cell_is_recorded_and_the_grid_goes_on(tmp_path, fake_cells):
    ran, outcomes = fake_cells
    grid = _grid()
    outcomes["a/no_se/seed0"] = "failed"
    messages = []
    summary = runner.run_grid(grid, str(tmp_path), in_process=True, report=messages.append)
    assert [name for name, _ in ran] == [cell.name for cell in grid.cells]
    assert summary.failed == ["a/no_se/seed0"]
    assert any("FAILED" in m and "loss is nan" in m for m in messages)
    assert runner.cell_status(str(tmp_path), grid.cells[1]) == "failed"


def test_an_interrupted_cell_stops_the_worker_and_leaves_the_cell_resumable(tmp_path, fake_cells):
    ran, outcomes = fake_cells
    grid = _grid()
    outcomes["a/no_se/seed0"] = "interrupted"
    summary = runner.run_grid(grid, str(tmp_path), in_process=True, report=lambda m: None)
    assert summary.interrupted
    assert [name for name, _ in ran] == ["a/full/seed0", "a/no_se/seed0"]
    assert runner.cell_status(str(tmp_path), grid.cells[1]) == "pending"  # no record, claim released


def test_two_workers_on_one_workdir_run_every_cell_exactly_once(tmp_path, fake_cells):
    ran, _ = fake_cells
    grid = _grid(names=tuple(f"p/{v}/seed{s}" for s in range(6) for v in ("full", "no_se", "no_vit")))
    summaries = {}

    def worker(name):
        summaries[name] = runner.run_grid(grid, str(tmp_path), in_process=True, heartbeat=5, report=lambda m: None)

    threads = [threading.Thread(target=worker, args=(f"worker{i}",), name=f"worker{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [name for name, _ in ran]
    assert sorted(names) == sorted(cell.name for cell in grid.cells)
    assert len({thread for _, thread in ran}) == 2  # both did work
    assert sorted(summaries["worker0"].ran + summaries["worker1"].ran) == sorted(names)


def test_a_workdir_refuses_a_different_grid(tmp_path, fake_cells):
    runner.run_grid(_grid(names=("a/full/seed0",)), str(tmp_path), in_process=True, report=lambda m: None)
    with pytest.raises(runner.RunnerError, match="overrides was {}, now {'total_steps': 5}"):
        runner.run_grid(_grid(names=("a/full/seed0",), total_steps=5), str(tmp_path), in_process=True,
                        report=lambda m: None)
    stored, _ = runner.read_grid_record(str(tmp_path))
    assert stored.cells[0].overrides == {}


def test_a_cell_subprocess_that_fails_is_recorded_with_its_error(tmp_path):
    # A config typo fails before any training: this runs the real subprocess path in a few seconds.
    grid = _grid(names=("a/full/seed0",), **{"data.no_such_field": 1})
    summary = runner.run_grid(grid, str(tmp_path), report=lambda m: None)
    assert summary.failed == ["a/full/seed0"]
    record = cell_lib.read_record(runner.cell_dir(str(tmp_path), grid.cells[0]))
    assert record["status"] == "failed" and "no field 'data.no_such_field'" in record["error"]
    assert "ConfigError" in open(Workdir(runner.cell_dir(str(tmp_path), grid.cells[0])).error_log).read()
    assert not claims.inspect(runner.cell_dir(str(tmp_path), grid.cells[0])).held


def test_a_cell_process_that_dies_is_recorded_as_failed_and_frees_the_cell(tmp_path, monkeypatch):
    dying = tmp_path / "dying_python"
    dying.write_text("#!/bin/sh\necho allocating a lot\nkill -9 $$\n")
    dying.chmod(0o755)
    monkeypatch.setattr(runner.sys, "executable", str(dying))
    grid = _grid(names=("a/full/seed0", "a/full/seed1"))
    summary = runner.run_grid(grid, str(tmp_path / "w"), report=lambda m: None)
    assert summary.failed == ["a/full/seed0", "a/full/seed1"]  # the grid went on after the first death
    record = cell_lib.read_record(runner.cell_dir(str(tmp_path / "w"), grid.cells[0]))
    assert "SIGKILL" in record["error"] and "allocating a lot" in record["error"]
    assert not claims.inspect(runner.cell_dir(str(tmp_path / "w"), grid.cells[0])).held


# ---- one cell's record, around a fabricated training run -------------------------------------------------------

class _FakePredictor:
    """What evaluation.evaluate needs of a Predictor: a config, a step and predictions."""

    def __init__(self, config):
        self.config, self.step = config, 7

    def predict(self, dataset, split, data_dir=None):
        rng = np.random.default_rng(len(dataset) + len(split))
        labels = np.repeat([0, 1] * 6, 4)
        probabilities = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, labels.size), 0, 1)
        return probabilities, labels, np.repeat([f"p{i}" for i in range(12)], 4)


@pytest.fixture
def fabricated_training(monkeypatch):
    state = {"last_step": None, "rates": [50.0, 200.0, 210.0, 190.0]}

    def train(config, workdir, **kwargs):
        last = state["last_step"] or config.total_steps
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            for i, rate in enumerate(state["rates"]):
                f.write(json.dumps({"step": (i + 1) * last // len(state["rates"]), "split": "train",
                                    "images_per_second": rate}) + "\n")
        return {}

    monkeypatch.setattr(cell_lib, "train_and_evaluate", train)
    monkeypatch.setattr(cell_lib, "Predictor", lambda workdir: _FakePredictor(
        ml_collections.ConfigDict(json.loads(cell_lib.Cell.build_config(_one_cell()).to_json_best_effort()))))
    monkeypatch.setattr(cell_lib, "model_costs", lambda config: {"params": 1234, "gflops": 0.5})
    return state


def _one_cell():
    return Cell(name="coronal/full/seed0", factors={"variant": "full", "seed": 0},
                config=f"{BASE}:preset=tiny,dataset=synthetic_sij/coronal", overrides={"total_steps": 8},
                evaluations=(Evaluation("test", "synthetic_sij/coronal", "test"),
                             Evaluation("external", "synthetic_sij/shifted", "test")))


def test_a_finished_cell_records_its_evaluations_speed_and_costs(tmp_path, fabricated_training):
    record = cell_lib.execute_cell(_one_cell(), str(tmp_path), grid_name="g")
    assert record == cell_lib.read_record(str(tmp_path))
    assert record["status"] == "done" and record["error"] is None
    # The first window includes compiling the step and is left out.
    assert record["train_images_per_second"] == pytest.approx(200.0)
    assert (record["params"], record["gflops"], record["total_steps"]) == (1234, 0.5, 8)
    assert [e["role"] for e in record["evaluations"]] == ["test", "external"]
    for evaluation in record["evaluations"]:
        with open(os.path.join(tmp_path, evaluation["predictions"])) as f:
            assert f.readline().strip() == "example,patient_id,label,probability"
            assert len(f.readlines()) == 48
        assert 0 < evaluation["thresholds"]["youden"] < 1 and evaluation["thresholds"]["0.5"] == 0.5
    assert record["provenance"]["versions"]["jax"] and record["wall_time_s"] > 0


def test_a_cell_whose_training_stopped_early_is_not_recorded(tmp_path, fabricated_training):
    fabricated_training["last_step"] = 4  # SIGTERM: the trainer saved step 4 of 8 and returned
    with pytest.raises(cell_lib.CellInterrupted, match="before step 8 \\(last logged step 4\\)"):
        cell_lib.execute_cell(_one_cell(), str(tmp_path), grid_name="g")
    assert cell_lib.read_record(str(tmp_path)) is None


def test_a_cell_that_raises_is_recorded_as_failed_with_one_line(tmp_path, monkeypatch):
    def explode(config, workdir, **kwargs):
        raise RuntimeError("out of patience\nsecond line")

    monkeypatch.setattr(cell_lib, "train_and_evaluate", explode)
    record = cell_lib.execute_cell(_one_cell(), str(tmp_path), grid_name="g")
    assert record["status"] == "failed" and record["error"] == "RuntimeError: out of patience"
    assert "Traceback" in open(Workdir(str(tmp_path)).error_log).read()


def test_a_worker_that_lost_its_claim_records_nothing(tmp_path, fabricated_training):
    claim = claims.try_claim(str(tmp_path))
    _age(claim.path, LONG_AGO)
    assert claims.try_claim(str(tmp_path), stale_after=60) is not None
    with pytest.raises(cell_lib.ClaimLost):
        cell_lib.execute_cell(_one_cell(), str(tmp_path), grid_name="g", claim=claim)
    assert cell_lib.read_record(str(tmp_path)) is None


def test_model_costs_count_the_built_model():
    from asemble_jax.models.registry import count_parameters, model_arguments
    from asemble_jax.workdir import build_model

    config = Cell("x", {}, f"{BASE}:preset=tiny,variant=vit_only", {}, ()).build_config()
    costs = cell_lib.model_costs(config)
    assert costs["params"] == count_parameters(build_model(config))
    # At least the ViT patch embedding's multiply-adds (2 FLOPs each) for one 64x64 image, patch 16.
    dim, patch = model_arguments("asemblenet", "tiny")["vit_dim"], 16
    assert costs["gflops"] * 1e9 >= 2 * (64 // patch) ** 2 * patch * patch * dim
