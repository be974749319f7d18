"""Writes that never leave a half-written file behind: a temporary file in the same folder, then os.replace; on
an object store (a URL) the content is kept in memory and uploaded as one object, which is atomic there."""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import IO, Any, Iterator

from asemble_jax import storage


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Like open(path, mode) for writing, but readers see either the old file or the complete new one."""
    path = os.fspath(path)
    if storage.is_url(path):
        buffer = io.BytesIO() if "b" in mode else io.StringIO()
        yield buffer  # an exception here uploads nothing
        value = buffer.getvalue()
        storage.write_bytes(path, value if isinstance(value, bytes) else value.encode("utf-8"))
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    encoding = None if "b" in mode else "utf-8"
    handle = tempfile.NamedTemporaryFile(mode, dir=folder, prefix=".tmp-", suffix=os.path.basename(path),
                                         delete=False, encoding=encoding)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_figure(figure, path: str | os.PathLike, **savefig_kwargs) -> None:
    """Saves a matplotlib figure; the format comes from the path's extension."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format=fmt, **savefig_kwargs)
