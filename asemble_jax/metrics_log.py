"""metrics.jsonl: one JSON object per logged training step or evaluation.

On a local disk each record is appended and flushed as it happens. An object store has no append: there the log
is kept in memory and the whole object is uploaded again at each `flush()`, which the trainer calls before it
starts writing each checkpoint, and when it stops. So a preempted run has every record up to its last complete
checkpoint (the records after it are dropped on resume anyway), and a reader sees a complete log, never half a
line. A flush uploads the whole log, 193 bytes per record (measured: results/storage/README.md): with base.py's
log_every=10, eval_every=50, checkpoint_every=50, a 100k-step run has 12,000 records, so its 2,000 flushes upload
from 1.2 kB up to 2.3 MB each, 2.3 GB in all; one checkpoint of the tiny preset (4.1 MB) is larger than the last.

On resume the records written after the restored checkpoint are dropped (atomically), so a run that was killed
and resumed has the same log as one that never stopped.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from asemble_jax import atomic_io, storage


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    def __init__(self, path: str | os.PathLike, *, enabled: bool = True):
        self.path = os.fspath(path)
        self.enabled = enabled
        # On an object store: every line of the log, and whether some were not uploaded yet.
        self._lines: list[str] | None = None
        self._dirty = False

    def _read_lines(self) -> list[str]:
        try:
            with storage.open(self.path) as f:
                return [line for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def truncate_after(self, step: int) -> None:
        if not self.enabled:
            return
        if storage.is_url(self.path):
            lines = self._read_lines()
            self._lines = [line for line in lines if json.loads(line).get("step", 0) <= step]
            if self._lines != lines:
                atomic_io.write_text(self.path, "".join(self._lines))
            return
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_io.write_text(self.path, "".join(kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n"
        if storage.is_url(self.path):
            if self._lines is None:
                self._lines = self._read_lines()
            self._lines.append(line)
            self._dirty = True
            return
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()

    def flush(self) -> None:
        """Makes every record written so far durable (a no-op on a local disk, where each write is)."""
        if self._dirty:
            atomic_io.write_text(self.path, "".join(self._lines))
            self._dirty = False

    def read(self) -> list[dict[str, Any]]:
        if self._lines is not None:
            return [json.loads(line) for line in self._lines]
        return [json.loads(line) for line in self._read_lines()]
