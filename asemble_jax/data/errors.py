"""The one exception type that user-facing data code raises for a bad input file."""
from __future__ import annotations

import os


class InputError(ValueError):
    """A file that cannot be used. `str(error)` is the single line a user sees: '<path>: <problem>'."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
