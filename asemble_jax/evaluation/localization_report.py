"""Does Grad-CAM point at the lesion? Measured on every example of a dataset split that has a lesion mask, against
two references, and written up as a Markdown table, a JSON file and a figure of the best and worst cases.

What is compared (asemble_jax/evaluation/localization.py defines the scores):
- the trained model's Grad-CAM of every layer it exposes (one per ASembleNet branch) and their fused map;
- the same architecture with freshly initialised weights (Adebayo et al. 2018, "Sanity checks for saliency
  maps", model-parameter randomisation): a map that scores as well without training shows the image or the
  architecture, not what the model learned;
- a centre prior: a Gaussian on the image centre, where anatomy usually is; a map that cannot beat it is not
  localising anything.
Maps explain the lesion class (LESION_CLASS: AS, or "inflammation" for bone_mri), the class whose evidence the
mask marks, whatever the model predicted. They are computed at the model's input size and upsampled (bilinear,
as Grad-CAM upsamples) to the stored 256x256 resolution, so that they are scored against the masks as drawn
rather than against masks shrunk with nearest neighbour, and so that `tolerance_px` means the same at every
model input size.

Intervals: percentile bootstrap over patients (slices of one patient are not independent), of the mean over the
scored examples. Differences (trained minus a reference) are paired: per example, then averaged, so that each
resample draws the same patients for both maps.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from asemble_jax import atomic_io, gradcam
from asemble_jax.data.examples import decode_png
from asemble_jax.data.pipeline import to_model_input
from asemble_jax.errors import InputError
from asemble_jax.evaluation.bootstrap import patient_bootstrap_mean
from asemble_jax.evaluation.formatting import format_interval
from asemble_jax.evaluation.localization import (DEFAULT_TOLERANCE_PX, LocalizationScores, centre_prior,
                                                 localization_scores)
from asemble_jax.workdir import build_model

LESION_CLASS = 1
TRAINED = "trained"
RANDOMISED = "randomised weights"
CENTRE_PRIOR = "centre prior"
METRICS = ("pointing_game", "heat_inside", "pixel_auc")
# Added to the run's seed to initialise the randomised model: far from the seed that initialised training, so
# that the reference is not the trained model's own starting point.
RANDOMISED_SEED_OFFSET = 10_007


@dataclasses.dataclass(frozen=True)
class LesionSlices:
    """The examples of a split whose mask is not empty, at the stored resolution."""

    images: np.ndarray  # (N, H, W) uint8, preprocessed as stored
    masks: np.ndarray  # (N, H, W) bool
    patient_ids: np.ndarray  # (N,) str
    names: np.ndarray  # (N,) str: patient and slice, for figure titles


def lesion_slices(source: Sequence[dict[str, Any]], name: str = "this split") -> LesionSlices:
    """Reads every record of `source` (a split that carries masks, called `name` in errors) and keeps those with a
    lesion."""
    if len(source) == 0 or "mask" not in source[0]:
        raise InputError(name, "localisation needs a split whose records carry a lesion mask")
    images, masks, patients, names = [], [], [], []
    for index in range(len(source)):
        record = source[index]
        mask = decode_png(record["mask"])[..., 0] != 0
        if not mask.any():
            continue
        patient = _text(record["patient_id"])
        images.append(decode_png(record["image"])[..., 0])
        masks.append(mask)
        patients.append(patient)
        names.append(f"{patient} slice {int(record['slice_index'])}" if "slice_index" in record
                     else f"{patient} #{index}")
    if not images:
        raise InputError(name, "no example has a lesion in its mask")
    return LesionSlices(np.stack(images), np.stack(masks), np.asarray(patients), np.asarray(names))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class ModelHeatmaps:
    maps: dict[str, np.ndarray]  # layer name (and gradcam.FUSED) -> (N, H, W) float32 in [0, 1]
    lesion_probability: np.ndarray  # (N,) the model's probability of LESION_CLASS


def grad_cam_heatmaps(model, slices: LesionSlices, *, image_size: int, batch_size: int) -> ModelHeatmaps:
    """Grad-CAM of LESION_CLASS for every slice, fed to the model exactly as evaluation feeds it, returned at the
    slices' resolution. Batches are padded to batch_size so that one compiled program serves them all."""
    layers = gradcam.model_layers(model)
    height, width = slices.images.shape[1:]
    maps: dict[str, list[np.ndarray]] = {}
    probabilities = []
    for start in range(0, len(slices.images), batch_size):
        chunk = slices.images[start:start + batch_size]
        inputs = np.zeros((batch_size, image_size, image_size, 1), np.float32)
        inputs[:len(chunk)] = [to_model_input(image, image_size) for image in chunk]
        result = gradcam.grad_cam(model, inputs, layers, target_class=LESION_CLASS)
        probabilities.append(np.asarray(jax.nn.softmax(result.logits, axis=-1))[:len(chunk), LESION_CLASS])
        for name, batch_maps in result.maps.items():
            if batch_maps.shape[1:] != (height, width):
                batch_maps = gradcam.upsample(batch_maps, (height, width))
            # Bilinear weights are convex, so only rounding can leave [0, 1].
            maps.setdefault(name, []).append(np.clip(np.asarray(batch_maps)[:len(chunk)], 0.0, 1.0))
    # In the model's layer order, fused last (jit returns dicts with sorted keys).
    order = [name for name in [*layers, gradcam.FUSED] if name in maps]
    return ModelHeatmaps({name: np.concatenate(maps[name]) for name in order}, np.concatenate(probabilities))


