"""Staging: a copy of prepared TFDS datasets from a bucket (gs://, s3://, or any folder) on this host's local disk.

`tfds.data_source` reads array_record shards by random access, which it cannot do on GCS; a TPU VM trains from a
local copy, made once per host (scripts/stage_dataset.py, run on every worker by scripts/run_tpu.sh):

    DATA_DIR/NAME/CONFIG/VERSION/     the copy, complete and verified, with .staged.json (its files' sizes, SHA-256)
    DATA_DIR/.staging/                copies in progress; a copy becomes visible only by renaming its whole folder

A dataset is copied file by file into .staging/, each file hashed as it is read; then every file's size is checked
against the source's, every file is read back and its hash compared, and TFDS opens every split and finds the
number of examples its dataset_info.json records. Only then is the folder renamed into place. A copy killed at any
point leaves nothing in place that looks complete, and the next run starts it again. A copy whose .staged.json
lists the same files with the same sizes and modification times as the source, all still there at those sizes,
is kept: staging again costs a listing of the source and a stat of each file (`verify` reads them all and
compares their hashes).
One staging runs on a host at a time (a lock on DATA_DIR/.staging.lock); a second waits, then finds the copy made.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Iterator, Sequence

import tensorflow_datasets as tfds
from etils import epath
from tqdm import tqdm

from asemble_jax import atomic_io, storage
from asemble_jax.errors import InputError, UserError, first_line

MANIFEST = ".staged.json"
STAGING = ".staging"
_INFO = "dataset_info.json"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class Staged:
    """One dataset version: NAME/CONFIG/VERSION, its size, and whether this call copied it (else it was there)."""
    name: str
    num_bytes: int
    copied: bool


def stage(source: str, data_dir: str | os.PathLike, datasets: Sequence[str] = (), *,
          progress: bool = True) -> list[Staged]:
    """Copies the prepared datasets under `source` (each NAME/CONFIG, or all of them) into the local `data_dir`."""
    if storage.is_url(data_dir):
        raise InputError(data_dir, "staging copies to this host's disk: give a local folder as data_dir")
    data_dir = os.path.abspath(os.fspath(data_dir))
    if storage.is_url(source):
        storage.check_reachable(source)  # a missing bucket or no credentials, said as such
    root = epath.Path(source)
    with _failing(source, "cannot list it"):
        versions = _prepared_versions(root, datasets)
    os.makedirs(data_dir, exist_ok=True)
    with _host_lock(data_dir):
        shutil.rmtree(os.path.join(data_dir, STAGING), ignore_errors=True)  # copies killed before this one
        return [_stage_version(root, name, data_dir, progress) for name in versions]


def _prepared_versions(root: epath.Path, datasets: Sequence[str]) -> list[str]:
    """NAME/CONFIG/VERSION (or NAME/VERSION) of every prepared dataset under root, or of those `datasets` ask for."""
    if datasets:
        found = []
        for dataset in datasets:
            versions = [path.parent for path in (root / dataset).glob(f"*/{_INFO}") if _VERSION.match(path.parent.name)]
            if not versions:
                raise InputError(f"{root}/{dataset}", "no prepared TFDS dataset here (no VERSION/dataset_info.json)")
            found += [f"{dataset}/{version.name}" for version in versions]
        return sorted(found)
    found = [path.parent for pattern in ("*/*/*/", "*/*/") for path in
             root.glob(pattern + _INFO) if _VERSION.match(path.parent.name)]
    if not found:
        raise InputError(root, "no prepared TFDS dataset here (no NAME/CONFIG/VERSION/dataset_info.json)")
    return sorted(os.fspath(path.relative_to(root)) for path in found)


def _source_files(folder: epath.Path, prefix: str = "") -> dict[str, tuple[int, int]]:
    """Every file of a dataset version: relative path -> (size in bytes, modification time). By iterdir, not walk:
    epath's walk drops the gs:// of the folders it yields."""
    files = {}
    for path in folder.iterdir():
        if path.is_dir():
            files.update(_source_files(path, f"{prefix}{path.name}/"))
        else:
            stat = path.stat()
            files[prefix + path.name] = (stat.length, int(stat.mtime))
    return files


