"""The preprocessing every source goes through: raw MR values -> a 256x256 uint8 CLAHE-enhanced slice.

Steps, in this order (the paper's "crop artifacts, resize to 256x256, CLAHE", preceded by the windowing that raw
MR values need before any of them), each its own public function and configured by `PreprocessConfig`:

1. `window_to_uint8`, window_percentiles=(1.0, 99.0): values at or below the low percentile become 0, at or above
   the high one 255, linear and rounded in between. Percentiles ignore NaN and +-inf, which become 0. A constant
   image (both percentiles equal) becomes 0, except values above that constant, which become 255.
2. `body_crop_box` + `crop_to_box`, crop=True, crop_threshold=0.1, crop_opening=0.02, crop_min_component=0.1,
   crop_margin=0.03. The rule, on the windowed image:
   a. foreground = pixels above crop_threshold x 255. Windowing has put air near 0, and every tissue, including
      the suppressed fat and dark muscle of STIR, sits above a tenth of the window. Otsu's threshold was tried
      and rejected: on posterior STIR slices it separates the bright spinal fluid from all other tissue, and the
      crop shrank to the spinal canal;
   b. morphological opening with an elliptical kernel crop_opening x the shorter image side across (at least
      3 px): removes burned-in text, rulers, tick marks and speckle, all thinner than that; then a closing with
      a kernel twice as wide reconnects body parts that the threshold split;
   c. the bounding box of every 8-connected component whose area is at least crop_min_component x the largest
      one (the body, even if split in two, but not a stray label);
   d. grown by crop_margin x its longer side on every side (within the image), then made square around its
      centre (shifted to stay inside the image where the image allows), so that resizing never distorts anatomy.
      Where the image is too narrow for a square, the box reaches past the edge and `crop_to_box` pads with 0
      (the background).
   When no foreground survives (a blank or all-noise slice) the box is the whole image, squared the same way.
   crop=False skips a-d: the whole image, squared and padded.
3. `resize_to`, size=256: cv2.INTER_AREA when shrinking, cv2.INTER_CUBIC when enlarging; masks use
   cv2.INTER_NEAREST_EXACT (nearest neighbour on pixel centres, so a mask stays aligned with its image).
4. `apply_clahe`, clahe_clip_limit=2.0, clahe_tile_grid_size=(8, 8): cv2.createCLAHE on the resized image, with
   the values of OpenCV's own CLAHE tutorial (the paper gives none; 8x8 tiles of 32 px at 256x256 are about the
   size of a sacroiliac joint); clahe_clip_limit=None skips CLAHE.

A mask given to `preprocess` follows steps 2 and 3 exactly (same box, same padding, nearest neighbour).

Contrast check, `preprocess(..., require_contrast=True)`: what the tools that classify user files ask for (the
dataset builders do not, and a slice that passes comes out the same either way). A slice has no usable contrast,
and is refused with an InputError, when the window percentiles (config.window_percentiles, 1 and 99) find no range
  a. in the raw slice (step 1): one value fills at least 98% of it (a blank, constant or all-zero slice, or a
     constant one with a few specks), so windowing leaves no grey levels, only 0 and 255. This is checked before
     the body crop, so such a slice costs only its windowing; or
  b. in the cropped, resized slice before CLAHE (after step 3), the model's input: one grey level fills at least
     98% of it (e.g. a strip a few pixels high, squared and zero-padded into an almost empty image). CLAHE is
     left out because it turns flat areas into gradients of its own.
"No range" means exactly what windowing means by it: no new threshold is involved. A slice with a body in it
passes both by a wide margin, since the body covers far more than 2% of the slice and, after the crop, most of the
model's input: over every slice of 4 phantom patients per plane (asemble_jax.data.phantom) and of the real
bone_mri and iaxspa_demo scans, the percentile range of the model's input was at least 194 grey levels and the
commonest grey level covered at most 27% of it (tests/test_degenerate_inputs.py checks phantom slices).
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from asemble_jax.errors import InputError
from asemble_jax.data.readers import DEFAULT_MAX_PIXELS, MIN_SIDE

Box = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Every knob of `preprocess`; the module docstring explains each step and why the defaults are what they are."""

    window_percentiles: tuple[float, float] = (1.0, 99.0)
    crop: bool = True
    crop_threshold: float = 0.1
    crop_opening: float = 0.02
    crop_min_component: float = 0.1
    crop_margin: float = 0.03
    size: int = 256
    clahe_clip_limit: float | None = 2.0
    clahe_tile_grid_size: tuple[int, int] = (8, 8)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        low, high = self.window_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"window_percentiles must satisfy 0 <= low < high <= 100, got {self.window_percentiles}")
        if self.size < MIN_SIDE:
            raise ValueError(f"size must be at least {MIN_SIDE}, got {self.size}")
        if self.crop_margin < 0 or not 0 < self.crop_opening < 1 or not 0 <= self.crop_threshold < 1:
            raise ValueError("crop_margin must be >= 0, crop_opening in (0, 1), crop_threshold in [0, 1)")
        if not 0 < self.crop_min_component <= 1:
            raise ValueError(f"crop_min_component must be in (0, 1], got {self.crop_min_component}")
        if self.clahe_clip_limit is not None and self.clahe_clip_limit <= 0:
            raise ValueError(f"clahe_clip_limit must be > 0 or None, got {self.clahe_clip_limit}")
        if len(self.clahe_tile_grid_size) != 2 or min(self.clahe_tile_grid_size) < 1:
            raise ValueError(f"clahe_tile_grid_size must be two positive ints, got {self.clahe_tile_grid_size}")