def randomised_model(config: ml_collections.ConfigDict):
    """The architecture of a training run's config with freshly initialised weights."""
    randomised = ml_collections.ConfigDict(config.to_dict())
    randomised.seed = config.seed + RANDOMISED_SEED_OFFSET
    return build_model(randomised)


@dataclasses.dataclass(frozen=True)
class Row:
    heatmap: str  # TRAINED, RANDOMISED or CENTRE_PRIOR
    layer: str  # a Grad-CAM layer name, gradcam.FUSED, or "" for the centre prior
    scores: LocalizationScores

    @property
    def label(self) -> str:
        return self.heatmap if not self.layer else f"{self.heatmap}: {self.layer}"


class _Rows:
    rows: list[Row]

    @property
    def headline_layer(self) -> str:
        """The fused map when the model has several layers, else its only one."""
        layers = [row.layer for row in self.rows if row.heatmap == TRAINED]
        return gradcam.FUSED if gradcam.FUSED in layers else layers[0]

    def row(self, heatmap: str, layer: str = "") -> Row:
        return next(row for row in self.rows if (row.heatmap, row.layer) == (heatmap, layer))


@dataclasses.dataclass(frozen=True)
class ScoredSlices(_Rows):
    """The scores of every lesion slice without the slices' images and maps: what a grid cell stores, what the
    folds of a cross-validation pool, what summarise reads."""
    patient_ids: np.ndarray  # (N,) str
    mask_fraction: np.ndarray  # (N,) the share of each slice that its mask covers
    lesion_probability: np.ndarray  # (N,) the trained model's probability of LESION_CLASS
    resolution: tuple[int, int]
    rows: list[Row]  # trained layers, randomised layers, centre prior; in table order

    def to_json(self) -> dict[str, Any]:
        arrays = {"has_lesion": bool, "pointing_hit": float, "heat_inside": float, "pixel_auc": float}
        return {
            "patient_ids": [str(p) for p in self.patient_ids], "mask_fraction": self.mask_fraction.tolist(),
            "lesion_probability": self.lesion_probability.tolist(), "resolution": list(self.resolution),
            "rows": [{"heatmap": row.heatmap, "layer": row.layer, "tolerance_px": row.scores.tolerance_px,
                      **{name: [None if kind is float and not np.isfinite(v) else kind(v)
                                for v in getattr(row.scores, name)] for name, kind in arrays.items()}}
                     for row in self.rows]}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ScoredSlices:
        def floats(values):
            return np.array([np.nan if v is None else v for v in values], np.float64)

        rows = [Row(r["heatmap"], r["layer"], LocalizationScores(
            has_lesion=np.array(r["has_lesion"], bool), pointing_hit=floats(r["pointing_hit"]),
            heat_inside=floats(r["heat_inside"]), pixel_auc=floats(r["pixel_auc"]), tolerance_px=r["tolerance_px"]))
            for r in payload["rows"]]
        return cls(np.array(payload["patient_ids"]), floats(payload["mask_fraction"]),
                   floats(payload["lesion_probability"]), tuple(payload["resolution"]), rows)


@dataclasses.dataclass(frozen=True)
class LocalizationResult(_Rows):
    slices: LesionSlices
    trained: ModelHeatmaps  # kept for the figure
    rows: list[Row]  # trained layers, randomised layers, centre prior; in table order

    @property
    def scored(self) -> ScoredSlices:
        masks = self.slices.masks
        return ScoredSlices(self.slices.patient_ids, masks.mean(axis=(1, 2)),
                            self.trained.lesion_probability.astype(np.float64),
                            tuple(masks.shape[1:]), self.rows)


