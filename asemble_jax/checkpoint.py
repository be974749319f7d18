"""Preemption-safe checkpoints of a workdir's training state and data iterator, with Orbax.

Orbax writes each step into a temporary folder and renames it when complete (on an object store, which has no
rename, it writes the step in place and marks it complete last, with a commit_success.txt), so a kill mid-write
leaves the previous steps intact. A workdir URL (gs://...) is handed to Orbax as it is: it writes there through
tensorstore. A latest step that is there but unreadable (a truncated file, a bad disk) is reported and
the newest readable step before it is used. The best step by validation AUC is kept apart in `best/`, so that
`max_to_keep` never deletes it. Inference restores the weights alone (restore_weights): the optimiser state stays
on disk.

On an object store tensorstore retries a failed request with its own defaults, 32 times with up to 32 s between
tries: a store that went away mid-write held a checkpoint, and the run's exit (which waits for it), for 15 min.
The retries are bounded here (_STORE_REQUEST_RETRIES) so that a dead store ends the run within ~2 min, in one line
naming the checkpoints' URL (a StorageError), without the tracebacks Orbax and tensorstore print on the way.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import traceback
from typing import Any

import jax
import orbax.checkpoint as ocp

from asemble_jax import storage
from asemble_jax.errors import first_line

log = logging.getLogger(__name__)

# About the budget of Google's own storage client (120 s, its default retry deadline): 1+2+4+8+16+16+16 s of
# back-off (plus up to 1 s of jitter each) rides out a transient 429/503, and a dead endpoint fails each request
# after ~65 s. The whole save then fails, Orbax never writes the step's commit marker, and a rerun restores the
# step before it.
_STORE_REQUEST_RETRIES = {"max_retries": 7, "initial_delay": "1s", "max_delay": "16s"}


def _bound_store_retries() -> None:
    """Puts _STORE_REQUEST_RETRIES into every tensorstore context Orbax builds. Orbax offers no option for them, so
    its default contexts get them (tensorstore_utils.get_ts_context copies these dicts); tests/test_gcs_workdir.py
    checks that they arrive."""
    from orbax.checkpoint._src.serialization import tensorstore_utils

    defaults = [getattr(tensorstore_utils, name, None) for name in ("_BASE_TS_CONTEXT", "_DEFAULT_OCDBT_TS_CONTEXT")]
    if not all(isinstance(context, dict) for context in defaults):
        log.warning("this Orbax keeps its tensorstore defaults elsewhere: retries on an object store are not "
                    "bounded, and a store that goes away may hold a checkpoint for ~15 min")
        return
    for context in defaults:
        for resource in ("gcs_request_retries", "s3_request_retries"):
            context[resource] = dict(_STORE_REQUEST_RETRIES)


_bound_store_retries()


def _in_orbax(filename: str) -> bool:
    return f"{os.sep}orbax{os.sep}" in filename


class _WithoutTraceback(logging.Filter):
    """Orbax logs a failed background save with its traceback, then raises the same error in the main thread at
    the next save or wait, where it reaches the user as one line (its traceback going to train.log, unless the
    store itself failed): the log record keeps its message and loses the traceback. asyncio's record of a write
    whose failure nobody awaited (one per array of a save that a dead store failed) is treated alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (_in_orbax(record.pathname) or any(
                _in_orbax(frame.f_code.co_filename) for frame, _ in traceback.walk_tb(record.exc_info[2]))):
            record.exc_info = record.exc_text = None
        return True


def _closed_loop_callbacks_dropped(previous):
    """An unraisable-exception hook that drops what tensorstore reports when a write of a failed save completes
    after Orbax stopped waiting for it and closed the asyncio loop that awaited it: "Event loop is closed" from
    call_soon_threadsafe, once per write still pending (thousands after a store went away), saying nothing the
    failure itself did not. Everything else goes to `previous`."""
    def hook(unraisable):
        error = unraisable.exc_value
        frames = [frame.f_code.co_name for frame, _ in traceback.walk_tb(unraisable.exc_traceback)]
        if not (isinstance(error, RuntimeError) and "call_soon_threadsafe" in frames):
            previous(unraisable)

    return hook


for _logger in ("absl", "asyncio"):  # Orbax logs through absl's logger
    logging.getLogger(_logger).addFilter(_WithoutTraceback())
sys.unraisablehook = _closed_loop_callbacks_dropped(sys.unraisablehook)


def _join_orphaned_writers() -> list[Exception]:
    """Joins the writer threads of a save whose start failed on a dead store before its manager tracked it: they
    wait for a step folder that never comes, until Orbax's coordination timeout. The interpreter would join them
    at exit anyway, but after the user's one line, and print their failures below it. Returns their failures
    (Orbax's join raises a writer's own), for the caller to report with the managers'."""
    try:
        from orbax.checkpoint._src.futures.future import _SignalingThread
    except ImportError:  # another Orbax: its writers are left to the interpreter's exit
        return []
    failures = []
    for thread in threading.enumerate():
        if isinstance(thread, _SignalingThread) and thread is not threading.current_thread():
            try:
                thread.join()
            except Exception as failure:  # noqa: BLE001 - every writer is joined before anything is reported
                failures.append(failure)
    return failures


