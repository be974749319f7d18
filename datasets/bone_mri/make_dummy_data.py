"""Tiny synthetic stand-ins for the Bone_MRI files, in the repository's own layout and NIfTI conventions.

Nothing here comes from the real scans: each volume is a bright rippled ellipse (the body) on a dark background with
a brighter blob (the "lesion"), and the four readings mark that blob on chosen slices so that every case of the
>= 2-of-4 vote occurs. The builder test reads the committed dummy_data/ folder; the download test writes the same
files on demand to stand in for GitHub.

Regenerate dummy_data/ with:  python -m asemble_datasets.bone_mri.make_dummy_data
"""
from __future__ import annotations

import pathlib

import nibabel as nib
import numpy as np

from asemble_datasets.bone_mri.bone_mri_dataset_builder import READINGS, image_path, reading_path

SHAPE = (32, 32)  # display rows x columns of one slice
VOXEL_MM = (0.595, 0.595, 3.3)
# Which readings mark the lesion on each slice: none, one (below the vote), two (the vote), all four, and two
# readings agreeing on a single voxel only (a slice is positive on any voted voxel).
READINGS_PER_SLICE = ((), ("R11",), ("R11", "R21"), READINGS, ("R12", "R22"))
SINGLE_VOXEL_SLICE = 4
LESION_ROWS = slice(8, 14)
LESION_COLS = slice(6, 12)

# Scan id -> (timepoint, readings present). The scan ids and timepoints are real ones from data_description.docx,
# so the builder's subject table maps them to patients; 1013 deliberately lacks two readings (-> unlabeled split).
DUMMY_SCANS = {
    "1003": ("pre", READINGS),
    "1007": ("pre", READINGS),
    "1012": ("post", READINGS),
    "1013": ("pre", ("R11", "R12")),
    "2014": ("pre", ()),
}


def _to_nifti_layout(display_slices: np.ndarray) -> np.ndarray:
    """(slices, rows, cols) display-oriented -> the on-disk (x, y, slices) layout that flipud(vol[:, :, k].T) shows."""
    return np.stack([np.flipud(s).T for s in display_slices], axis=-1)


def _save(array: np.ndarray, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*VOXEL_MM, 1.0])), path)


def image_volume(scan_id: str) -> np.ndarray:
    """(slices, rows, cols) int16 display-oriented intensities, different per scan id and slice.

    Smooth ripples instead of random noise keep the gzipped files a few hundred bytes each."""
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    body = ((rows - 16) / 13.0) ** 2 + ((cols - 16) / 14.0) ** 2 <= 1.0
    slices = []
    for k in range(len(READINGS_PER_SLICE)):
        ripple = 150.0 * np.sin(rows / 3.0 + int(scan_id) % 7 + k) * np.cos(cols / 4.0)
        slice_ = np.where(body, 1000.0 + ripple, 20.0)
        slice_[LESION_ROWS, LESION_COLS] += 2500.0
        slices.append(slice_)
    return np.stack(slices).astype(np.int16)


def reading_volume(reading: str) -> np.ndarray:
    """(slices, rows, cols) uint16 {0, 1} mask of one reading, display-oriented."""
    mask = np.zeros((len(READINGS_PER_SLICE), *SHAPE), np.uint16)
    for k, marking in enumerate(READINGS_PER_SLICE):
        if reading in marking and k == SINGLE_VOXEL_SLICE:
            mask[k, LESION_ROWS.start, LESION_COLS.start] = 1
        elif reading in marking:
            mask[k, LESION_ROWS, LESION_COLS] = 1
    return mask


def write_image(path: pathlib.Path, scan_id: str) -> None:
    _save(_to_nifti_layout(image_volume(scan_id)), path)


def write_reading(path: pathlib.Path, reading: str) -> None:
    _save(_to_nifti_layout(reading_volume(reading)), path)


def write_dummy_data(root: pathlib.Path) -> None:
    for scan_id, (timepoint, readings) in DUMMY_SCANS.items():
        write_image(root / image_path(scan_id, timepoint), scan_id)
        for reading in readings:
            write_reading(root / reading_path(scan_id, reading), reading)


if __name__ == "__main__":
    write_dummy_data(pathlib.Path(__file__).resolve().parent / "dummy_data")
