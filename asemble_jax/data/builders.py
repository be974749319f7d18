"""Finds the project's TFDS builders by name ("synthetic_sij/coronal") and builds or opens them.

The builders live in the top-level datasets/ folder, installed as `asemble_datasets`; importing a builder module
registers it with TFDS, so `tfds.builder` can then resolve "name/config". Everything is written as array_record so
that no TensorFlow is needed to build or read.

A build made from a manual_dir records a fingerprint of that folder's listing (`MANUAL_DIR_LISTING` in its
metadata); `build` rebuilds when the folder's listing has changed since, or when asked to (`force`), and otherwise
reuses what is there.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from asemble_jax.errors import InputError, first_line

DATASET_NAMES = ("synthetic_sij", "bone_mri", "elazig", "asas", "radiopaedia")
FILE_FORMAT = "array_record"
DEFAULT_DATA_DIR = os.environ.get("TFDS_DATA_DIR", os.path.join("data", "tfds"))
# Metadata key of the manual_dir fingerprint (see `manual_dir_fingerprint`).
MANUAL_DIR_LISTING = "manual_dir_listing"
# A rebuild is written beside the build it replaces, in folders TFDS never reads as a dataset version.
_REBUILD_PREFIX = tfds.core.constants.INCOMPLETE_PREFIX + "rebuild_"
_REPLACED_PREFIX = tfds.core.constants.INCOMPLETE_PREFIX + "replaced_"

log = logging.getLogger(__name__)


def manual_dir_fingerprint(manual_dir: str | os.PathLike) -> dict[str, int | str]:
    """What a build records of its manual_dir: the number of files, their total size and a SHA-256 of their
    listing (relative name, size and modification time of every file; hidden files and folders, which no builder
    reads, are left out). File contents are not read, so this is cheap on any folder; an edited, added, removed or
    renamed file changes it, a folder copied with its times kept (`cp -p`, `shutil.copytree`) or moved does not.
    Only the digest and counts are recorded, no file name."""
    root = pathlib.Path(manual_dir)
    digest = hashlib.sha256()
    files = total = 0
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:  # a dangling link: listed, so that mending it changes the fingerprint
                size, mtime = -1, -1
            rel = pathlib.PurePath(os.path.relpath(path, root)).as_posix()
            digest.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
            files += 1
            total += max(size, 0)
    return {"files": files, "bytes": total, "sha256": digest.hexdigest()}


class ProjectBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of every builder in datasets/: a `strict` switch, and builder files found in any kind of install.

    TFDS finds a builder's README.md, CITATIONS.bib and checksums.tsv through importlib.resources, which fails on
    the namespace package `asemble_datasets` of an editable install; the builder module's own path works always.
    """

    def __init__(self, *, strict: bool = False, **kwargs: Any):
        # strict: stop at the first unusable input file instead of skipping and recording it.
        self._strict = strict
        super().__init__(**kwargs)

    def _download_and_prepare(self, dl_manager, download_config, **kwargs):
        # Taken before any file is read: a file edited during the build makes the next build rebuild.
        manual_dir = getattr(download_config, "manual_dir", None)
        if self.info.metadata is not None:
            if manual_dir:
                self.info.metadata[MANUAL_DIR_LISTING] = manual_dir_fingerprint(manual_dir)
            else:
                self.info.metadata.pop(MANUAL_DIR_LISTING, None)
        return super()._download_and_prepare(dl_manager, download_config, **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(sys.modules[cls.__module__].__file__)

    @classmethod
    def _get_pkg_dir_path(cls) -> epath.Path:
        return cls.code_path.parent


def _import_builder_module(dataset: str) -> None:
    if dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    importlib.import_module(f"asemble_datasets.{dataset}.{dataset}_dataset_builder")


def get_builder(name: str, *, data_dir: str | os.PathLike | None = None, **builder_kwargs: Any):
    """The TFDS builder for "dataset/config" (config optional), reading and writing array_record under data_dir."""
    _import_builder_module(name.split("/")[0].split(":")[0])
    return tfds.builder(name, data_dir=os.fspath(data_dir or DEFAULT_DATA_DIR), file_format=FILE_FORMAT,
                        **builder_kwargs)


def build(name: str, *, data_dir: str | os.PathLike | None = None, manual_dir: str | os.PathLike | None = None,
          force: bool = False, **builder_kwargs: Any):
    """Builds "dataset/config" and returns its builder.

    An existing build is reused, unless `force`, or unless `manual_dir` is given and its fingerprint
    (`manual_dir_fingerprint`) differs from the one the build recorded (a build without one, made before
    fingerprints or without a manual_dir, counts as different). A rebuild is written beside the old build, which
    stays readable until the new one is complete and then is swapped out by two renames: a failed or interrupted
    rebuild leaves the old build in place and never a partial one.
    """
    data_dir = os.fspath(data_dir or DEFAULT_DATA_DIR)
    try:
        builder = get_builder(name, data_dir=data_dir, **builder_kwargs)
        download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir) if manual_dir else None)
        reason = _rebuild_reason(builder, manual_dir, force)
        if reason is None:
            builder.download_and_prepare(download_config=download_config, file_format=FILE_FORMAT)
        else:
            log.warning("%s: rebuilding %s: %s", name, builder.data_path, reason)
            _rebuild(name, builder, data_dir, download_config, builder_kwargs)
            builder = get_builder(name, data_dir=data_dir, **builder_kwargs)
    except InputError:
        raise
    except (ValueError, FileNotFoundError, AssertionError) as error:
        # TFDS's own checks (an unknown config, a missing manual folder, a failed split assertion).
        raise InputError(name, first_line(error)) from None
    return builder


def _rebuild_reason(builder, manual_dir: str | os.PathLike | None, force: bool) -> str | None:
    """Why an existing build must be rebuilt, or None to reuse it (or build it afresh when there is none)."""
    if not builder.data_path.exists():
        return None
    if force:
        return "asked to (force)"
    if manual_dir is None:
        return None
    recorded = (builder.info.metadata or {}).get(MANUAL_DIR_LISTING)
    if recorded is None:
        return "the build recorded no manual_dir fingerprint"
    if dict(recorded) != manual_dir_fingerprint(manual_dir):
        return "the manual_dir's files changed since it was built"
    return None


def _rebuild(name: str, builder, data_dir: str, download_config, builder_kwargs: dict) -> None:
    """Builds into a staging folder beside builder's version folder, then swaps the two."""
    version_dir = pathlib.Path(os.fspath(builder.data_path))
    parent = version_dir.parent
    for leftover in (*parent.glob(_REBUILD_PREFIX + "*"), *parent.glob(_REPLACED_PREFIX + "*")):
        shutil.rmtree(leftover, ignore_errors=True)  # from a rebuild that was killed
    staging = pathlib.Path(tempfile.mkdtemp(prefix=_REBUILD_PREFIX, dir=parent))
    try:
        staged = get_builder(name, data_dir=staging, **builder_kwargs)
        # The same download folder (and so default manual_dir) as a build in data_dir would use.
        staged.download_and_prepare(download_dir=os.path.join(data_dir, "downloads"),
                                    download_config=download_config, file_format=FILE_FORMAT)
        replaced = parent / f"{_REPLACED_PREFIX}{staging.name[len(_REBUILD_PREFIX):]}_{version_dir.name}"
        os.rename(version_dir, replaced)
        os.rename(os.fspath(staged.data_path), version_dir)
        shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