def score_heatmaps(slices: LesionSlices, trained: ModelHeatmaps, randomised: ModelHeatmaps, *,
                   tolerance_px: float = DEFAULT_TOLERANCE_PX) -> LocalizationResult:
    rows = [Row(TRAINED, name, localization_scores(maps, slices.masks, tolerance_px))
            for name, maps in trained.maps.items()]
    rows += [Row(RANDOMISED, name, localization_scores(maps, slices.masks, tolerance_px))
             for name, maps in randomised.maps.items()]
    prior = centre_prior(*slices.masks.shape[1:])
    rows.append(Row(CENTRE_PRIOR, "", localization_scores(prior, slices.masks, tolerance_px)))
    return LocalizationResult(slices, trained, rows)


def evaluate_localization(model, reference_model, source: Sequence[dict[str, Any]], *, image_size: int,
                          batch_size: int = 16, tolerance_px: float = DEFAULT_TOLERANCE_PX,
                          name: str = "this split") -> LocalizationResult:
    """Grad-CAM of `model` and of `reference_model` (see randomised_model) on every lesion slice of `source`
    (called `name` in errors), scored against the masks and the centre prior."""
    slices = lesion_slices(source, name)
    return score_heatmaps(slices, grad_cam_heatmaps(model, slices, image_size=image_size, batch_size=batch_size),
                          grad_cam_heatmaps(reference_model, slices, image_size=image_size, batch_size=batch_size),
                          tolerance_px=tolerance_px)


def pool(results: Sequence[ScoredSlices]) -> ScoredSlices:
    """One set of scores over the slices of several (e.g. the held-out patients of cross-validation folds)."""
    if not results:
        raise ValueError("nothing to pool")
    keys = [[(row.heatmap, row.layer) for row in result.rows] for result in results]
    if any(k != keys[0] for k in keys):
        raise ValueError("results to pool must have the same rows (same model layers)")
    tolerances = {row.scores.tolerance_px for result in results for row in result.rows}
    if len(tolerances) != 1:
        raise ValueError(f"results to pool were scored with different tolerances: {sorted(tolerances)}")
    resolutions = {result.resolution for result in results}
    if len(resolutions) != 1:
        raise ValueError(f"results to pool were scored at different resolutions: {sorted(resolutions)}")

    def cat(arrays):
        return np.concatenate(list(arrays))

    tolerance_px = tolerances.pop()
    rows = []
    for i, (heatmap, layer) in enumerate(keys[0]):
        parts = [result.rows[i].scores for result in results]
        rows.append(Row(heatmap, layer, LocalizationScores(
            has_lesion=cat(p.has_lesion for p in parts), pointing_hit=cat(p.pointing_hit for p in parts),
            heat_inside=cat(p.heat_inside for p in parts), pixel_auc=cat(p.pixel_auc for p in parts),
            tolerance_px=tolerance_px)))
    return ScoredSlices(cat(r.patient_ids for r in results), cat(r.mask_fraction for r in results),
                        cat(r.lesion_probability for r in results), resolutions.pop(), rows)


def _metric_values(scores: LocalizationScores, metric: str) -> np.ndarray:
    return {"pointing_game": scores.pointing_hit, "heat_inside": scores.heat_inside,
            "pixel_auc": scores.pixel_auc}[metric]


