"""What a built dataset holds, read from the build itself: images and distinct patients (or cases) per split and
class, counted over its stored records (label, patient or case id and plane of every example), and what its
builder stored as metadata (skipped, ignored and unlisted files, the preprocessing settings, where patient ids came
from). There is no list of expected numbers here: a dataset that is not built under data_dir says so. The paper's
Table 1 (grids/paper_tables.py) is made from these counts.

Only counts leave this module; file names and patient ids stay inside it.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Iterable, Mapping

from asemble_jax.data.builders import get_builder
from asemble_jax.data.pipeline import text
from asemble_jax.errors import InputError, first_line

# The splits every builder partitions its labelled images into; others (leave-one-patient-out folds, `unlabeled`)
# are counted apart and left out of the totals, since folds hold the same images again.
MAIN_SPLITS = ("train", "val", "test")
UNLABELED = "unlabeled"  # the class of a record stored with label -1 (bone_mri's scans without readings)


@dataclasses.dataclass(frozen=True)
class Counts:
    """Images and distinct patient (or case) ids, per class and over all classes, of some records."""
    images: Mapping[str, int]  # class -> images
    patients: Mapping[str, frozenset[str]]  # class -> ids; a patient with slices of both classes is in both

    @property
    def total_images(self) -> int:
        return sum(self.images.values())

    @property
    def total_patients(self) -> int:
        return len(frozenset().union(*self.patients.values()))

    def patients_of(self, label: str) -> int:
        return len(self.patients.get(label, ()))

    @classmethod
    def of(cls, labelled: Iterable[tuple[str, str]]) -> Counts:
        """From (class, patient id) pairs, one per image."""
        images: collections.Counter = collections.Counter()
        patients: dict[str, set[str]] = collections.defaultdict(set)
        for label, patient in labelled:
            images[label] += 1
            patients[label].add(patient)
        return cls(dict(images), {label: frozenset(ids) for label, ids in patients.items()})

    @classmethod
    def merge(cls, parts: Iterable[Counts]) -> Counts:
        images: collections.Counter = collections.Counter()
        patients: dict[str, set[str]] = collections.defaultdict(set)
        for part in parts:
            images.update(part.images)
            for label, ids in part.patients.items():
                patients[label] |= ids
        return cls(dict(images), {label: frozenset(ids) for label, ids in patients.items()})


@dataclasses.dataclass(frozen=True)
class Distribution:
    """One dataset NAME/CONFIG under one data_dir; `built` False leaves everything else empty."""
    dataset: str
    built: bool
    version: str = ""
    planes: tuple[str, ...] = ()  # as the records store them
    splits: Mapping[str, Counts] = dataclasses.field(default_factory=dict)  # in the build's split order
    skipped_files: int = 0  # unreadable files and unusable table rows the build left out
    ignored_files: int = 0  # files outside the source's layout (not images, no class or plane folder)
    unlisted_images: int = 0  # images a CSV table of the source does not mention
    empty_splits: tuple[str, ...] = ()  # splits too small to be written
    patient_ids_from: Mapping[str, int] = dataclasses.field(default_factory=dict)
    preprocess: Mapping[str, Any] | None = None  # None: the build stored no preprocessing settings
    other_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # scalar metadata, when no preprocess

    @property
    def source(self) -> str:
        return self.dataset.split("/")[0]

    @property
    def main_splits(self) -> list[str]:
        return [split for split in MAIN_SPLITS if split in self.splits]

    @property
    def other_splits(self) -> list[str]:
        return [split for split in self.splits if split not in MAIN_SPLITS]

    def total(self) -> Counts:
        """Over the main splits: every labelled image once."""
        return Counts.merge(self.splits[split] for split in self.main_splits)

    def external_only(self) -> bool:
        """A test split and no training split: a set for external testing only (asas; the shifted phantoms)."""
        return self.main_splits == ["test"]


def read_distribution(dataset: str, data_dir: str | os.PathLike) -> Distribution:
    """The Distribution of a built dataset, or one with built=False when data_dir holds no build of it. An unknown
    dataset or config is an InputError."""
    try:
        builder = get_builder(dataset, data_dir=data_dir)
    except (ValueError, KeyError) as error:
        raise InputError(dataset, first_line(error)) from None
    # A missing folder first: is_prepared() would log a warning about it, and "not built" is no error here.
    if not builder.data_path.exists() or not builder.is_prepared():
        return Distribution(dataset, built=False)
    return distribution_of(builder, dataset)


def distribution_of(builder, dataset: str) -> Distribution:
    """The Distribution of a prepared TFDS builder of the project, named `dataset`."""
    names = builder.info.features["label"].names
    splits, planes = {}, set()
    for split in builder.info.splits:
        labelled = []
        for record in builder.as_data_source(split):
            label = int(record["label"])
            labelled.append((names[label] if label >= 0 else UNLABELED, text(record["patient_id"])))
            planes.add(text(record["plane"]))
        splits[split] = Counts.of(labelled)
    metadata = dict(builder.info.metadata or {})
    preprocess = metadata.get("preprocess")
    return Distribution(
        dataset, built=True, version=str(builder.info.version), planes=tuple(sorted(planes)), splits=splits,
        skipped_files=len(metadata.get("skipped_files", ())), ignored_files=len(metadata.get("ignored_files", ())),
        unlisted_images=len(metadata.get("unlisted_images", ())),
        empty_splits=tuple(metadata.get("empty_splits_not_written", ())),
        patient_ids_from=dict(metadata.get("patient_id_from", {})),
        preprocess=dict(preprocess) if preprocess is not None else None,
        other_settings={} if preprocess is not None else
        {key: value for key, value in metadata.items() if isinstance(value, (str, int, float, bool))})
