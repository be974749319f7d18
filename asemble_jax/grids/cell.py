"""One grid cell from start to record: train (the trainer resumes an interrupted run by itself), evaluate on the
cell's test sets, measure the model's size and cost, and write the cell's record, `cell.json`.

The record is the only thing the tables read, so tables can be made from whatever has finished while a grid is
still running. A cell runs inside the runner's process or as its own subprocess:

    python -m asemble_jax.grids.cell --cell_dir=DIR --claim=DIR/claim.0 --grid=NAME --cell='{...}'

(the runner starts it so; the exit status says how it ended: see EXIT_*). Without --claim the process that
started it holds the claim (the Ray engine's driver).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
import traceback
from typing import Any

import ml_collections
from flax import nnx

from asemble_jax import atomic_io, storage
from asemble_jax.grids.claims import DEFAULT_HEARTBEAT_S, Claim
from asemble_jax.grids.grid import LOCALIZATION, Cell, Evaluation
from asemble_jax.data.pipeline import open_source
from asemble_jax.errors import first_line
from asemble_jax.evaluation import localization_report
from asemble_jax.provenance import now, provenance
from asemble_jax.evaluation.evaluate import evaluate_workdir
from asemble_jax.models.registry import count_parameters, forward_gflops
from asemble_jax.metrics_log import MetricsLog
from asemble_jax.train.trainer import train_and_evaluate
from asemble_jax.workdir import Predictor, Workdir, build_model

log = logging.getLogger(__name__)

DONE, FAILED = "done", "failed"
# Distinct from Python's own 1 (an uncaught exception) and 2 (bad arguments): those mean the process crashed.
EXIT_DONE, EXIT_INTERRUPTED, EXIT_LOST, EXIT_FAILED = 0, 3, 4, 5


class CellInterrupted(Exception):
    """Training stopped before its last step (SIGTERM; the trainer saved a checkpoint); nothing was recorded."""


class ClaimLost(Exception):
    """Another worker took this cell over; this worker's results must not be recorded."""


def read_record(cell_dir: str) -> dict[str, Any] | None:
    try:
        with storage.open(Workdir(cell_dir).cell_record) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def last_train_step(cell_dir: str) -> int:
    return max((r["step"] for r in MetricsLog(Workdir(cell_dir).metrics).read()
                if r.get("split") == "train"), default=0)


def train_images_per_second(cell_dir: str) -> float | None:
    """Median over the logged windows but the first, which includes compiling the train step (unless it is the
    only one); the median keeps a window slowed by a resume's compilation from counting much."""
    rates = [r["images_per_second"] for r in MetricsLog(Workdir(cell_dir).metrics).read()
             if r.get("split") == "train" and isinstance(r.get("images_per_second"), (int, float))]
    return statistics.median(rates[1:] or rates) if rates else None


def model_costs(config: ml_collections.ConfigDict) -> dict[str, float]:
    """Parameters (with BatchNorm statistics, the Keras convention) and forward GFLOPs of one image at the cell's
    input size, evaluation mode, counted by XLA's cost analysis of the compiled program (as
    scripts/model_table.py counts them); the model is built abstractly, nothing is allocated."""
    model = nnx.eval_shape(lambda: build_model(config))
    return {"params": count_parameters(model),
            "gflops": forward_gflops(model, config.data.image_size, config.model.in_channels)}


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else type(error).__name__


def _localize(cell_dir: str, evaluation: Evaluation, predictor: Predictor) -> dict[str, Any]:
    """Grad-CAM of the cell's best model against the lesion masks of the evaluation's split, with its references;
    the per-slice scores go to eval/ (pooled by the report), the figure of cases stays in the cell's folder."""
    paths, config = Workdir(cell_dir), predictor.config
    stem = paths.localization_stem(evaluation.dataset, evaluation.split)
    model = predictor.model()
    source = open_source(evaluation.dataset, evaluation.split, config.data.data_dir)
    result = localization_report.evaluate_localization(model, localization_report.randomised_model(config), source,
                                                       image_size=config.data.image_size,
                                                       name=f"{evaluation.dataset}/{evaluation.split}")
    atomic_io.write_json(stem + ".json", result.scored.to_json())
    localization_report.plot_cases(result, stem + "_cases.png")
    return {"role": evaluation.role, "kind": evaluation.kind, "dataset": evaluation.dataset,
            "split": evaluation.split, "scores": paths.relative(stem + ".json"), "n": int(result.scored.patient_ids.size)}


def _evaluate(cell: Cell, cell_dir: str) -> tuple[int, list[dict[str, Any]]]:
    predictor = Predictor(cell_dir)
    results = []
    for evaluation in cell.evaluations:
        if evaluation.kind == LOCALIZATION:
            results.append(_localize(cell_dir, evaluation, predictor))
            continue
        report = evaluate_workdir(cell_dir, dataset=evaluation.dataset, split=evaluation.split, predictor=predictor)
        paths = Workdir(cell_dir)
        stem = paths.relative(paths.eval_stem(evaluation.dataset, evaluation.split))
        block = report["thresholds"]["0.5"]
        results.append({
            "role": evaluation.role, "dataset": evaluation.dataset, "split": evaluation.split,
            "report": stem + ".json", "predictions": stem + "_predictions.csv", "n": report["n"],
            "thresholds": {name: t["threshold"] for name, t in report["thresholds"].items()},
            "metrics_at_0.5": {name: block[name]["estimate"] for name in ("auc", "accuracy", "f1", "recall",
                                                                          "specificity")},
        })
    return predictor.step, results