def summarise(result: ScoredSlices, *, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """JSON-ready summary: every row's metrics with patient-bootstrap CIs, and the headline layer's paired
    differences from the randomised model and from the centre prior."""
    patients = result.patient_ids

    def interval(values):
        return patient_bootstrap_mean(values, patients, n_resamples=n_resamples, seed=seed)

    headline = result.headline_layer
    trained = result.row(TRAINED, headline).scores
    differences = {}
    for reference in (result.row(RANDOMISED, headline), result.row(CENTRE_PRIOR)):
        differences[reference.label] = {
            metric: interval(_metric_values(trained, metric) - _metric_values(reference.scores, metric))
            for metric in METRICS}
    return {
        "n_examples": int(patients.size),
        "n_patients": int(np.unique(patients).size),
        "resolution": list(result.resolution),
        "tolerance_px": trained.tolerance_px,
        "mean_mask_fraction": float(result.mask_fraction.mean()),
        "mean_lesion_probability": float(result.lesion_probability.mean()),
        "n_resamples": n_resamples,
        "seed": seed,
        "headline_layer": headline,
        "rows": [{"heatmap": row.heatmap, "layer": row.layer,
                  **{metric: interval(_metric_values(row.scores, metric)) for metric in METRICS}}
                 for row in result.rows],
        "differences": {f"{TRAINED}: {headline} - {name}": block for name, block in differences.items()},
    }


def markdown(summary: dict[str, Any], title: str, *, heading: str = "#") -> str:
    lines = [
        f"{heading} {title}", "",
        f"{summary['n_examples']} slices with a lesion, from {summary['n_patients']} patients, scored at "
        f"{summary['resolution'][0]}x{summary['resolution'][1]}. Maps explain the lesion class; the trained model "
        f"gives these slices a mean lesion probability of {summary['mean_lesion_probability']:.3f}. "
        f"Pointing game: the map's maximum within {summary['tolerance_px']:g} px of the mask. Heat inside: the "
        f"share of the map's heat on the mask; a uniform map would score the mean mask area, "
        f"{summary['mean_mask_fraction']:.3f}. Pixel AUC: heat as a score for lesion pixels (0.5 = chance). "
        f"95% CIs: percentile bootstrap over patients, {summary['n_resamples']} resamples, seed {summary['seed']}.",
        "", "| heatmap | layer | n | pointing game | heat inside | pixel AUC |", "|---|---|---:|---|---|---|"]
    for row in summary["rows"]:
        lines.append(f"| {row['heatmap']} | {row['layer'] or '-'} | {row['pointing_game']['n']} | "
                     + " | ".join(format_interval(row[metric]) for metric in METRICS) + " |")
    lines += ["", "Paired differences (per slice, then averaged; CI by patient bootstrap):", "",
              "| difference | pointing game | heat inside | pixel AUC |", "|---|---|---|---|"]
    for name, block in summary["differences"].items():
        lines.append(f"| {name} | " + " | ".join(format_interval(block[metric]) for metric in METRICS) + " |")
    return "\n".join(lines) + "\n"


def plot_cases(result: LocalizationResult, path: str, *, n_cases: int = 4) -> None:
    """The n_cases slices where the headline map puts the most heat inside the lesion (top row) and the least
    (bottom row): the map over the slice, the mask outlined in white, the map's maximum marked with a cross."""
    layer = result.headline_layer
    heat = result.row(TRAINED, layer).scores.heat_inside
    order = np.argsort(np.where(np.isfinite(heat), heat, -np.inf), kind="stable")[::-1]
    n_cases = min(n_cases, order.size)
    rows = {"most heat inside": order[:n_cases], "least heat inside": order[::-1][:n_cases]}
    figure = Figure(figsize=(2.6 * n_cases, 3.2 * len(rows)))
    axes = figure.subplots(len(rows), n_cases, squeeze=False)
    hits = result.row(TRAINED, layer).scores.pointing_hit
    for r, (row_title, indices) in enumerate(rows.items()):
        for c, i in enumerate(indices):
            ax = axes[r, c]
            heatmap = result.trained.maps[layer][i]
            ax.imshow(gradcam.overlay(result.slices.images[i], heatmap))
            ax.contour(result.slices.masks[i], levels=[0.5], colors="white", linewidths=0.8)
            peak_y, peak_x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
            ax.plot(peak_x, peak_y, "x", color="white", markersize=8, markeredgewidth=2)
            ax.set_title(f"{result.slices.names[i]}\nheat in {heat[i]:.2f}, hit {hits[i]:.2f}, "
                         f"p {result.trained.lesion_probability[i]:.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(row_title)
    figure.suptitle(f"Grad-CAM ({layer}) of the lesion class; white: expert mask; x: map maximum", fontsize=9)
    figure.tight_layout()
    atomic_io.save_figure(figure, path, dpi=110)


def write_report(result: LocalizationResult, stem: str, *, title: str, n_resamples: int = 2000,
                 seed: int = 0, cases_figure: str | None = None) -> dict[str, Any]:
    """Writes <stem>.json, <stem>.md and the figure of cases (<stem>_cases.png unless `cases_figure` puts it
    elsewhere: images of data whose terms forbid redistribution must stay out of committed results); returns the
    summary."""
    summary = summarise(result.scored, n_resamples=n_resamples, seed=seed)
    atomic_io.write_json(stem + ".json", summary)
    atomic_io.write_text(stem + ".md", markdown(summary, title))
    plot_cases(result, cases_figure or stem + "_cases.png")
    return summary
