"""metrics.jsonl: one JSON object per logged training step or evaluation, appended and flushed as it happens.

On resume the records written after the restored checkpoint are dropped (atomically), so a run that was killed
and resumed has the same log as one that never stopped.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from asemble_jax import atomic_io


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

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_io.write_text(self.path, "".join(kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]
