"""Reading the files a user points the tools at (PNG/JPEG/TIFF, DICOM, NIfTI slices) through the same
preprocessing (asemble_jax.data.preprocess) and model-input conversion (asemble_jax.data.pipeline.to_model_input)
as training, and writing the PNGs the tools make of them. Nothing from DICOM headers is logged or kept: a slice is
named by the path it was given."""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from asemble_jax import atomic_io
from asemble_jax.data.pipeline import to_model_input
from asemble_jax.data.preprocess import preprocess
from asemble_jax.data.readers import read_image, read_nifti_volume
from asemble_jax.errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclasses.dataclass(frozen=True)
class Slice:
    label: str  # the file, and the slice for volumes, as report lines name it
    out_prefix: pathlib.Path  # <out>/<folders>/<name>; files are <out_prefix>_<what>.png
    image: np.ndarray  # (size, size, 1) float32 in [0, 1], the model's input


def input_files(root: pathlib.Path) -> list[pathlib.Path]:
    """`root` itself, or every file below the folder `root` (sorted, hidden files and folders skipped)."""
    if root.is_dir():
        return sorted(path for path in root.rglob("*")
                      if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts))
    if root.exists():
        return [root]
    raise InputError(root, "no such file or folder")


def _raw_slices(path: pathlib.Path, slice_index: int | None) -> list[tuple[int | None, np.ndarray]]:
    """(slice number, or None for a 2-D image; raw 2-D values) for each slice of `path` that is asked for."""
    is_nifti = path.name.lower().endswith(NIFTI_SUFFIXES)
    raw = read_nifti_volume(path) if is_nifti else read_image(path)
    if raw.ndim == 2:
        return [(None, raw)]
    if slice_index is None:
        return list(enumerate(raw))
    if slice_index >= raw.shape[0]:
        raise InputError(path, f"has {raw.shape[0]} slices, so no slice {slice_index} (slices count from 0)")
    return [(slice_index, raw[slice_index])]


def load_slices(path: pathlib.Path, root: pathlib.Path, out: pathlib.Path, *, image_size: int,
                slice_index: int | None) -> list[Slice]:
    """Every requested slice of one file, preprocessed as in training, its outputs under `out` mirroring the
    folders between `root` and `path`; InputError if the file cannot be used."""
    relative = path.relative_to(root) if root.is_dir() else pathlib.Path(path.name)
    slices = []
    for index, raw in _raw_slices(path, slice_index):
        image = preprocess(raw, path=str(path)).image
        label, suffix = (str(path), "") if index is None else (f"{path} slice {index}", f"_slice{index}")
        slices.append(Slice(label, out / relative.parent / f"{path.name}{suffix}",
                            to_model_input(image, image_size)))
    return slices


def batches(slices: Iterable[Slice], batch_size: int) -> Iterator[list[Slice]]:
    """Consecutive lists of batch_size slices, the last one possibly shorter."""
    batch = []
    for item in slices:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_png(path: pathlib.Path, rgb_or_grey: np.ndarray) -> None:
    """Writes a (H, W) grey or (H, W, 3) RGB uint8 image atomically; InputError naming `path` if it cannot."""
    image = rgb_or_grey if rgb_or_grey.ndim == 2 else cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2BGR)
    encoded, data = cv2.imencode(".png", image)
    if not encoded:
        raise InputError(path, "OpenCV could not encode the PNG")
    try:
        with atomic_io.atomic_open(path, "wb") as handle:
            handle.write(data.tobytes())
    except OSError as error:
        raise InputError(path, f"cannot be written: {error.strerror or error}") from None


def slice_argument(value: str) -> int | None:
    """The argparse type of --slice: 'all' (None) or a 0-based slice number of volumes."""
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"--slice must be 'all' or a slice number >= 0, got {value!r}")
    return int(value)
