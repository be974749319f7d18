"""Runs a grid in a workdir: each cell in its own sub-workdir, finished cells skipped, interrupted ones resumed
(by the trainer's own resume), failed ones recorded with their error while the grid goes on, and several workers
on one workdir never running the same cell (claims.py).

Each cell runs as a subprocess by default: a crash, an out-of-memory kill or a leak in one cell cannot take the
rest of the grid with it, and the cell's output goes to its own cell.log. What subprocesses lose, JAX's in-memory
caches, matters little here: the expensive part is XLA compilation, and the trainer's persistent compilation cache
(config field compilation_cache_dir, shared by every cell) keeps it across processes, so seeds 1, 2, ... of a
variant reuse the programs compiled for seed 0. `in_process=True` runs cells in this process instead (no
interpreter and JAX start-up per cell; one crash ends the worker).

workdir layout: grid.json (the expanded grid; a second worker with a different grid is refused) and one folder
per cell (its name) with the trainer's files, claim.<n> while a worker holds it, cell.json once finished
(status done or failed), cell.log (subprocess output) and error.log (a failed cell's traceback).

A grid workdir may be a URL (gs://BUCKET/grid). There one worker at a time runs the grid (claims.py says why):
it holds a claim on the grid workdir itself, and a second worker is refused with one line. A cell's output goes
to a local temporary file while it runs and is uploaded to its cell.log when the cell process ends.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Mapping

from asemble_jax import atomic_io, storage
from asemble_jax.grids import cell as cell_lib
from asemble_jax.grids import claims
from asemble_jax.grids.grid import Cell, Grid, GridError, conflicting_cell
from asemble_jax.errors import UserError
from asemble_jax.workdir import GridWorkdir, Workdir

PENDING, DONE, FAILED, RUNNING, STALE, PARTIAL = "pending", "done", "failed", "running", "stale", "partial"


class RunnerError(UserError):
    """A grid that cannot be run in this workdir; the message is the one line a user needs."""


def cell_dir(workdir: str, cell: Cell) -> str:
    return GridWorkdir(workdir).cell(cell.name).root


def cell_status(workdir: str, cell: Cell, *, stale_after: float = claims.DEFAULT_STALE_AFTER_S) -> str:
    """done / failed (it has a record); running (a live claim); stale (its worker died: it will be resumed);
    partial (started before, no claim: it will be resumed); pending."""
    directory = cell_dir(workdir, cell)
    record = cell_lib.read_record(directory)
    if record is not None:
        return record["status"]
    state = claims.inspect(directory, stale_after=stale_after)
    if state.held:
        return RUNNING
    if state.stale:
        return STALE
    return PARTIAL if storage.exists(Workdir(directory).metrics) else PENDING


def command_line(grid: Grid, workdir: str, overrides: Mapping[str, Any]) -> str:
    """The command that runs this grid here, for the tables' provenance."""
    parts = ["python", "scripts/run_ablations.py", f"--grid={grid.spec}", f"--workdir={workdir}"]
    parts += [f"--config.{key}={value}" for key, value in overrides.items()]
    return shlex.join(parts)


def write_grid_record(grid: Grid, workdir: str, command: str) -> None:
    """Stores the expanded grid, or refuses a workdir that holds another grid (its tables would mix two)."""
    path = GridWorkdir(workdir).grid_record
    if storage.is_url(path):  # one worker at a time (GridRun); an upload is complete when it appears
        if not storage.exists(path):
            atomic_io.write_json(path, {**grid.to_json(), "command": command})
            return
    else:
        # Written completely under a private name, then linked: of two workers starting at once, exactly one
        # creates grid.json and the other compares against it.
        # Private to this call (not only this process: two workers may be threads of one, as in the tests).
        private = f"{path}.{claims.worker_id().replace(':', '_')}_{threading.get_ident()}"
        atomic_io.write_json(private, {**grid.to_json(), "command": command})
        try:
            os.link(private, path)
            return
        except FileExistsError:
            pass
        finally:
            os.unlink(private)
    stored, _ = read_grid_record(workdir)
    stored_cells = {cell.name: cell.identity() for cell in stored.cells}
    cells = {cell.name: cell.identity() for cell in grid.cells}
    # Grids may share a workdir when one holds the other and their shared cells are the same runs (the factorial
    # and the leave-one-out component grids): a cell is then trained once, whichever grid asks for it, and the
    # record stays, or becomes, the larger grid.
    if stored.name == grid.name and conflicting_cell(stored, grid) is None:
        if set(cells) <= set(stored_cells):
            return
        if set(stored_cells) <= set(cells):
            atomic_io.write_json(path, {**grid.to_json(), "command": command})
            return
    if stored.name != grid.name or stored_cells != cells:
        raise RunnerError(f"{workdir} holds another grid ({stored.spec!r}; {_first_difference(stored_cells, cells)}); "
                          "use another workdir for another grid or other overrides")