def execute_cell(cell: Cell, cell_dir: str, *, grid_name: str, claim: Claim | None = None,
                 progress: bool = False, own_process: bool = False) -> dict[str, Any]:
    """Trains, evaluates and records `cell` in `cell_dir`; returns the record, status "done" or "failed" (with
    the error; the traceback goes to error.log). Raises CellInterrupted when training was stopped early, and
    ClaimLost when `claim` was taken over meanwhile; neither writes a record. `own_process`: this is the cell's
    process (main), which from its record on ignores SIGTERM."""
    started, start = now(), time.perf_counter()
    storage.makedirs(cell_dir)
    record: dict[str, Any] = {"name": cell.name, "grid": grid_name, "factors": dict(cell.factors),
                              "config": cell.config, "overrides": dict(cell.overrides), "started": started,
                              "steps_logged_at_start": last_train_step(cell_dir), "provenance": provenance()}
    try:
        config = cell.build_config()
        record.update(total_steps=config.total_steps, global_batch_size=config.global_batch_size,
                      image_size=config.data.image_size, compilation_cache_dir=config.compilation_cache_dir)
        train_and_evaluate(config, cell_dir, progress=progress)
        record["train_time_s"] = time.perf_counter() - start
        if last_train_step(cell_dir) < config.total_steps:
            raise CellInterrupted(f"{cell.name}: training stopped before step {config.total_steps} (last logged "
                                  f"step {last_train_step(cell_dir)}); its checkpoint resumes it")
        record["train_images_per_second"] = train_images_per_second(cell_dir)
        evaluate_start = time.perf_counter()
        record["step"], record["evaluations"] = _evaluate(cell, cell_dir)
        record["evaluate_time_s"] = time.perf_counter() - evaluate_start
        record.update(model_costs(config))
        record.update(status=DONE, error=None)
    except CellInterrupted:
        raise
    except Exception as error:  # noqa: BLE001 - a failed cell is recorded and the grid goes on
        atomic_io.write_text(Workdir(cell_dir).error_log, traceback.format_exc())
        record.update(status=FAILED, error=_one_line(error))
    record.update(wall_time_s=time.perf_counter() - start, finished=now())
    if claim is not None and not claim.check():
        raise ClaimLost(f"{cell.name}: another worker took this cell over; not recording this run")
    if own_process:
        # Recorded is finished: a SIGTERM passed on by a stopping runner between the record and this process's
        # exit (its claim's release, the interpreter's teardown) would kill it, and the runner, seeing a death by
        # the signal it sent, would report a cell whose record says done as interrupted.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    atomic_io.write_json(Workdir(cell_dir).cell_record, record)
    return record


def failure_record(cell: Cell, grid_name: str, error: str, wall_time_s: float) -> dict[str, Any]:
    """The record of a cell whose process died before it could write one (killed, out of memory)."""
    return {"name": cell.name, "grid": grid_name, "factors": dict(cell.factors), "config": cell.config,
            "overrides": dict(cell.overrides), "status": FAILED, "error": error, "wall_time_s": wall_time_s,
            "finished": now(), "provenance": provenance()}


def exit_lost() -> None:
    """What a worker does when its claim was taken over: it stops at once, recording nothing."""
    print("another worker took this cell over (this process was stalled past the claim timeout); stopping "
          "without recording", file=sys.stderr, flush=True)
    os._exit(EXIT_LOST)  # at once: a checkpoint written now would land in the new owner's workdir


def stop_with_parent(parent_pid: int, poll_s: float = 1.0, signum: int = signal.SIGTERM) -> None:
    """`signum` to this process when `parent_pid` (its runner) is gone, so that a kill -9 of the runner leaves no
    orphan cell: on SIGTERM the trainer checkpoints and the cell exits. Linux delivers it at once
    (PR_SET_PDEATHSIG); a watcher thread covers other systems and a runner that died before this was set."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="stop with the runner", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", required=True, help="the cell as JSON (grid.Cell.to_json)")
    parser.add_argument("--cell_dir", required=True)
    parser.add_argument("--claim", help="the claim file the runner took for this cell, to adopt and keep fresh")
    parser.add_argument("--grid", required=True, help="the grid's name")
    parser.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT_S)
    parser.add_argument("--parent_pid", type=int, help="the runner: when it dies, this cell stops as if preempted")
    # A Ray worker that dies is followed by a retry of its cell, maybe on this node at once: its orphan must not
    # write a checkpoint beside the retry's, so it dies without one (the retry resumes from the last one).
    parser.add_argument("--parent_death_signal", choices=("SIGTERM", "SIGKILL"), default="SIGTERM")
    args = parser.parse_args(argv)
    if args.parent_pid:
        stop_with_parent(args.parent_pid, signum=signal.Signals[args.parent_death_signal])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("asemble_jax").setLevel(logging.INFO)

    claim = Claim.adopt(args.claim) if args.claim else None
    if claim is not None:
        claim.start_heartbeat(args.heartbeat, on_lost=exit_lost)
    try:
        record = execute_cell(Cell.from_json(json.loads(args.cell)), args.cell_dir, grid_name=args.grid,
                              claim=claim, own_process=True)
    except CellInterrupted as interrupted:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        if claim is not None:
            claim.release()
        return EXIT_INTERRUPTED
    except ClaimLost as lost:
        print(f"lost: {lost}", file=sys.stderr)
        return EXIT_LOST
    if claim is not None:
        claim.release()
    if record["status"] == FAILED:
        print(f"failed: {record['error']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