@dataclasses.dataclass(frozen=True)
class Preprocessed:
    """image: (size, size) uint8. mask: (size, size) uint8 or None. crop_box: (y0, y1, x0, x1), half-open, in
    input pixels: the square of the input that became the output (it may reach past the edges: zero padding)."""

    image: np.ndarray
    mask: np.ndarray | None
    crop_box: Box


def preprocess(raw: np.ndarray, config: PreprocessConfig = PreprocessConfig(), mask: np.ndarray | None = None,
               path: str = "<array>", *, require_contrast: bool = False) -> Preprocessed:
    """One 2-D slice of raw values (and optionally its integer mask) through all steps; `path` names the source
    file (and slice) in the InputError raised for a slice that cannot be used. require_contrast: refuse a slice
    with no usable contrast (the module docstring's contrast check); the output of a slice that passes is the
    same either way."""
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise InputError(path, f"expected one 2-D slice, got an array of shape {raw.shape}")
    if min(raw.shape) < MIN_SIDE:
        raise InputError(path, f"{raw.shape[0]}x{raw.shape[1]} slice is too small (at least {MIN_SIDE} a side)")
    if raw.size > config.max_pixels:
        raise InputError(path, f"slice of {raw.size} pixels exceeds the limit of {config.max_pixels}")
    if raw.dtype.kind not in "biuf":
        raise InputError(path, f"pixel values of type {raw.dtype} are not real numbers")
    if not np.isfinite(raw).any():
        raise InputError(path, "no finite pixel values (all NaN or infinite)")
    if mask is not None:
        mask = _validated_mask(mask, raw.shape, path)

    windowed, low, high = _window(raw, config.window_percentiles)
    if require_contrast and not high > low:
        raise InputError(path, f"no usable contrast: {_one_level(config.window_percentiles)} of its pixels, so "
                               "windowing leaves no grey levels")
    if config.crop:
        box = body_crop_box(windowed, threshold=config.crop_threshold, opening=config.crop_opening,
                            min_component=config.crop_min_component, margin=config.crop_margin)
    else:
        box = _square_box((0, raw.shape[0], 0, raw.shape[1]), raw.shape)
    image = resize_to(crop_to_box(windowed, box), config.size)
    if require_contrast and not _has_range(image, config.window_percentiles):
        raise InputError(path, f"no usable contrast after windowing and cropping: "
                               f"{_one_level(config.window_percentiles)} of the model's input")
    if config.clahe_clip_limit is not None:
        image = apply_clahe(image, config.clahe_clip_limit, config.clahe_tile_grid_size)
    if mask is not None:
        mask = resize_to(crop_to_box(mask, box), config.size, interpolation=cv2.INTER_NEAREST_EXACT)
    return Preprocessed(image=image, mask=mask, crop_box=box)


