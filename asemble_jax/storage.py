"""The one place that knows whether a path is a local file or an object in a store (`gs://`, `s3://`, ...).

Every path the project reads or writes may be either. A local path goes to the operating system exactly as it
always did; a URL goes to fsspec (gcsfs for `gs://`, s3fs for `s3://`: the `gcs` extra), the backend that
etils.epath, and so Orbax and TFDS, use for these schemes when TensorFlow is absent. Orbax is handed the URL
itself and writes it through tensorstore.

An object store has no rename and no append, and a single upload is atomic: a URL is always written as one whole
object (atomic_io, metrics_log), and never as a folder first (a store has none: `makedirs` only checks that the
bucket can be reached). Any failure of the store (endpoint unreachable, bucket missing, no credentials, access
denied) becomes a StorageError, one line naming the URL and the cause.
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import io
import logging
import os
import pathlib
import posixpath
import re
from typing import IO, Iterator

from asemble_jax.errors import UserError, first_line

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class StorageError(UserError):
    """An object store that cannot be used: the message names the URL and the cause."""


def is_url(path: str | os.PathLike) -> bool:
    return bool(_URL.match(os.fspath(path)))


def absolute(path: str | os.PathLike) -> str:
    """An absolute local path, or the URL as it is (os.path.abspath would make `gs://b` into `<cwd>/gs:/b`)."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def relative(path: str, root: str) -> str:
    """`path` relative to `root`, for records that must survive moving a folder."""
    if is_url(path):
        return posixpath.relpath(path[len(_URL.match(path).group(0)):], root[len(_URL.match(root).group(0)):])
    return os.path.relpath(path, root)


def as_path(path: str | os.PathLike) -> pathlib.Path:
    """A pathlib.Path to build output paths with `/`; for a URL an etils.epath.Path, which keeps the `//` that
    pathlib collapses (gs://b/x would become gs:/b/x)."""
    if is_url(path):
        from etils import epath

        return epath.Path(os.fspath(path))
    return pathlib.Path(path)


def dirname(path: str) -> str:
    return os.path.dirname(os.fspath(path))


@functools.cache
def _filesystem(protocol: str):
    try:
        import fsspec
    except ImportError:  # fsspec comes with TFDS; gcsfs/s3fs are the `gcs` extra
        raise StorageError(f"{protocol}:// paths need the gcs extra (pip install 'asemble_jax[gcs]')") from None
    # gcsfs logs a request that ran out of retries with its traceback; the failure reaches the caller anyway and
    # becomes a StorageError, the one line the user sees.
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    try:
        # No listing cache: other processes (grid workers, a resumed run) write the same prefixes.
        return fsspec.filesystem(protocol, use_listings_cache=False)
    except (ImportError, ValueError) as error:
        raise StorageError(f"{protocol}:// paths need a filesystem for them ({first_line(error)}); "
                           "pip install 'asemble_jax[gcs]'") from None


def _fs(url: str):
    return _filesystem(_URL.match(url).group(1).lower())


def describe(error: BaseException) -> str:
    """The cause of a storage failure in a few words: what the user must fix."""
    raw = first_line(error)
    text = _TENSORSTORE_SPEC.sub("", raw)
    try:
        import google.auth.exceptions as auth
    except ImportError:
        auth = None
    if auth is not None and isinstance(error, (auth.DefaultCredentialsError, auth.RefreshError)):
        return f"no usable credentials ({text}); run `gcloud auth application-default login`, or give the VM a " \
               "service account with access to the bucket"
    code = getattr(error, "code", None)
    if code in (401, 403) or text.startswith("Forbidden") or isinstance(error, PermissionError):
        return f"permission denied ({text}); the account in use needs read and write access to the bucket"
    if isinstance(error, FileNotFoundError):
        return "not found"
    if _is_connection_error(error, raw):
        return f"cannot reach the storage server ({text})"
    return f"{type(error).__name__}: {text}"


# tensorstore (Orbax's writer) appends the whole spec of the array it was writing, ~1,500 characters, to its errors.
_TENSORSTORE_SPEC = re.compile(r"\s*\[tensorstore_spec='.*?'\](?=\s|$)")
# tensorstore raises a ValueError whatever failed; libcurl's code says when it was the connection: 6 host not
# resolved, 7 refused, 28 timed out, 52 no reply, 56 reset.
_CURL_CONNECTION_FAILURE = re.compile(r"\[curl_code='(6|7|28|52|56)'\]")


def _is_connection_error(error: BaseException, text: str) -> bool:
    if isinstance(error, (ConnectionError, TimeoutError)) or _CURL_CONNECTION_FAILURE.search(text):
        return True
    try:
        import aiohttp
        if isinstance(error, aiohttp.ClientError):
            return True
    except ImportError:
        pass
    try:
        import requests
        return isinstance(error, requests.exceptions.ConnectionError)
    except ImportError:
        return False


