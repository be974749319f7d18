"""Tiny made-up stand-ins for a hand-filled ASAS folder (no real case): images plus a labels.csv whose header uses
other spellings (File, Case ID, Diagnosis) and whose rows include a missing file, an unknown label and an image
left out of the table, so that the builder's reporting is exercised.

Regenerate dummy_data/ with:  python -m asemble_datasets.asas.make_dummy_data
"""
from __future__ import annotations

import pathlib

import cv2

from asemble_datasets.elazig import make_dummy_data as elazig_dummy

# file -> (case id, plane as written, label as written)
ROWS = {
    "images/case_101_ax.png": ("101", "Axial", "AS"),
    "images/case_101_cor.png": ("101", "coronal", "AS"),
    "images/case_102_ax.png": ("102", "axial", "ankylosing spondylitis"),
    "images/case_103_ax.jpg": ("103", "AX", "Normal"),
    "images/case_103_cor.png": ("103", "Coronal", "healthy"),
    "images/case_104_cor.png": ("104", "semi-coronal", "AS"),
}
BAD_ROWS = {
    "images/case_105_ax.png": ("105", "axial", "AS"),  # listed but not saved
    "images/case_106_ax.png": ("106", "axial", "maybe"),  # unknown label
}
UNLISTED = "images/forgot_to_list.png"
SAVED = (*ROWS, "images/case_106_ax.png", UNLISTED)
FIRST_IMAGE = elazig_dummy.IMAGES_USED
IMAGES_USED = FIRST_IMAGE + len(SAVED)


def write(root: pathlib.Path) -> None:
    images = elazig_dummy.distinct_images(IMAGES_USED)[FIRST_IMAGE:]
    for name, image in zip(SAVED, images):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
    lines = ["File,Case ID,Plane,Diagnosis"] + [f"{name},{','.join(row)}" for name, row in {**ROWS, **BAD_ROWS}.items()]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write(pathlib.Path(__file__).resolve().parent / "dummy_data")
