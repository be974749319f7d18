"""The samples figure: a grid of built synthetic_sij phantoms, healthy and AS in both planes, lesions outlined.

It reads the built datasets (it never builds them), so what a user sees is exactly what the models train on.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from asemble_jax.atomic_io import save_figure
from asemble_jax.data import examples
from asemble_jax.data.builders import get_builder
from asemble_jax.errors import InputError

DATASET = "synthetic_sij"


def pick_samples(data_source, per_class: int) -> dict[int, list[dict]]:
    """{label: examples}: the middle slice of the first `per_class` patients of each class (by patient id), AS
    patients only where that slice shows a lesion, so that every AS panel has an outline to look at."""
    middle: dict[bytes, dict] = {}
    slices_of: dict[bytes, int] = {}
    for i in range(len(data_source)):
        example = data_source[i]
        patient = example["patient_id"]
        slices_of[patient] = max(slices_of.get(patient, 0), example["slice_index"] + 1)
        middle.setdefault(patient, {})[example["slice_index"]] = example
    picked: dict[int, list[dict]] = {label: [] for label in range(len(examples.CLASS_NAMES))}
    for patient in sorted(middle):
        example = middle[patient].get(slices_of[patient] // 2)
        if example is None or len(picked[example["label"]]) >= per_class:
            continue
        if example["label"] == 0 or examples.decode_png(example["mask"]).any():
            picked[example["label"]].append(example)
    return picked


def samples_figure(sources: Mapping[str, Any], *, per_class: int = 4, title: str = DATASET) -> Figure:
    """One row per (plane, class), `per_class` patients per row, lesion masks outlined in red; `sources` maps a
    plane to a TFDS data source of that plane."""
    rows = []
    for plane, source in sources.items():
        picked = pick_samples(source, per_class)
        rows += [(plane, label, picked[label]) for label in sorted(picked)]
    figure = Figure(figsize=(2.2 * per_class, 2.4 * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), per_class, squeeze=False)
    for (plane, label, row_examples), row_axes in zip(rows, axes):
        for column, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(f"{plane}, {examples.CLASS_NAMES[label]}")
            if column >= len(row_examples):
                ax.set_axis_off()
                continue
            example = row_examples[column]
            ax.imshow(examples.decode_png(example["image"])[..., 0], cmap="gray", vmin=0, vmax=255)
            mask = examples.decode_png(example["mask"])[..., 0]
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{example['patient_id'].decode()} #{example['slice_index']}", fontsize=7)
    figure.suptitle(f"{title}: lesion masks outlined in red", fontsize=9)
    return figure


def write_samples_figure(data_dir: str | os.PathLike, out: str | os.PathLike, *,
                         planes: Sequence[str] = examples.PLANES, split: str = "test", per_class: int = 4
                         ) -> pathlib.Path:
    """Writes `samples_figure` of the built synthetic_sij/<plane> datasets under data_dir to `out` (PNG),
    atomically; returns the path."""
    sources = {}
    for plane in planes:
        builder = get_builder(f"{DATASET}/{plane}", data_dir=data_dir)
        if not builder.is_prepared():
            raise InputError(data_dir, f"{DATASET}/{plane} is not built here: run python scripts/build_dataset.py "
                             f"--dataset={DATASET}/{plane} --data_dir={data_dir}")
        sources[plane] = builder.as_data_source(split=split)
    save_figure(samples_figure(sources, per_class=per_class, title=f"{DATASET} ({split} split)"), out, dpi=110)
    return pathlib.Path(out)