def _stage_version(root: epath.Path, name: str, data_dir: str, progress: bool) -> Staged:
    source_dir = root / name
    with _failing(source_dir, "cannot list it"):
        files = _source_files(source_dir)
    total = sum(size for size, _ in files.values())
    destination = os.path.join(data_dir, name)
    if _complete_copy(destination) == files:
        return Staged(name, total, copied=False)
    os.makedirs(os.path.join(data_dir, STAGING), exist_ok=True)
    work = tempfile.mkdtemp(dir=os.path.join(data_dir, STAGING))
    # The copy's folder is named after its version, as TFDS expects of a dataset folder.
    copy_dir = os.path.join(work, "copy", os.path.basename(name))
    os.makedirs(copy_dir)
    digests = {}
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress) as bar:
        for relative in sorted(files):
            with _failing(source_dir / relative, f"copying it into {data_dir} failed"):
                digests[relative] = _copy(source_dir / relative, os.path.join(copy_dir, relative), bar.update)
    _verify(copy_dir, {k: size for k, (size, _) in files.items()}, digests, source_dir)
    atomic_io.write_json(os.path.join(copy_dir, MANIFEST), {"source": os.fspath(source_dir), "files": {
        k: {"bytes": size, "source_mtime": mtime, "sha256": digests[k]} for k, (size, mtime) in files.items()}})
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if os.path.lexists(destination):  # an older or incomplete copy: out of the way first, deleted after
        os.rename(destination, os.path.join(work, "replaced"))
    os.rename(copy_dir, destination)
    shutil.rmtree(work, ignore_errors=True)
    return Staged(name, total, copied=True)


def _complete_copy(destination: str) -> dict[str, tuple[int, int]] | None:
    """The files of a complete copy with the sizes and source modification times its manifest lists, where each
    file on disk still has that size; None where there is none."""
    try:
        with open(os.path.join(destination, MANIFEST), encoding="utf-8") as f:
            files = {k: (v["bytes"], v["source_mtime"]) for k, v in json.load(f)["files"].items()}
        if all(os.path.getsize(os.path.join(destination, k)) == size for k, (size, _) in files.items()):
            return files
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _copy(source: epath.Path, target: str, advance) -> str:
    """Copies one file, returning the SHA-256 of the bytes read."""
    digest = hashlib.sha256()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with source.open("rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            advance(len(chunk))
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(version_dir: str | os.PathLike) -> None:
    """Checks a staged copy against its manifest: every file there, of its size and SHA-256, and TFDS reads it."""
    version_dir = os.fspath(version_dir)
    try:
        with open(os.path.join(version_dir, MANIFEST), encoding="utf-8") as f:
            listed = json.load(f)["files"]
    except (OSError, ValueError, KeyError) as error:
        raise InputError(version_dir, f"not a complete staged copy ({first_line(error)})") from None
    _verify(version_dir, {k: v["bytes"] for k, v in listed.items()}, {k: v["sha256"] for k, v in listed.items()},
            version_dir)


def _verify(copy_dir: str, sizes: dict[str, int], digests: dict[str, str], source) -> None:
    for relative, size in sorted(sizes.items()):
        path = os.path.join(copy_dir, relative)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            raise InputError(source, f"{relative}: the copy is not {size} bytes long like the source")
        if _file_digest(path) != digests[relative]:
            raise InputError(source, f"{relative}: the copy on disk differs from the bytes read (SHA-256)")
    try:
        builder = tfds.builder_from_directory(copy_dir)
        for split, info in builder.info.splits.items():
            records = builder.as_data_source(split=split)
            if len(records) != info.num_examples:
                raise InputError(source, f"split {split}: {len(records)} examples, dataset_info.json says "
                                         f"{info.num_examples}")
            if len(records):
                records[len(records) - 1]  # the last shard's index and last record are there and readable
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever TFDS or array_record raise about a broken copy
        raise InputError(source, f"TFDS cannot read the copy: {type(error).__name__}: {first_line(error)}") \
            from None


@contextlib.contextmanager
def _failing(path, what: str) -> Iterator[None]:
    """An unreadable source (missing, no permission, an unreachable bucket, no credentials) or a full disk is one
    line naming the file or URL."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - on a URL, whatever the store's client raises
        if not (isinstance(error, OSError) or storage.is_url(os.fspath(path))):
            raise
        raise InputError(path, f"{what}: {storage.describe(error)}") from None


@contextlib.contextmanager
def _host_lock(data_dir: str) -> Iterator[None]:
    with open(os.path.join(data_dir, ".staging.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
