"""User-facing errors and the wrapper every command-line entry point runs under.

A `UserError` is a problem with what the user asked for (a file, a workdir, a config, a grid), not a bug: its
message is the one line they need, naming the file or URL and the problem. Entry points print that line and
exit with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Callable, Sequence

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error whose message is the single line a user sees."""


class InputError(UserError, ValueError):
    """A file that cannot be used. `str(error)` is '<path>: <problem>'."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _quiet_shutdown() -> None:
    """Keeps the error the last line. The interpreter's exit collects what the failure abandoned, e.g. background
    checkpoint writes to a storage server that went away: asyncio logs each future's unretrieved exception, with
    its traceback, and Python warns of each coroutine never awaited, after the line that said what went wrong."""
    logging.getLogger("asyncio").disabled = True
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: what a one-line error or
    a log line quotes of a library's multi-line exception."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs an entry point's main(argv): a UserError becomes 'error: <line>' on stderr and exit status 2; a
    closed stdout (`... | head`) ends quietly."""
    try:
        return int(main(argv) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        _quiet_shutdown()
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # The reader went away: point stdout at /dev/null so that the interpreter's final flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
