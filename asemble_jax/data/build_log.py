"""Files a dataset build skipped, and why: kept in the build's metadata and log, or raised at once in strict mode."""
from __future__ import annotations

import dataclasses
import logging
import os

from asemble_jax.errors import InputError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SkippedFiles:
    """Collects unusable inputs so that one bad file never sinks a whole build, unless `strict` asks for that."""

    strict: bool = False
    entries: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def skip(self, error: InputError) -> None:
        if self.strict:
            raise error
        log.warning("skipped %s", error)
        self.entries.append({"path": error.path, "problem": error.problem})

    def as_metadata(self) -> list[dict[str, str]]:
        return sorted(self.entries, key=lambda e: e["path"])

    def __len__(self) -> int:
        return len(self.entries)


def relative(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """Path as recorded in metadata: relative to the manual_dir, so metadata does not leak a user's home layout."""
    return os.path.relpath(os.fspath(path), os.fspath(root))
