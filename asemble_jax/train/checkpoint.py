"""Preemption-safe checkpoints of the training state and the data iterator, with Orbax.

Orbax writes each step into a temporary folder and renames it when complete, so a kill mid-write leaves the
previous steps intact. A latest step that is there but unreadable (a truncated file, a bad disk) is reported and
the newest readable step before it is used. The best step by validation AUC is kept apart in `best/`, so that
`max_to_keep` never deletes it.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpoints:
    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int):
        directory = os.path.abspath(os.fspath(directory))
        self._latest = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
        self._best = ocp.CheckpointManager(
            os.path.join(directory, "best"), options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    @staticmethod
    def _save_args(state: Any, data_state: dict) -> ocp.args.Composite:
        return ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))

    def save(self, step: int, state: Any, data_state: dict) -> None:
        self._latest.save(step, args=self._save_args(state, data_state), force=True)

    def save_best(self, step: int, state: Any, data_state: dict) -> None:
        self._best.save(step, args=self._save_args(state, data_state), force=True)

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        return self._best.latest_step()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, data iterator state) of the newest readable checkpoint, or None when there is none."""
        return self._restore_newest(self._latest, abstract_state)

    def restore_best(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        return self._restore_newest(self._best, abstract_state)

    @staticmethod
    def _restore_newest(manager: ocp.CheckpointManager, abstract_state: Any):
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                restored = manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
            except Exception as error:  # noqa: BLE001 - any unreadable step falls back to the one before it
                log.warning("checkpoint step %d in %s is unreadable (%s); trying the previous one",
                            step, manager.directory, str(error).splitlines()[0] if str(error) else type(error).__name__)
                continue
            return step, restored.state, restored.data
        return None

    def close(self) -> None:
        self._latest.close()
        self._best.close()


def abstract_like(state: Any) -> Any:
    """Shapes, dtypes and shardings of `state`, what Orbax needs to restore into the same layout."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
