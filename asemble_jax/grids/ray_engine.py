"""Runs a grid on Ray core tasks (scripts/run_ablations.py --engine=ray): from a laptop to a cluster of GPU
machines or Cloud TPU VMs, with cells that survive the loss of their node.

Each cell is one task that starts the same cell process as the local runner (asemble_jax.grids.cell, same exit
statuses, cell.log, cell.json) on whichever node has the cell's resources free (Cell.resources, or --cell_resources
for every cell: {"CPU": 1} unless said); Ray sets the visible accelerators of the task (CUDA_VISIBLE_DEVICES,
TPU_VISIBLE_CHIPS) and the cell process inherits them. What the local runner decides, this driver decides the same
way (runner.GridRun): finished cells are skipped, partial ones resume by the trainer's own resume, failed ones are
recorded and the grid goes on, the progress lines and the summary.

A cell whose worker or node dies is retried by Ray (max_retries) and resumes from its last checkpoint in the
shared workdir. Its orphaned cell process, if its node still runs, is killed at once without a checkpoint
(--parent_death_signal=SIGKILL): a retry may already be starting beside it. SIGINT/SIGTERM to the driver cancels
the tasks: a running task passes a SIGTERM to its cell, which checkpoints, and the driver waits for it; queued
cells are dropped; rerunning the command continues.

The driver holds the claim of every cell it has queued (grids/claims.py, kept fresh by the driver's own loop), so
a local runner or a second driver on the same workdir never runs the same cell.

Without an address Ray starts on this machine (no dashboard, nothing to set up); --address=auto or HOST:PORT
joins a running cluster, whose nodes must see the workdir at the same path (NFS, or gs://) and run the same
checkout and environment, at the driver's working directory.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Mapping

import ray

from asemble_jax import storage  # light: no JAX

DEFAULT_RESOURCES = {"CPU": 1.0}
DEFAULT_MAX_RETRIES = 3  # retries of a cell whose worker or node died; a failed cell is never retried by Ray


@ray.remote
def _run_cell(arguments: list[str], log_path: str, cwd: str) -> tuple[int, float, str]:
    """In a Ray worker: runs the cell process with its output appended to cell.log; returns its exit status, its
    wall time and the node. A cancel from the driver (KeyboardInterrupt here) becomes a SIGTERM to the cell, which
    saves a checkpoint; its exit status then says how it ended."""
    if threading.current_thread() is threading.main_thread():
        # Ray's cancel interrupts this thread as a SIGINT would, which does nothing where SIGINT is ignored: in
        # the workers of a driver started in the background (nohup, `&` in a batch script), who inherit that.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    node = ray.get_runtime_context().get_node_id()
    devices = {key: os.environ[key] for key in ("CUDA_VISIBLE_DEVICES", "TPU_VISIBLE_CHIPS") if key in os.environ}
    command = [sys.executable, *arguments, f"--parent_pid={os.getpid()}", "--parent_death_signal=SIGKILL"]
    start = time.perf_counter()
    with _local_log(log_path) as local_log, open(local_log, "a") as log:
        log.write(f"ray: node {node}, worker pid {os.getpid()}, devices {devices or 'none set'}\n")
        log.flush()
        child = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:  # a blocking wait() would never see the cancel
                try:
                    code = child.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            child.send_signal(signal.SIGTERM)
            code = child.wait()
    return code, time.perf_counter() - start, node


def _local_log(log_path: str):
    """The file the cell process writes to: cell.log, or on an object store a local file appended to it at the
    end (runner.cell_log_file, imported only then: it brings JAX into the worker)."""
    if not storage.is_url(log_path):
        return contextlib.nullcontext(log_path)
    from asemble_jax.grids.runner import cell_log_file

    return cell_log_file(log_path)


def task_options(resources: Mapping[str, float]) -> dict[str, Any]:
    """Ray's task options for a cell's resources: CPU, GPU and memory have their own options, the rest (TPU,
    custom resources) go in `resources`."""
    named = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
    options: dict[str, Any] = {named[key]: value for key, value in resources.items() if key in named}
    custom = {key: value for key, value in resources.items() if key not in named}
    if custom:
        options["resources"] = custom
    return options


def slots(resources: Mapping[str, float], totals: Mapping[str, float]) -> int:
    """How many cells taking `resources` the cluster's totals hold at once (an upper bound: a node's leftovers
    are counted as if they could be pooled)."""
    counts = [math.floor(totals.get(key, 0.0) / value) for key, value in resources.items() if value > 0]
    return min(counts) if counts else 0


def _connect(address: str | None) -> bool:
    """Connects to Ray (a new local instance when address is None); True when this call started it."""
    if ray.is_initialized():  # the caller's own instance (tests, a notebook)
        return False
    from asemble_jax.grids.runner import RunnerError

    host, _, port = address.rpartition(":") if address else ("", "", "")
    if host and port.isdigit():  # ray.init retries an address where nothing listens for minutes
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as error:
            raise RunnerError(f"no Ray cluster at --address={address}: {error.strerror or error}") from None
    try:
        if address is None:  # a new instance, even where `ray start` left one running
            ray.init(address="local", include_dashboard=False)
        else:
            ray.init(address=address)
    except ConnectionError as error:
        raise RunnerError(f"no Ray cluster at --address={address}: {str(error).splitlines()[0]}") from None
    return True


def _unplaceable(cells, report: Callable[[str], None]) -> None:
    """Says which resources no node of the cluster has (their cells wait until such a node joins)."""
    available = collections.Counter()
    for node in ray.nodes():
        if node.get("Alive"):
            for key, value in node.get("Resources", {}).items():
                available[key] = max(available[key], value)
    missing = sorted({key for cell in cells for key, value in cell.resources.items() if value > available[key]})
    if missing:
        report(f"no node of this Ray cluster has enough {', '.join(missing)} for some cells: they wait until "
               "such a node joins (Ctrl-C stops)")


def run_grid(grid, workdir: str, *, address: str | None = None, resources: Mapping[str, float] | None = None,
             max_retries: int = DEFAULT_MAX_RETRIES, only: str | None = None, retry_failed: bool = False,
             stale_after: float | None = None, heartbeat: float | None = None, command: str = "",
             report: Callable[[str], None] = functools.partial(print, flush=True)):
    """Runs every selected cell that is neither finished nor held by another worker as a Ray task; returns the
    runner's Summary (the same exit statuses follow from it)."""
    # The runner (and through it JAX) is imported here, not at the top: a Ray worker imports this module to run
    # _run_cell, and a worker that stays light leaves its node's memory to the cell process, which imports JAX.
    from asemble_jax.grids import claims, runner
    from asemble_jax.errors import first_line
    from asemble_jax.workdir import Workdir

    stale_after = claims.DEFAULT_STALE_AFTER_S if stale_after is None else stale_after
    heartbeat = claims.DEFAULT_HEARTBEAT_S if heartbeat is None else heartbeat
    workdir = storage.absolute(workdir)  # the workers' view of a relative path is not the driver's
    grid = grid.with_resources(resources) if resources else grid
    grid = grid.with_resources(DEFAULT_RESOURCES) if not any(cell.resources for cell in grid.cells) else grid
    started_ray = _connect(address)  # first: a cluster that cannot be reached leaves the workdir untouched
    try:
        run = runner.GridRun(grid, workdir, only=only, retry_failed=retry_failed, stale_after=stale_after,
                             heartbeat=heartbeat, command=command, report=report)
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    in_flight: dict[ray.ObjectRef, tuple[Any, claims.Claim]] = {}
    try:
        with runner.StopFlag(in_process=False) as stop:
            for cell in run.cells:
                claim = run.claim(cell)
                if claim is None:
                    continue
                directory = runner.cell_dir(workdir, cell)
                options = task_options(cell.resources or DEFAULT_RESOURCES)
                ref = _run_cell.options(max_retries=max_retries, **options).remote(
                    runner.cell_arguments(cell, directory, grid), Workdir(directory).cell_log, os.getcwd())
                in_flight[ref] = (cell, claim)
            if in_flight:
                _unplaceable([cell for cell, _ in in_flight.values()], report)
                run.progress.slots = slots(next(iter(in_flight.values()))[0].resources, ray.cluster_resources())
                report(f"{run.progress.line(run.cells)} queued {len(in_flight)} cell(s) on Ray "
                       f"({run.progress.slots} at a time)")
            cancelled, next_beat = False, time.monotonic() + heartbeat
            while in_flight:
                if stop.raised and not cancelled:
                    report("stopping: running cells save a checkpoint, queued ones are dropped")
                    for ref in in_flight:
                        ray.cancel(ref)
                    cancelled = True
                ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=min(1.0, heartbeat))
                if time.monotonic() >= next_beat:  # one loop keeps every claim fresh: no thread per cell
                    for ref, (cell, claim) in in_flight.items():
                        if not claim.check():  # this driver was stalled past stale_after: the cell is another's
                            ray.cancel(ref, force=True)
                    next_beat = time.monotonic() + heartbeat
                for ref in ready:
                    cell, claim = in_flight.pop(ref)
                    directory = runner.cell_dir(workdir, cell)
                    where, elapsed = "", 0.0
                    try:
                        code, elapsed, node = ray.get(ref)
                        where = f" on node {node[:8]}"
                        outcome = runner.cell_outcome(code, cell, directory, grid, elapsed, stopped=cancelled)
                    except ray.exceptions.TaskCancelledError:
                        outcome = None  # still queued when the driver was stopped: nothing ran
                    except ray.exceptions.RayError as error:  # retries used up, or the task could not start
                        outcome = runner.FAILED
                        runner.record_failure(cell, directory, grid, f"ray: {type(error).__name__}: "
                                              f"{first_line(error)}", elapsed)
                    if claim.lost.is_set():
                        outcome = "lost"
                    claim.release()
                    if outcome is not None:
                        run.ended(cell, outcome, elapsed, where)
                        if in_flight:
                            report(run.progress.line(run.cells))
            if stop.raised:
                run.summary.interrupted = True
    finally:
        for ref, (cell, claim) in in_flight.items():  # an exception left them: stop them, free their cells
            ray.cancel(ref, force=True)
            claim.release()
        if started_ray:
            ray.shutdown()
    return run.close()
