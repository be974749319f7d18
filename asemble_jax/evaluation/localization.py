"""How well heatmaps (Grad-CAM or a reference) point at expert lesion masks.

Per example, for heatmaps (B, H, W) in [0, 1] and boolean lesion masks (B, H, W):
- pointing game (Zhang et al. 2016, "Top-down neural attention by excitation backprop"): a hit when the
  heatmap's maximum lies within `tolerance_px` pixels (Euclidean) of the mask, i.e. inside the mask dilated by
  a disk of that radius. When several pixels share the maximum the score is the share of them that hit, the
  expected hit of a uniformly random tie-break: a flat heatmap then scores the dilated mask's area fraction, as
  a guess would, instead of a free hit.
- heat inside: the share of the heatmap's total heat that falls inside the (undilated) mask.
- pixel AUC: ROC AUC of heat as a score for "pixel is lesion", ties counting one half.
Examples whose mask is empty have no lesion to point at: their scores are NaN and `has_lesion` flags them; the
summary counts them as skipped instead of scoring them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage, stats

# Zhang et al. used 15 pixels at 224x224 input; kept in pixels so that results state exactly what was allowed.
DEFAULT_TOLERANCE_PX = 15
# Centre prior: an isotropic Gaussian whose sigma is this fraction of the shorter image side (64 px at 256x256).
# It answers "does the model point better than a guess at the middle of the image", where anatomy usually is.
CENTRE_PRIOR_SIGMA_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class LocalizationScores:
    has_lesion: np.ndarray  # (B,) bool; False: empty mask, scores NaN
    pointing_hit: np.ndarray  # (B,) in [0, 1]
    heat_inside: np.ndarray  # (B,) in [0, 1]; NaN also for a heatmap with no heat at all
    pixel_auc: np.ndarray  # (B,) in [0, 1]; NaN also for a mask covering the whole image
    tolerance_px: float

    def summary(self) -> dict:
        """Means over the examples with a lesion, and how many examples were skipped for an empty mask."""
        def mean(values: np.ndarray) -> float:
            finite = values[np.isfinite(values)]
            return float(finite.mean()) if finite.size else float("nan")

        return {
            "n_examples": int(self.has_lesion.size),
            "n_scored": int(self.has_lesion.sum()),
            "n_skipped_empty_mask": int((~self.has_lesion).sum()),
            "pointing_game": mean(self.pointing_hit),
            "heat_inside": mean(self.heat_inside),
            "pixel_auc": mean(self.pixel_auc),
            "tolerance_px": float(self.tolerance_px),
        }


def centre_prior(height: int, width: int, sigma_fraction: float = CENTRE_PRIOR_SIGMA_FRACTION) -> np.ndarray:
    """(height, width) Gaussian centred on the image centre, peak 1, sigma = sigma_fraction * min(height, width)."""
    sigma = sigma_fraction * min(height, width)
    y = np.arange(height) - (height - 1) / 2
    x = np.arange(width) - (width - 1) / 2
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))


def _pixel_auc(heat: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row of flattened (B, pixels) heat against boolean masks, via midranks."""
    ranks = stats.rankdata(heat, method="average", axis=1)
    positives = masks.sum(axis=1).astype(np.float64)
    negatives = masks.shape[1] - positives
    rank_sum = np.sum(ranks * masks, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def localization_scores(heatmaps: np.ndarray, masks: np.ndarray,
                        tolerance_px: float = DEFAULT_TOLERANCE_PX) -> LocalizationScores:
    """Scores of every example; a single (H, W) heatmap (e.g. centre_prior) is compared with every mask."""
    masks = np.asarray(masks) != 0
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got {masks.shape}")
    try:
        heatmaps = np.broadcast_to(heatmaps, masks.shape)
    except ValueError:
        raise ValueError(f"heatmaps {heatmaps.shape} do not match masks {masks.shape}") from None
    if not np.all((heatmaps >= 0) & (heatmaps <= 1)):
        raise ValueError("heatmaps must be finite and lie in [0, 1]")
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")

    has_lesion = masks.any(axis=(1, 2))
    pointing_hit = np.full(has_lesion.shape, np.nan)
    for i in np.flatnonzero(has_lesion):
        distance_to_lesion = ndimage.distance_transform_edt(~masks[i])
        maxima = heatmaps[i] == heatmaps[i].max()
        pointing_hit[i] = np.mean(distance_to_lesion[maxima] <= tolerance_px)

    total_heat = heatmaps.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        heat_inside = np.where(has_lesion & (total_heat > 0),
                               np.sum(heatmaps * masks, axis=(1, 2)) / total_heat, np.nan)
    flat = masks.reshape(masks.shape[0], -1)
    pixel_auc = _pixel_auc(heatmaps.reshape(flat.shape), flat)
    return LocalizationScores(has_lesion, pointing_hit, heat_inside, pixel_auc, float(tolerance_px))