class Checkpoints:
    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int):
        directory = storage.absolute(directory)
        # Orbax raises a store's failures as gcsfs, aiohttp or tensorstore gave them: on a store they become the
        # user's one line naming it.
        self._failures = functools.partial(storage.failures_named, directory) if storage.is_url(directory) \
            else contextlib.nullcontext
        self._latest = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
        self._best = ocp.CheckpointManager(
            _best_directory(directory), options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, kind, error, _) -> None:
        """Waits for the saves still being written, then closes both managers, whatever failed: a save left running
        into the interpreter's exit is torn down midway, and its writes print their tracebacks after the user's
        error. The first failure is raised when the block had none; after a failure in the block (which is what
        the user is told) the first is logged in one line."""
        failures = []
        for manager in (self._latest, self._best):
            for finish in (manager.wait_until_finished, manager.close):  # close() after a failed wait still runs
                try:
                    with self._failures():
                        finish()
                except Exception as failure:  # noqa: BLE001 - every manager is finished before anything is raised
                    failures.append(failure)
        for orphan_failure in _join_orphaned_writers():
            try:
                with self._failures():
                    raise orphan_failure
            except Exception as failure:  # noqa: BLE001 - named as the managers' failures are
                failures.append(failure)
        if failures and error is None:
            raise failures[0]
        for failure in failures[:1]:  # a dead store fails every later step the same way
            log.warning("the checkpoint being written when the run stopped did not complete: %s", first_line(failure))

    @staticmethod
    def _save_args(state: Any, data_state: dict) -> ocp.args.Composite:
        return ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))

    def save(self, step: int, state: Any, data_state: dict) -> None:
        with self._failures():
            self._latest.save(step, args=self._save_args(state, data_state), force=True)

    def save_best(self, step: int, state: Any, data_state: dict) -> None:
        """Keeps `state` as the best step. A complete best/STEP already there is this run's own (a resumed run
        reaches the same step with the same state) and is kept: Orbax refuses to save a step twice."""
        with self._failures():
            if step in self._best.all_steps():
                log.info("best checkpoint step %d is already in %s; kept", step, self._best.directory)
                return
            self._best.save(step, args=self._save_args(state, data_state), force=True)

    def best_record(self) -> tuple[int, dict] | None:
        """(step, data state) of the newest readable best checkpoint, reading its JSON part only."""
        def restore(step):
            return step, self._best.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data

        return _newest_readable(self._best, restore)

    def wait(self) -> None:
        with self._failures():
            self._latest.wait_until_finished()
            self._best.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        return self._best.latest_step()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, data iterator state) of the newest readable checkpoint, or None when there is none."""
        return self._restore_newest(self._latest, abstract_state)

    @staticmethod
    def _restore_newest(manager: ocp.CheckpointManager, abstract_state: Any):
        def restore(step):
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
            return step, restored.state, restored.data

        return _newest_readable(manager, restore)


def restore_weights(directory: str | os.PathLike, abstract_parts: dict[str, Any], which: str
                    ) -> tuple[int, dict[str, Any]] | None:
    """(step, {name: subtree}) of the named top-level fields of the saved training state only (e.g. params and
    batch_stats, never the optimiser state), from the newest readable "best" step (the latest one standing in when
    no best was saved) or the newest readable "latest" one; None when there is none. Opens the checkpoints read-
    only, so that it can read a workdir that another process is training."""
    directory = storage.absolute(directory)
    abstract_parts = jax.tree.map(_placed, abstract_parts)
    options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    for path in ([_best_directory(directory)] if which == "best" else []) + [directory]:
        if not storage.isdir(path):
            continue
        manager = ocp.CheckpointManager(path, options=options)

        def restore(step):
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=abstract_parts, partial_restore=True,
                                             restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_parts))))
            return step, dict(restored.state)

        try:
            found = _newest_readable(manager, restore)
        finally:
            manager.close()
        if found is not None:
            return found
    return None


def _best_directory(directory: str) -> str:
    return os.path.join(directory, "best")


def _newest_readable(manager: ocp.CheckpointManager, restore):
    """restore(step) of the newest step that restores; an unreadable step is reported and the one before tried."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore(step)
        except Exception as error:  # noqa: BLE001 - any unreadable step falls back to the one before it
            log.warning("checkpoint step %d in %s is unreadable (%s); trying the previous one",
                        step, manager.directory, first_line(error))
    return None


def _placed(leaf: Any) -> Any:
    """An abstract leaf with a place to restore to: one without a sharding (from nnx.eval_shape) goes to the first
    local device, as a freshly built model would, instead of coming back as a NumPy array."""
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                    sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    return leaf


def abstract_like(state: Any) -> Any:
    """Shapes, dtypes and shardings of `state`, what Orbax needs to restore into the same layout."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
