"""Finds the project's TFDS builders by name ("synthetic_sij/coronal") and builds or opens them.

The builders live in the top-level datasets/ folder, installed as `asemble_datasets`; importing a builder module
registers it with TFDS, so `tfds.builder` can then resolve "name/config". Everything is written as array_record so
that no TensorFlow is needed to build or read.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from asemble_jax.errors import InputError

DATASET_NAMES = ("synthetic_sij", "bone_mri", "elazig", "asas", "radiopaedia")
FILE_FORMAT = "array_record"
DEFAULT_DATA_DIR = os.environ.get("TFDS_DATA_DIR", os.path.join("data", "tfds"))


class ProjectBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of every builder in datasets/: a `strict` switch, and builder files found in any kind of install.

    TFDS finds a builder's README.md, CITATIONS.bib and checksums.tsv through importlib.resources, which fails on
    the namespace package `asemble_datasets` of an editable install; the builder module's own path works always.
    """

    def __init__(self, *, strict: bool = False, **kwargs: Any):
        # strict: stop at the first unusable input file instead of skipping and recording it.
        self._strict = strict
        super().__init__(**kwargs)

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
          **builder_kwargs: Any):
    """Builds "dataset/config" unless already built, and returns its builder."""
    try:
        builder = get_builder(name, data_dir=data_dir, **builder_kwargs)
        download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir) if manual_dir else None)
        builder.download_and_prepare(download_config=download_config, file_format=FILE_FORMAT)
    except InputError:
        raise
    except (ValueError, FileNotFoundError, AssertionError) as error:
        # TFDS's own checks (an unknown config, a missing manual folder, a failed split assertion).
        raise InputError(name, (str(error).strip().splitlines() or [type(error).__name__])[0]) from None
    return builder
