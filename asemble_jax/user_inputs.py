"""Reading the files a user points the tools at (PNG/JPEG/TIFF, DICOM, NIfTI slices) through the same
preprocessing (asemble_jax.data.preprocess) and model-input conversion (asemble_jax.data.pipeline.to_model_input)
as training, and writing the PNGs the tools make of them. Nothing from DICOM headers is logged or kept: a slice is
named by the path it was given.

Files are read within the readers' limits (asemble_jax.data.readers: at most max_side pixels a side, max_slices
slices, max_pixels values in all, checked from the header before any pixel is decoded), and a file over them is
refused whole. Each slice is then preprocessed with the contrast check (preprocess(require_contrast=True)): a
slice with no usable contrast, or no finite value, is refused on its own, as '<path> slice K: <problem>' for a
volume, and the file's other slices are still used."""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Callable, Iterable, Iterator

import cv2
import numpy as np

from asemble_jax import atomic_io
from asemble_jax.data.pipeline import to_model_input
from asemble_jax.data.preprocess import preprocess
from asemble_jax.data.readers import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DEFAULT_MAX_SLICES, MIN_SIDE,
                                      read_dicom_series, read_image, read_nifti_volume)
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


def _raw_slices(path: pathlib.Path, slice_index: int | None, limits: dict[str, int]
                ) -> list[tuple[int | None, np.ndarray]]:
    """(slice number, or None for a 2-D image; raw 2-D values) for each slice of `path` (a file, or a folder of one
    DICOM series) that is asked for."""
    if path.is_dir():  # a folder holding one DICOM series, slices sorted by InstanceNumber (the web page's uploads)
        raw = read_dicom_series(path, **limits)
    elif path.name.lower().endswith(NIFTI_SUFFIXES):
        raw = read_nifti_volume(path, **limits)
    else:
        raw = read_image(path, **limits)
    if raw.ndim == 2:
        return [(None, raw)]
    if slice_index is None:
        return list(enumerate(raw))
    if slice_index >= raw.shape[0]:
        raise InputError(path, f"has {raw.shape[0]} slices, so no slice {slice_index} (slices count from 0)")
    return [(slice_index, raw[slice_index])]


def iter_slices(path: pathlib.Path, root: pathlib.Path, out: pathlib.Path, *, image_size: int,
                slice_index: int | None, on_slice_error: Callable[[InputError], None] | None = None,
                max_side: int = DEFAULT_MAX_SIDE, max_slices: int = DEFAULT_MAX_SLICES,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Slice]:
    """Every requested slice of one file, preprocessed as in training, its outputs under `out` mirroring the
    folders between `root` and `path`, one at a time. InputError if the file cannot be used (nothing is yielded
    then: the file is read whole first). A slice that cannot be used (no usable contrast, no finite value) is
    handed to `on_slice_error` as an InputError naming it, and the others are still yielded; without
    on_slice_error it is raised."""
    limits = {"max_side": max_side, "max_slices": max_slices, "max_pixels": max_pixels}
    relative = path.relative_to(root) if root.is_dir() else pathlib.Path(path.name)
    for index, raw in _raw_slices(path, slice_index, limits):
        label, suffix = (str(path), "") if index is None else (f"{path} slice {index}", f"_slice{index}")
        try:
            image = preprocess(raw, path=label, require_contrast=True).image
        except InputError as error:
            if on_slice_error is None:
                raise
            on_slice_error(error)
            continue
        yield Slice(label, out / relative.parent / f"{path.name}{suffix}", to_model_input(image, image_size))


def load_slices(path: pathlib.Path, root: pathlib.Path, out: pathlib.Path, *, image_size: int,
                slice_index: int | None, on_slice_error: Callable[[InputError], None] | None = None,
                max_side: int = DEFAULT_MAX_SIDE, max_slices: int = DEFAULT_MAX_SLICES,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Slice]:
    """iter_slices as a list."""
    return list(iter_slices(path, root, out, image_size=image_size, slice_index=slice_index,
                            on_slice_error=on_slice_error, max_side=max_side, max_slices=max_slices,
                            max_pixels=max_pixels))


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


def limit_argument(least: int) -> Callable[[str], int]:
    """The argparse type of --max_side and --max_slices: a whole number >= least."""
    def parse(value: str) -> int:
        if not value.isdigit() or int(value) < least:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, got {value!r}")
        return int(value)
    return parse


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """--max_side and --max_slices, the readers' limits on the files the tools are given."""
    parser.add_argument("--max_side", type=limit_argument(MIN_SIDE), default=DEFAULT_MAX_SIDE,
                        help=f"refuse a file whose slices are more than this many pixels a side, from its header, "
                             f"before decoding it (default {DEFAULT_MAX_SIDE})")
    parser.add_argument("--max_slices", type=limit_argument(1), default=DEFAULT_MAX_SLICES,
                        help=f"refuse a volume (NIfTI, multi-frame DICOM, multi-page TIFF) of more slices than "
                             f"this, from its header (default {DEFAULT_MAX_SLICES}); a file may also hold at most "
                             f"{DEFAULT_MAX_PIXELS} values in all")