def _first_difference(stored: dict[str, dict], new: dict[str, dict]) -> str:
    for name in sorted(set(stored) | set(new)):
        if name not in new:
            return f"cell {name} is not in this grid"
        if name not in stored:
            return f"cell {name} was not in it"
        for field in sorted(set(stored[name]) | set(new[name])):
            if stored[name].get(field) != new[name].get(field):
                return f"cell {name}: {field} was {stored[name].get(field)}, now {new[name].get(field)}"
    return "another grid name"


def read_grid_record(workdir: str) -> tuple[Grid, str]:
    """(grid, the command that first ran it) of a grid workdir."""
    path = GridWorkdir(workdir).grid_record
    if not storage.exists(path):
        raise RunnerError(f"{workdir}: no {os.path.basename(path)}; is this a grid workdir (scripts/run_ablations.py)?")
    with storage.open(path) as f:
        payload = json.load(f)
    return Grid.from_json(payload), payload.get("command", "")


def describe(grid: Grid, cells: tuple[Cell, ...], workdir: str, *, stale_after: float) -> str:
    """The dry run's listing: every selected cell with its status, config and test sets."""
    lines = [f"grid {grid.name} ({grid.spec}): {len(cells)} of {len(grid.cells)} cells in {workdir}"]
    for cell in cells:
        overrides = " ".join(f"{k}={v}" for k, v in cell.overrides.items())
        tests = ", ".join(f"{e.role}={e.dataset}:{e.split}" for e in cell.evaluations)
        lines.append(f"  {cell_status(workdir, cell, stale_after=stale_after):<8} {cell.name}\n"
                     f"           {cell.config} {overrides}\n           tests: {tests}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclasses.dataclass
class Progress:
    """Counts over the selected cells and an ETA from the cells finished so far."""
    total: int
    workdir: str
    stale_after: float
    finished_here: list[float] = dataclasses.field(default_factory=list)  # wall times of cells this worker ran
    # How many cells can run at once (a Ray cluster's room), when cells held are not all running: queued too.
    slots: int | None = None

    def line(self, cells: tuple[Cell, ...]) -> str:
        statuses = [cell_status(self.workdir, c, stale_after=self.stale_after) for c in cells]
        counts = {s: statuses.count(s) for s in (DONE, FAILED, RUNNING)}
        remaining = self.total - counts[DONE] - counts[FAILED]
        times = self.finished_here or [r["wall_time_s"] for c in cells
                                       if (r := cell_lib.read_record(cell_dir(self.workdir, c)))
                                       and r["status"] == DONE]
        eta = "unknown"
        if times:
            workers = max(1, min(counts[RUNNING], self.slots) if self.slots else counts[RUNNING])
            eta = _duration(remaining * sum(times) / len(times) / workers)
        return (f"[{counts[DONE]} done, {counts[FAILED]} failed, {counts[RUNNING]} running, {remaining} to go "
                f"of {self.total}; ETA {eta}]")


@dataclasses.dataclass
class Summary:
    ran: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # finished before, or held by another worker
    not_done: list[str] = dataclasses.field(default_factory=list)  # selected cells without a record at the end
    interrupted: bool = False


class StopFlag:
    """SIGTERM/SIGINT: stop after the current cell, and make the cell's training stop early: a SIGTERM to a cell
    subprocess, or, in process, a SIGINT turned into the SIGTERM that the trainer catches (it saves a checkpoint
    and returns; the runner then sees an unfinished run)."""

    def __init__(self, in_process: bool):
        self.in_process = in_process
        self.raised = False
        self.child: subprocess.Popen | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        elif self.in_process and signum == signal.SIGINT:
            os.kill(os.getpid(), signal.SIGTERM)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _tail(path: str, lines: int = 5) -> str:
    try:
        with storage.open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-lines:] if line.strip())
    except FileNotFoundError:
        return ""


def cell_arguments(cell: Cell, directory: str, grid: Grid, *, claim_path: str | None = None,
                   heartbeat: float = claims.DEFAULT_HEARTBEAT_S) -> list[str]:
    """The cell process's arguments after the interpreter, for this runner or a Ray worker (which adds its own
    interpreter and --parent_pid): with `claim_path` the cell adopts that claim and keeps it fresh."""
    arguments = ["-m", "asemble_jax.grids.cell", f"--cell={json.dumps(cell.to_json())}", f"--cell_dir={directory}",
                 f"--grid={grid.name}"]
    return arguments + ([f"--claim={claim_path}", f"--heartbeat={heartbeat}"] if claim_path else [])


