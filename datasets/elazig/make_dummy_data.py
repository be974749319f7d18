"""Tiny made-up stand-ins for a hand-filled Elazig folder, exercising what the builder must cope with.

Nothing here is MRI: each image is a bright ellipse (the "body") with a smooth random texture on a dark
background, different enough from every other image that no two are near-duplicates, except where a copy is
planted on purpose. The layout mixes spellings (Axial, "AS diagnosis", Normal, healthy_controls), patient folders,
images without a patient, a resized copy, a patients.csv, a damaged image and files the builder must ignore.

Regenerate dummy_data/ with:  python -m asemble_datasets.elazig.make_dummy_data
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np

from asemble_jax.data.near_duplicates import hamming_distances, perceptual_hash
from asemble_jax.data.preprocess import preprocess

SIDE = 64
# Different made-up images must stay this far apart (bits), well beyond the builder's threshold.
MIN_DISTANCE = 20

# Paths in the dummy_data folder, each given its own distinct image.
IMAGES = (
    "Axial/AS diagnosis/patient_01/slice_1.png",
    "Axial/AS diagnosis/patient_01/slice_2.png",
    "Axial/AS diagnosis/patient_02/slice_1.png",
    "Axial/AS diagnosis/img_003.png",
    "Axial/AS diagnosis/img_004.png",
    "Axial/Normal/img_101.png",
    "Axial/Normal/img_102.png",
    "Axial/Normal/img_103.tif",
    "Axial/Normal/img_104.jpg",
    "Axial/Normal/img_105.png",
    "Coronal/AS/cor_01.png",
    "Coronal/AS/cor_02.png",
    "Coronal/AS/cor_03.png",
    "Coronal/healthy_controls/cor_11.png",
    "Coronal/healthy_controls/cor_12.png",
    "Coronal/healthy_controls/cor_13.png",
)
# Number of images of distinct_images() that this folder uses: the next sources start after it.
IMAGES_USED = len(IMAGES) + 1
# A half-size copy of an image, with no patient id of its own: the builder must put it in its original's group.
COPIES = {"Axial/AS diagnosis/img_003_small.png": "Axial/AS diagnosis/img_003.png"}
PATIENTS_CSV = "file,patient_id\nCoronal/AS/cor_01.png,P7\nCoronal/AS/cor_02.png,P7\n"
DAMAGED = {"Axial/Normal/broken.png": b"\x89PNG\r\n\x1a\n this file was cut short"}
NOT_AN_IMAGE = "Axial/Normal/notes.txt"
OUTSIDE_PLANE_FOLDERS = "misc/overview.png"


def body_image(seed: int, side: int = SIDE) -> np.ndarray:
    """uint8 (side, side): an ellipse of random size, place and tilt filled with smooth random texture."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), side / 10)
    texture = (texture - texture.min()) / (np.ptp(texture) + 1e-6)
    body = np.zeros((side, side), np.uint8)
    centre = tuple(int(c) for c in rng.integers(side * 2 // 5, side * 3 // 5, 2))
    axes = tuple(int(a) for a in rng.integers(side // 5, side * 2 // 5, 2))
    cv2.ellipse(body, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return np.where(body > 0, 80 + 175 * texture, 10).astype(np.uint8)


def distinct_images(count: int) -> list[np.ndarray]:
    """`count` body images, each at least MIN_DISTANCE bits from the others, before and after preprocessing: seeds
    are tried in order and an image too like an earlier one is passed over, so the result is deterministic. The
    asas and radiopaedia dummy data take later images of this one sequence, so no dummy image of one source is a
    near-duplicate of another's."""
    images, hashes = [], []
    seed = 0
    while len(images) < count:
        image = body_image(seed)
        seed += 1
        value = (perceptual_hash(image), perceptual_hash(preprocess(image).image))
        if all(hamming_distances([v], [h[k] for h in hashes]).min() >= MIN_DISTANCE
               for k, v in enumerate(value) if hashes):
            images.append(image)
            hashes.append(value)
    return images


def write(root: pathlib.Path) -> None:
    *made, unplaced = distinct_images(IMAGES_USED)
    images = dict(zip(IMAGES, made))
    for name, image in images.items():
        _save(root / name, image)
    for name, original in COPIES.items():
        _save(root / name, cv2.resize(images[original], (SIDE // 2, SIDE // 2), interpolation=cv2.INTER_AREA))
    for name, content in DAMAGED.items():
        (root / name).write_bytes(content)
    (root / NOT_AN_IMAGE).write_text("not an image")
    _save(root / OUTSIDE_PLANE_FOLDERS, unplaced)
    (root / "patients.csv").write_text(PATIENTS_CSV)


def _save(path: pathlib.Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


if __name__ == "__main__":
    write(pathlib.Path(__file__).resolve().parent / "dummy_data")