@contextlib.contextmanager
def failures_named(url: str) -> Iterator[None]:
    """Any failure of the store under this block becomes a StorageError naming `url` (a missing object stays a
    FileNotFoundError, which callers handle as on a local disk)."""
    try:
        yield
    except (UserError, FileNotFoundError, FileExistsError):
        raise
    except Exception as error:  # noqa: BLE001 - gcsfs, aiohttp and google.auth raise many types
        raise StorageError(f"{url}: {describe(error)}") from None


def _bucket(url: str) -> str:
    scheme = _URL.match(url).group(0)
    return scheme + url[len(scheme):].split("/", 1)[0]


@functools.cache
def _check_bucket(bucket: str) -> None:
    with failures_named(bucket):
        try:
            _fs(bucket).info(bucket)
        except FileNotFoundError:
            raise StorageError(f"{bucket}: no such bucket (create it first, e.g. gcloud storage buckets create "
                               f"{bucket})") from None


def check_reachable(url: str) -> None:
    """A StorageError unless the bucket of `url` exists and answers (checked once per bucket and process)."""
    _check_bucket(_bucket(url))


def makedirs(path: str | os.PathLike) -> None:
    """A local folder (and its parents); for a URL only the bucket check: a store has no folders."""
    path = os.fspath(path)
    if is_url(path):
        check_reachable(path)
    else:
        os.makedirs(path, exist_ok=True)


def exists(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.exists(path)
    with failures_named(path):
        return _fs(path).exists(path)


def isdir(path: str | os.PathLike) -> bool:
    """A local folder, or a URL prefix with at least one object under it."""
    path = os.fspath(path)
    if not is_url(path):
        return os.path.isdir(path)
    with failures_named(path):
        return _fs(path).isdir(path)


def listdir(path: str | os.PathLike) -> list[str]:
    """Names directly under a folder or URL prefix; FileNotFoundError when there is none."""
    path = os.fspath(path)
    if not is_url(path):
        return os.listdir(path)
    with failures_named(path):
        names = [posixpath.basename(p.rstrip("/")) for p in _fs(path).ls(path, detail=False)]
    if not names:
        raise FileNotFoundError(path)
    return names


def mtime(path: str | os.PathLike) -> float:
    """Modification time in seconds since the epoch (the store's clock for a URL)."""
    path = os.fspath(path)
    if not is_url(path):
        return os.stat(path).st_mtime
    with failures_named(path):
        return _fs(path).modified(path).timestamp()


def open(path: str | os.PathLike, mode: str = "r", **kwargs) -> IO:  # noqa: A001 - the builtin, or a URL's
    """builtins.open for a local path; for a URL, reading only (writes go through write_bytes)."""
    path = os.fspath(path)
    if not is_url(path):
        return builtins.open(path, mode, **kwargs)
    if any(c in mode for c in "wax+"):
        raise ValueError(f"{path}: objects are written whole, with storage.write_bytes, not opened for {mode!r}")
    with failures_named(path):
        handle = _fs(path).open(path, "rb")
    if "b" in mode:
        return handle
    return io.TextIOWrapper(handle, encoding=kwargs.get("encoding") or "utf-8", errors=kwargs.get("errors"),
                            newline=kwargs.get("newline"))


def read_bytes(path: str | os.PathLike) -> bytes:
    path = os.fspath(path)
    if not is_url(path):
        with builtins.open(path, "rb") as f:
            return f.read()
    with failures_named(path):
        return _fs(path).cat_file(path)


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(url: str, data: bytes) -> None:
    """Uploads `data` as the whole object `url`, in one request: readers see the old object or the new one."""
    with failures_named(url):
        _fs(url).pipe_file(url, data)


def remove(path: str | os.PathLike) -> None:
    """Deletes a file or object; one that is already gone is no error."""
    path = os.fspath(path)
    with contextlib.suppress(FileNotFoundError):
        if not is_url(path):
            os.unlink(path)
            return
        with failures_named(path):
            _fs(path).rm_file(path)


def touch(path: str | os.PathLike) -> None:
    """Sets the modification time to now; FileNotFoundError when it is gone. An object is uploaded again with its
    own content (a store cannot change an object's time otherwise)."""
    path = os.fspath(path)
    if not is_url(path):
        os.utime(path)
        return
    write_bytes(path, read_bytes(path))


def create_exclusive(path: str | os.PathLike, data: bytes) -> bool:
    """Creates `path` holding `data` unless it exists: False when it does. Exactly one of several local processes
    wins (O_EXCL). On a URL the check and the upload are two requests, so two workers that start together can
    both win: the grid runner therefore lets one worker at a time use a grid workdir on a store."""
    path = os.fspath(path)
    if is_url(path):
        if exists(path):
            return False
        write_bytes(path, data)
        return True
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def append_text(path: str | os.PathLike, text: str) -> None:
    """Appends to a local file; an object is read and uploaded again whole (for rare writes, such as logs of
    errors)."""
    path = os.fspath(path)
    if not is_url(path):
        with builtins.open(path, "a") as f:
            f.write(text)
        return
    try:
        old = read_bytes(path)
    except FileNotFoundError:
        old = b""
    write_bytes(path, old + text.encode("utf-8"))