def cell_outcome(code: int, cell: Cell, directory: str, grid: Grid, elapsed: float, *, stopped: bool) -> str:
    """done / failed / interrupted / lost from a cell process's exit status. A process that died before it could
    write its record (killed, out of memory) gets a failure record naming how it died; `stopped`: a signal was
    passed on to it, so a death by that signal is an interruption."""
    if code == cell_lib.EXIT_INTERRUPTED:
        return "interrupted"
    if code == cell_lib.EXIT_LOST:
        return "lost"
    if code in (cell_lib.EXIT_DONE, cell_lib.EXIT_FAILED):
        return DONE if code == cell_lib.EXIT_DONE else FAILED
    if stopped:  # killed by the signal we passed on before the trainer could catch it
        return "interrupted"
    reason = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    if code == -signal.SIGKILL:
        reason += " (out of memory?)"
    record_failure(cell, directory, grid, f"cell process {reason}; last output: {_tail(Workdir(directory).cell_log)}",
                   elapsed)
    return FAILED


def record_failure(cell: Cell, directory: str, grid: Grid, error: str, elapsed: float) -> None:
    atomic_io.write_json(Workdir(directory).cell_record, cell_lib.failure_record(cell, grid.name, error, elapsed))


@contextlib.contextmanager
def cell_log_file(log_path: str):
    """The local file a cell process writes its output to: cell.log itself, or for a URL a temporary file that is
    appended to the cell.log object when the cell process ends (a process cannot append to an object)."""
    if not storage.is_url(log_path):
        yield log_path
        return
    with tempfile.TemporaryDirectory(prefix="asemble_cell_log_") as folder:
        local = os.path.join(folder, "cell.log")
        try:
            yield local
        finally:
            with open(local, errors="replace") as f:
                storage.append_text(log_path, f.read())


def _run_subprocess(cell: Cell, directory: str, claim: claims.Claim, grid: Grid, stop: StopFlag,
                    heartbeat: float) -> str:
    """Runs the cell in a child process, which adopts the claim; returns done / failed / interrupted / lost."""
    command = [sys.executable, *cell_arguments(cell, directory, grid, claim_path=claim.path, heartbeat=heartbeat),
               f"--parent_pid={os.getpid()}"]
    start = time.perf_counter()
    with cell_log_file(Workdir(directory).cell_log) as local_log, open(local_log, "a") as log:
        # Its own session: a Ctrl-C in the terminal reaches only this runner, which passes on a SIGTERM.
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stop.child = child
        code = child.wait()
        stop.child = None
    if code not in (cell_lib.EXIT_INTERRUPTED, cell_lib.EXIT_LOST, cell_lib.EXIT_DONE, cell_lib.EXIT_FAILED):
        claim.release()  # the child died holding it
    return cell_outcome(code, cell, directory, grid, time.perf_counter() - start, stopped=stop.raised)


def _run_in_process(cell: Cell, directory: str, claim: claims.Claim, grid: Grid, heartbeat: float,
                    progress: bool) -> str:
    claim.start_heartbeat(heartbeat, on_lost=cell_lib.exit_lost)
    try:
        record = cell_lib.execute_cell(cell, directory, grid_name=grid.name, claim=claim, progress=progress)
    except cell_lib.CellInterrupted:
        return "interrupted"
    except cell_lib.ClaimLost:
        return "lost"
    finally:
        claim.release()
    return record["status"]


def _one_worker_on_a_store(workdir: str, stale_after: float, heartbeat: float) -> claims.Claim | None:
    """On an object store, where claims are not atomic (claims.py), the claim of the whole grid workdir that
    makes this the only worker on it; a RunnerError naming the worker that holds it. None on a local disk."""
    if not storage.is_url(workdir):
        return None
    claim = claims.try_claim(workdir, stale_after=stale_after)
    if claim is None:
        owner = claims.inspect(workdir, stale_after=stale_after).owner
        raise RunnerError(f"{workdir}: another worker ({owner}) is running this grid; on an object store one worker "
                          f"at a time runs a grid (claims there are not atomic): wait for it, or for its claim to go "
                          f"stale ({stale_after:.0f} s after it stopped)")
    claim.start_heartbeat(heartbeat)
    return claim


