"""Training augmentation of preprocessed 256x256 slices, in NumPy/OpenCV so that it runs inside grain workers.

One `cv2.warpAffine` per image applies the whole geometric part (left-right flip, rotation and scale about the
image centre, shift); a lesion mask gets the same matrix with nearest-neighbour sampling, so it stays aligned and
binary. The intensity part (gamma, then contrast about the image mean, then brightness) is folded into a 256-entry
lookup table from the warped uint8 pixels straight to float32 in [0, 1]; with the mean taken from an OpenCV
histogram, the intensity step costs less than the warp (NumPy's bincount and fancy indexing were 4x slower).

Everything random is drawn from the `np.random.Generator` passed in, so the pipeline decides the seeding (per
example, independent of worker count) and tests can pin exact parameters through `AugmentParams`.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random training augmentation; every default is mild on purpose.

    SIJ slices are acquired in a standard orientation and the preprocessing already crops to the body, so test
    images differ from each other by small pose and scale changes and by scanner contrast, not by large rotations.

    - max_rotation_degrees: rotation uniform in [-10, 10] degrees about the image centre.
    - scale_range: zoom log-uniform in [0.9, 1.1] (> 1 enlarges the anatomy).
    - max_shift_fraction: shift uniform in [-0.05, 0.05] of the image size along each axis (about 13 pixels).
    - flip_probability: left-right mirror with probability 0.5; the pelvis is near-symmetric and the label does
      not depend on the side of the lesion.
    - gamma_range: gamma log-uniform in [0.8, 1.25] applied to intensities in [0, 1].
    - contrast_range: factor uniform in [0.85, 1.15] applied about the image mean.
    - max_brightness_delta: offset uniform in [-0.05, 0.05] added to intensities in [0, 1].
    """

    max_rotation_degrees: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift_fraction: float = 0.05
    flip_probability: float = 0.5
    gamma_range: tuple[float, float] = (0.8, 1.25)
    contrast_range: tuple[float, float] = (0.85, 1.15)
    max_brightness_delta: float = 0.05

    def __post_init__(self):
        for name in ("scale_range", "gamma_range", "contrast_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"AugmentConfig.{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        for name in ("max_rotation_degrees", "max_shift_fraction", "max_brightness_delta"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.flip_probability <= 1:
            raise ValueError(f"AugmentConfig.flip_probability must be in [0, 1], got {self.flip_probability}")


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation. The defaults are the identity."""

    rotation_degrees: float = 0.0
    scale: float = 1.0
    shift_xy: tuple[float, float] = (0.0, 0.0)
    flip: bool = False
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0

    @property
    def is_geometric_identity(self) -> bool:
        return not self.flip and self.rotation_degrees == 0 and self.scale == 1 and self.shift_xy == (0.0, 0.0)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def sample_params(config: AugmentConfig, rng: np.random.Generator, height: int, width: int) -> AugmentParams:
    """Draws one augmentation for a height x width image; the order of draws is fixed, so a seed fixes them all."""
    max_shift_x, max_shift_y = config.max_shift_fraction * width, config.max_shift_fraction * height
    return AugmentParams(
        rotation_degrees=float(rng.uniform(-config.max_rotation_degrees, config.max_rotation_degrees)),
        scale=_log_uniform(rng, *config.scale_range),
        shift_xy=(float(rng.uniform(-max_shift_x, max_shift_x)), float(rng.uniform(-max_shift_y, max_shift_y))),
        flip=bool(rng.random() < config.flip_probability),
        gamma=_log_uniform(rng, *config.gamma_range),
        contrast=float(rng.uniform(*config.contrast_range)),
        brightness=float(rng.uniform(-config.max_brightness_delta, config.max_brightness_delta)),
    )


def affine_matrix(params: AugmentParams, height: int, width: int) -> np.ndarray:
    """2x3 matrix mapping input pixel (x, y) to output pixel: flip, then rotate and scale about the centre, then shift.

    Positive rotation turns the anatomy counter-clockwise as displayed (row 0 at the top), as in OpenCV.
    """
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    flip = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if params.flip else np.eye(3)
    rotate_scale = np.vstack([cv2.getRotationMatrix2D(centre, params.rotation_degrees, params.scale), [0, 0, 1]])
    shift = np.array([[1.0, 0.0, params.shift_xy[0]], [0.0, 1.0, params.shift_xy[1]], [0.0, 0.0, 1.0]])
    return (shift @ rotate_scale @ flip)[:2]


def intensity_table(params: AugmentParams, pixels: np.ndarray) -> np.ndarray:
    """float32[256] mapping each uint8 value of `pixels` to its jittered intensity in [0, 1].

    The contrast pivot is the mean of the gamma-corrected image, computed from the histogram so that the whole
    intensity step costs one table lookup per pixel.
    """
    gamma_corrected = (np.arange(256, dtype=np.float64) / 255.0) ** params.gamma
    histogram = cv2.calcHist([pixels], [0], None, [256], [0, 256]).ravel()
    mean = float(histogram @ gamma_corrected) / pixels.size
    jittered = (gamma_corrected - mean) * params.contrast + mean + params.brightness
    return np.clip(jittered, 0.0, 1.0).astype(np.float32)


def _as_2d(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"{what} must be (H, W) or (H, W, 1) uint8, got shape {array.shape} dtype {array.dtype}")
    # OpenCV refuses views with negative or padded strides, such as a NumPy-flipped image.
    return np.ascontiguousarray(array)


def apply(
    image: np.ndarray, params: AugmentParams, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Applies `params` to a uint8 image (and its mask): float32 (H, W, 1) in [0, 1], and uint8 (H, W, 1) or None.

    Pixels moved in from outside the image are 0, the background of a cropped MRI slice.
    """
    image = _as_2d(image, "image")
    height, width = image.shape
    if mask is not None:
        mask = _as_2d(mask, "mask")
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    if not params.is_geometric_identity:
        matrix = affine_matrix(params, height, width)
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if mask is not None:
            mask = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    augmented = cv2.LUT(image, intensity_table(params, image))
    return augmented[..., None], None if mask is None else mask[..., None]


def augment(
    image: np.ndarray, config: AugmentConfig, rng: np.random.Generator, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draws parameters from `rng` and applies them; see `apply` for shapes and dtypes."""
    return apply(image, sample_params(config, rng, image.shape[0], image.shape[1]), mask)