def window_to_uint8(raw: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """uint8 image: raw values mapped linearly from [p_low, p_high] percentiles of the finite values to [0, 255]."""
    return _window(raw, percentiles)[0]


def _window(raw: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, float, float]:
    """window_to_uint8's image, and the low and high percentiles it mapped to 0 and 255."""
    values = np.asarray(raw, dtype=np.float64)
    finite = np.isfinite(values)
    all_finite = finite.all()
    if not all_finite and not finite.any():
        raise ValueError("no finite values to window")
    low, high = np.percentile(values if all_finite else values[finite], percentiles)
    if high > low:
        scaled = np.rint(np.clip((values - low) * (255.0 / (high - low)), 0.0, 255.0))
    else:
        scaled = np.where(values > low, 255.0, 0.0)
    if not all_finite:
        scaled[~finite] = 0.0
    return scaled.astype(np.uint8), float(low), float(high)


def _has_range(image: np.ndarray, percentiles: tuple[float, float]) -> bool:
    low, high = np.percentile(image, percentiles)
    return bool(high > low)


def _one_level(percentiles: tuple[float, float]) -> str:
    """What equal window percentiles mean, for the contrast check's messages."""
    low, high = percentiles
    return f"one value (percentiles {low:g} and {high:g} equal) fills {high - low:g}% or more"


def body_crop_box(windowed: np.ndarray, *, threshold: float = 0.1, opening: float = 0.02, min_component: float = 0.1,
                  margin: float = 0.03) -> Box:
    """Square (y0, y1, x0, x1) around the body of a windowed uint8 slice, following the module docstring's rule."""
    windowed = np.asarray(windowed)
    if windowed.dtype != np.uint8 or windowed.ndim != 2:
        raise ValueError(f"body_crop_box needs a 2-D uint8 image, got {windowed.dtype} {windowed.shape}")
    foreground = (windowed > threshold * 255).astype(np.uint8)
    kernel_side = max(3, int(round(opening * min(windowed.shape))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_side, kernel_side))
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernel)
    closing_side = 2 * kernel_side + 1
    foreground = cv2.morphologyEx(
        foreground, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (closing_side, closing_side)))
    count, _, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if count <= 1:
        return _square_box((0, windowed.shape[0], 0, windowed.shape[1]), windowed.shape)
    kept = stats[1:][areas >= min_component * areas.max()]
    y0 = int(kept[:, cv2.CC_STAT_TOP].min())
    x0 = int(kept[:, cv2.CC_STAT_LEFT].min())
    y1 = int((kept[:, cv2.CC_STAT_TOP] + kept[:, cv2.CC_STAT_HEIGHT]).max())
    x1 = int((kept[:, cv2.CC_STAT_LEFT] + kept[:, cv2.CC_STAT_WIDTH]).max())
    grow = int(round(margin * max(y1 - y0, x1 - x0)))
    height, width = windowed.shape
    grown = (max(y0 - grow, 0), min(y1 + grow, height), max(x0 - grow, 0), min(x1 + grow, width))
    return _square_box(grown, windowed.shape)


def crop_to_box(image: np.ndarray, box: Box) -> np.ndarray:
    """image[y0:y1, x0:x1], with zeros where the box reaches past the image."""
    y0, y1, x0, x1 = box
    height, width = image.shape[:2]
    if y0 >= 0 and x0 >= 0 and y1 <= height and x1 <= width:
        return image[y0:y1, x0:x1]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
    src_y0, src_y1, src_x0, src_x1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    out[src_y0 - y0:src_y1 - y0, src_x0 - x0:src_x1 - x0] = image[src_y0:src_y1, src_x0:src_x1]
    return out


def resize_to(image: np.ndarray, size: int = 256, interpolation: int | None = None) -> np.ndarray:
    """(size, size) image: area interpolation when both sides shrink, cubic otherwise, unless told which."""
    height, width = image.shape[:2]
    if interpolation is None:
        interpolation = cv2.INTER_AREA if height >= size and width >= size else cv2.INTER_CUBIC
    if (height, width) == (size, size):
        return image.copy()
    return cv2.resize(image, (size, size), interpolation=interpolation)


def apply_clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid_size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """OpenCV's contrast-limited adaptive histogram equalisation of a uint8 image."""
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tuple(tile_grid_size)).apply(image)


def _square_box(box: Box, shape: tuple[int, int]) -> Box:
    """The square with the larger side of `box`, centred on it, shifted inside `shape` where it fits."""
    y0, y1, x0, x1 = box
    side = max(y1 - y0, x1 - x0)
    return _place(y0, y1, side, shape[0]) + _place(x0, x1, side, shape[1])


def _place(start: int, stop: int, side: int, limit: int) -> tuple[int, int]:
    """[a, a + side) centred on [start, stop), moved to lie within [0, limit) if it fits, else centred on it."""
    if side >= limit:
        begin = (limit - side) // 2
    else:
        begin = min(max((start + stop - side) // 2, 0), limit - side)
    return begin, begin + side


def _validated_mask(mask: np.ndarray, shape: tuple[int, int], path: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise InputError(path, f"mask shape {mask.shape} does not match image shape {shape}")
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype.kind not in "biuf" or not np.all(np.isfinite(mask)) or mask.min() < 0 or mask.max() > 255 \
            or not np.array_equal(mask, np.round(mask)):
        raise InputError(path, "mask must hold integer labels in 0..255")
    return mask.astype(np.uint8)