class GridRun:
    """One worker's pass over a grid, whatever runs the cells (this process: run_grid; a Ray cluster:
    grids/ray_engine.py): the grid record, which cells to skip, their claims, the progress lines, the summary."""

    def __init__(self, grid: Grid, workdir: str, *, only: str | None, retry_failed: bool, stale_after: float,
                 heartbeat: float, command: str, report: Callable[[str], None]):
        if heartbeat >= stale_after:
            raise RunnerError(f"heartbeat ({heartbeat} s) must be shorter than stale_after ({stale_after} s)")
        try:
            self.cells = grid.select(only)
        except GridError as error:
            raise RunnerError(str(error)) from None
        storage.makedirs(workdir)
        self.grid_claim = _one_worker_on_a_store(workdir, stale_after, heartbeat)
        write_grid_record(grid, workdir, command or command_line(grid, workdir, {}))
        self.grid, self.workdir, self.stale_after, self.report = grid, workdir, stale_after, report
        self.progress = Progress(len(self.cells), workdir, stale_after)
        self.summary = Summary()
        self.finished = {DONE} if retry_failed else {DONE, FAILED}

    def claim(self, cell: Cell) -> claims.Claim | None:
        """The cell's claim when this worker is to run it; None (the cell skipped) when it is finished or another
        worker holds it."""
        directory = cell_dir(self.workdir, cell)
        if cell_status(self.workdir, cell, stale_after=self.stale_after) in self.finished:
            self.summary.skipped.append(cell.name)
            return None
        claim = claims.try_claim(directory, stale_after=self.stale_after)
        if claim is None:
            self.summary.skipped.append(cell.name)
            return None
        # Another worker may have finished it between the status check and the claim.
        record = cell_lib.read_record(directory)
        if record is not None and record["status"] in self.finished:
            claim.release()
            self.summary.skipped.append(cell.name)
            return None
        return claim

    def started(self, cell: Cell, verb: str = "starting") -> None:
        self.report(f"{self.progress.line(self.cells)} {verb} {cell.name}")

    def ended(self, cell: Cell, outcome: str, elapsed: float, where: str = "") -> None:
        """Reports a cell's outcome (done / failed / interrupted / lost) and counts it."""
        if outcome == "interrupted":
            self.summary.interrupted = True
            self.report(f"{cell.name}: interrupted after {_duration(elapsed)}; rerun the command to resume it")
            return
        if outcome == "lost":
            self.report(f"{cell.name}: another worker took this cell over; not recorded here")
            return
        self.summary.ran.append(cell.name)
        if outcome == FAILED:
            self.summary.failed.append(cell.name)
            directory = cell_dir(self.workdir, cell)
            error = (cell_lib.read_record(directory) or {}).get("error")
            self.report(f"{cell.name}: FAILED after {_duration(elapsed)}{where}: {error} (details in {directory}/)")
        else:
            self.progress.finished_here.append(elapsed)
            self.report(f"{cell.name}: done in {_duration(elapsed)}{where}")

    def close(self) -> Summary:
        """The summary, with the selected cells that have no record; reports both."""
        summary, cells = self.summary, self.cells
        if self.grid_claim is not None:
            self.grid_claim.release()
        summary.not_done = [cell.name for cell in cells
                            if cell_status(self.workdir, cell, stale_after=self.stale_after) not in (DONE, FAILED)]
        self.report(f"{self.progress.line(cells)} this worker ran {len(summary.ran)} cell(s), "
                    f"{len(summary.failed)} failed" + (", stopped by a signal" if summary.interrupted else ""))
        if summary.not_done:
            shown = ", ".join(summary.not_done[:10]) + (f" and {len(summary.not_done) - 10} more"
                                                         if len(summary.not_done) > 10 else "")
            self.report(f"grid incomplete: {len(summary.not_done)} cell(s) not done ({shown}); running elsewhere "
                        "or interrupted: rerun this command to continue them")
        return summary


def run_grid(grid: Grid, workdir: str, *, only: str | None = None, in_process: bool = False,
             retry_failed: bool = False, stale_after: float = claims.DEFAULT_STALE_AFTER_S,
             heartbeat: float = claims.DEFAULT_HEARTBEAT_S, command: str = "",
             report: Callable[[str], None] = functools.partial(print, flush=True)) -> Summary:
    """Runs every selected cell that is neither finished nor held by a live worker, in grid order."""
    run = GridRun(grid, workdir, only=only, retry_failed=retry_failed, stale_after=stale_after, heartbeat=heartbeat,
                  command=command, report=report)
    with StopFlag(in_process) as stop:
        for cell in run.cells:
            if stop.raised:
                run.summary.interrupted = True
                break
            claim = run.claim(cell)
            if claim is None:
                continue
            directory = cell_dir(workdir, cell)
            run.started(cell)
            start = time.perf_counter()
            if in_process:
                outcome = _run_in_process(cell, directory, claim, grid, heartbeat, progress=sys.stderr.isatty())
            else:
                outcome = _run_subprocess(cell, directory, claim, grid, stop, heartbeat)
            run.ended(cell, outcome, time.perf_counter() - start)
            if outcome == "interrupted":
                break
    return run.close()
