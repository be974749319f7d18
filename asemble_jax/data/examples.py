"""The example schema that every TFDS builder of the project writes, and its PNG codec.

Images and masks are stored as PNG bytes that the builder encodes itself: TFDS's Image feature needs TensorFlow to
encode, and TFDS never checks a declared shape, so `encode_png` is where the 256x256 single-channel uint8 contract
is enforced. Readers decode with `decode_png` (OpenCV) or, with the `tf` extra, `tf.io.decode_png`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 256
CLASS_NAMES = ("healthy", "AS")
PLANES = ("axial", "coronal")


def png_feature(doc: str) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=(), dtype=np.object_, doc=doc)


def features(
    *,
    label_names: Sequence[str] = CLASS_NAMES,
    with_mask: bool = False,
    extra: Mapping[str, tfds.features.FeatureConnector] | None = None,
) -> tfds.features.FeaturesDict:
    """Features common to all sources; `extra` adds source-specific ones (slice index, scan id, ...)."""
    spec = {
        "image": png_feature(f"{IMAGE_SIZE}x{IMAGE_SIZE}x1 uint8 PNG, preprocessed"),
        "label": tfds.features.ClassLabel(names=list(label_names)),
        "patient_id": tfds.features.Text(doc="patient or case id; splits never share one"),
        "source": tfds.features.Text(doc="dataset the example comes from"),
        "plane": tfds.features.Text(doc="axial or coronal"),
        "attribution": tfds.features.Text(doc="credit line the source asks for, empty if none"),
    }
    if with_mask:
        spec["mask"] = png_feature(f"{IMAGE_SIZE}x{IMAGE_SIZE}x1 uint8 PNG lesion mask, values 0/1")
    spec.update(extra or {})
    return tfds.features.FeaturesDict(spec)


def encode_png(array: np.ndarray, what: str = "image") -> bytes:
    """PNG bytes of a 256x256 (or 256x256x1) uint8 array; anything else is a bug in the builder."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE) or array.dtype != np.uint8:
        raise ValueError(
            f"{what} must be {IMAGE_SIZE}x{IMAGE_SIZE}[x1] uint8, got shape {array.shape} dtype {array.dtype}")
    # Uncompressed deflate blocks: ~40% more disk, but decoding is ~3x faster, and decoding is what limits the
    # input pipeline (about 4,800 vs 1,450 decodes/s per core at 256x256, scripts/benchmark_pipeline.py).
    ok, buffer = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    if not ok:
        raise ValueError(f"OpenCV could not PNG-encode the {what}")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """(256, 256, 1) uint8 array from bytes written by `encode_png`."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError("stored example holds bytes that are not a PNG image")
    return array[..., None]
