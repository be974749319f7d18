"""Near-duplicate images by perceptual hash: the same slice saved twice, resized, re-encoded or lightly noised.

The hash is the DCT pHash (as in the `imagehash` package): the image is shrunk to 32x32 with area interpolation,
its 2-D DCT taken, and each of the 8x8 lowest-frequency coefficients becomes one bit, set when the coefficient is
above their median. Only coarse structure survives, so noise, resizing and JPEG artefacts move few bits, while
different images differ in about half of the 64. Two images are near-duplicates when their hashes differ in at
most `threshold` bits; groups are the connected components of that relation (union-find), so a chain of
near-duplicates is one group even where its ends are further apart.
"""
from __future__ import annotations

from typing import Hashable, Iterator, Sequence

import cv2
import numpy as np

HASH_BITS = 64
# Chosen on the real SIJ MRI of ../shared/data/bone_mri (numbers in datasets/elazig/README.md): hashed before
# cropping, copies of a slice (resized, noised, JPEG) stay within 2 bits; slices of different patients were never
# closer than 12 (2 of 12,825 pairs at 12, 0.1% at 16 or less). False joins only merge groups, which costs split
# balance but never leaks, so the threshold sits nearer the patients than the copies.
DEFAULT_THRESHOLD = 10
_HASH_SIDE = 32
_LOW_FREQUENCIES = 8
# Rows of the distance matrix computed at once: bounds memory at about 8 bytes x 1024 x len(others).
_BLOCK_ROWS = 1024


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT pHash of a 2-D (or HxWx1) image, as an unsigned int."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2 or min(image.shape) == 0:
        raise ValueError(f"perceptual_hash needs a non-empty 2-D image, got shape {image.shape}")
    small = cv2.resize(image.astype(np.float32), (_HASH_SIDE, _HASH_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:_LOW_FREQUENCIES, :_LOW_FREQUENCIES]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_hex(value: int) -> str:
    """Fixed-width hex form used in metadata and reports."""
    return f"{value:0{HASH_BITS // 4}x}"


def hamming_distances(hashes: Sequence[int], others: Sequence[int]) -> np.ndarray:
    """(len(hashes), len(others)) matrix of differing bits."""
    a = np.asarray(hashes, dtype=np.uint64)
    b = np.asarray(others, dtype=np.uint64)
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int64)


def near_duplicate_pairs(hashes: Sequence[int], others: Sequence[int] | None = None, *,
                         threshold: int = DEFAULT_THRESHOLD) -> Iterator[tuple[int, int, int]]:
    """(i, j, distance) for every pair within `threshold` bits: i < j within `hashes` when `others` is None, else
    i indexes `hashes` and j indexes `others`."""
    within = others is None
    others = hashes if within else others
    for start in range(0, len(hashes), _BLOCK_ROWS):
        distances = hamming_distances(hashes[start:start + _BLOCK_ROWS], others)
        rows, cols = np.nonzero(distances <= threshold)
        for row, col in zip(rows.tolist(), cols.tolist()):
            i = start + row
            if not within or i < col:
                yield i, col, int(distances[row, col])


def group_near_duplicates(*views: Sequence[int], threshold: int = DEFAULT_THRESHOLD,
                          linked_by: Sequence[Hashable | None] | None = None) -> list[int]:
    """Group number per image: connected components of the near-duplicate relation, joined also wherever
    `linked_by` gives two images the same non-None key (e.g. a patient id).

    Each view is one hash per image (e.g. of the image before and after cropping); two images are near-duplicates
    when they are in any view. Groups are numbered 0, 1, ... in the order in which each group's first image
    appears, so the result depends only on the order of the inputs.
    """
    if not views or len({len(view) for view in views}) != 1:
        raise ValueError(f"need one or more hash views of equal length, got lengths {[len(v) for v in views]}")
    hashes = views[0]
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    for view in views:
        for i, j, _ in near_duplicate_pairs(view, threshold=threshold):
            join(i, j)
    first_with_key: dict[Hashable, int] = {}
    for i, key in enumerate(linked_by or ()):
        if key is not None:
            join(i, first_with_key.setdefault(key, i))
    numbers: dict[int, int] = {}
    return [numbers.setdefault(root(i), len(numbers)) for i in range(len(hashes))]
