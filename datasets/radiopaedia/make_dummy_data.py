"""Tiny made-up stand-ins for a hand-filled Radiopaedia folder (no real case, made-up authors): images plus a
cases.csv using the US spelling "license", a case with two images, and a row without an author, which the builder
must skip because its credit line cannot be built.

Regenerate dummy_data/ with:  python -m asemble_datasets.radiopaedia.make_dummy_data
"""
from __future__ import annotations

import pathlib

import cv2

from asemble_datasets.asas import make_dummy_data as asas_dummy

LICENCE = "CC BY-NC-SA 3.0"
# file -> (case id, plane, author)
ROWS = {
    "normal_sij_1/axial_1.png": ("90001", "axial", "Dr Ada Example"),
    "normal_sij_1/axial_2.png": ("90001", "axial", "Dr Ada Example"),
    "normal_sij_2/axial.png": ("90002", "axial", "Dr Ben Sample"),
    "normal_sij_3/axial.png": ("90003", "axial", "Dr Cem Placeholder"),
    "normal_sij_4/axial.png": ("90004", "axial", "Dr Dee Madeup"),
    "normal_sij_1/coronal.png": ("90001", "coronal", "Dr Ada Example"),
    "normal_sij_5/coronal.png": ("90005", "coronal", "Dr Eve Invented"),
    "normal_sij_6/coronal.png": ("90006", "coronal", "Dr Fay Fictional"),
    "normal_sij_7/coronal.png": ("90007", "coronal", "Dr Gus Imaginary"),
    "normal_sij_8/axial.png": ("90008", "axial", ""),  # no author: no credit line, so skipped
}
FIRST_IMAGE = asas_dummy.IMAGES_USED


def write(root: pathlib.Path) -> None:
    images = asas_dummy.elazig_dummy.distinct_images(FIRST_IMAGE + len(ROWS))[FIRST_IMAGE:]
    lines = ["file,case_id,plane,url,author,license"]
    for (name, (case_id, plane, author)), image in zip(ROWS.items(), images):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        lines.append(f"{name},{case_id},{plane},https://radiopaedia.org/cases/{case_id},{author},{LICENCE}")
    (root / "cases.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write(pathlib.Path(__file__).resolve().parent / "dummy_data")
