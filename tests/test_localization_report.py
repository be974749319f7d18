"""The localisation report's own logic: which slices are scored, maps of the lesion class at the masks'
resolution, the references, patient-level intervals, pooling, and the files written. The scores themselves are
tested in tests/test_localization.py."""
import importlib.util
import os

import cv2
import jax
import numpy as np
import pytest
from flax import nnx

from asemble_jax import gradcam
from asemble_jax.data import examples
from asemble_jax.evaluation import localization_report as report
from asemble_jax.config import load_config
from asemble_jax.errors import run_main
from asemble_jax.workdir import build_model

SIDE = examples.IMAGE_SIZE
MODEL_INPUT = 32
CELL = 4
ABLATIONS_BASE = os.path.join(os.path.dirname(__file__), os.pardir, "ablations", "base.py")


class HalfModel(nnx.Module):
    """Known answer: the lesion-class logit is the mean brightness of one half of the image (left, or right when
    mirrored), the other logit that of the other half, each read through its own channel of a 4x4-pooled map
    that is zero outside that half. So the lesion class's Grad-CAM is the pooled image on its half and zero on
    the other."""

    def __init__(self, lesion_half: str):
        self.lesion_half = lesion_half

    def offset_features(self):
        return ("last_conv",)

    def __call__(self, images, *, train=False, feature_offsets=None):
        pooled = nnx.avg_pool(images, (CELL, CELL), strides=(CELL, CELL))
        cols = pooled.shape[2]
        left = (np.arange(cols) < cols // 2).astype(np.float32)[None, None, :, None]
        halves = (1 - left, left) if self.lesion_half == "left" else (left, 1 - left)  # (class 0, class 1)
        features = pooled * np.concatenate(halves, axis=-1)
        if feature_offsets:
            features = features + feature_offsets["last_conv"]
        return features.mean(axis=(1, 2)) * 2, {"features": {"last_conv": features}}


def _disc(cy: int, cx: int, radius: int = 18) -> np.ndarray:
    y, x = np.mgrid[:SIDE, :SIDE]
    return (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2


def _record(image: np.ndarray, mask: np.ndarray, patient: str, slice_index: int) -> dict:
    return {"image": examples.encode_png(image.astype(np.uint8)), "mask": examples.encode_png(mask.astype(np.uint8)),
            "label": int(mask.any()), "patient_id": patient.encode(), "slice_index": slice_index}


@pytest.fixture(scope="module")
def source():
    """Slice 0: a bright lesion on the left, a dimmer mimic on the right. Slice 1: no lesion. Slice 2: the
    mirror image of slice 0. Slice 3: like slice 0, another patient."""
    left, right = _disc(128, 64), _disc(128, 192)
    mimic_left, mimic_right = _disc(60, 60), _disc(60, 196)
    empty = np.zeros((SIDE, SIDE), bool)
    return [
        _record(240 * left + 120 * mimic_right, left, "p1", 0),
        _record(240 * right, empty, "p1", 1),
        _record(240 * right + 120 * mimic_left, right, "p1", 2),
        _record(240 * left + 120 * mimic_right, left, "p2", 0),
    ]


@pytest.fixture(scope="module")
def result(source):
    return report.evaluate_localization(HalfModel("left"), HalfModel("right"), source, image_size=MODEL_INPUT,
                                        batch_size=2, tolerance_px=4)


def test_only_slices_with_a_lesion_are_scored_with_their_names(result):
    np.testing.assert_array_equal(result.slices.patient_ids, ["p1", "p1", "p2"])
    np.testing.assert_array_equal(result.slices.names, ["p1 slice 0", "p1 slice 2", "p2 slice 0"])
    assert result.slices.masks.shape == (3, SIDE, SIDE) and result.slices.masks.dtype == bool


def test_a_split_without_masks_or_lesions_is_refused(source):
    without_masks = [{k: v for k, v in record.items() if k != "mask"} for record in source]
    with pytest.raises(ValueError, match="carry a lesion mask"):
        report.lesion_slices(without_masks)
    with pytest.raises(ValueError, match="no example"):
        report.lesion_slices([source[1]])


def test_maps_explain_the_lesion_class_at_the_masks_resolution(result):
    heat = result.trained.maps["last_conv"]
    assert heat.shape == (3, SIDE, SIDE) and heat.min() >= 0 and heat.max() <= 1
    # The lesion class reads the left half: whatever the model predicts, no heat reaches the right half beyond
    # bilinear spill of half a pooled cell (CELL / 2 input pixels = CELL / 2 * SIDE / MODEL_INPUT stored ones).
    spill = CELL // 2 * SIDE // MODEL_INPUT
    assert np.all(heat[:, :, SIDE // 2 + spill:] == 0)
    # Slice 2 is brighter on the right, so the model predicts class 0 there, yet the map is still of class 1.
    assert result.trained.lesion_probability[1] < 0.5 < result.trained.lesion_probability[0]
    assert heat[1].max() > 0.9


def test_scores_follow_where_the_lesion_is(result):
    trained = result.row(report.TRAINED, "last_conv").scores
    randomised = result.row(report.RANDOMISED, "last_conv").scores
    # Lesions on the left (slices 0 and 3) are found by the left-reading model and missed by its mirror image;
    # the lesion on the right (slice 1 here) the other way round.
    np.testing.assert_array_equal(trained.pointing_hit, [1, 0, 1])
    np.testing.assert_array_equal(randomised.pointing_hit, [0, 1, 0])
    # A map has no heat beyond half a pooled cell past its half, so a lesion on the other half gets none.
    assert np.all(trained.heat_inside[[0, 2]] > 0.1) and trained.heat_inside[1] == 0
    assert randomised.heat_inside[1] > 0.1 and np.all(randomised.heat_inside[[0, 2]] == 0)


def test_rows_are_trained_then_reference_then_centre_prior(result):
    assert [(row.heatmap, row.layer) for row in result.rows] == [
        (report.TRAINED, "last_conv"), (report.RANDOMISED, "last_conv"), (report.CENTRE_PRIOR, "")]
    assert result.headline_layer == "last_conv", "a single-layer model's only layer is its headline"


def test_padding_a_batch_changes_no_map(source, result):
    whole = report.grad_cam_heatmaps(HalfModel("left"), result.slices, image_size=MODEL_INPUT, batch_size=8)
    np.testing.assert_allclose(whole.maps["last_conv"], result.trained.maps["last_conv"], atol=1e-6)
    np.testing.assert_allclose(whole.lesion_probability, result.trained.lesion_probability, atol=1e-6)


def _slices(masks: np.ndarray, patients: list[str]) -> report.LesionSlices:
    return report.LesionSlices(np.zeros(masks.shape, np.uint8), masks, np.asarray(patients),
                               np.asarray([f"{p} #{i}" for i, p in enumerate(patients)]))


@pytest.fixture(scope="module")
def perfect_vs_inverted():
    """Trained maps equal to the masks (perfect on every score), reference maps their complement (worst)."""
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 40, 40), bool)
    for mask in masks:
        top, left = rng.integers(0, 30, 2)
        mask[top:top + 8, left:left + 8] = True
    slices = _slices(masks, ["a", "a", "b", "b", "c", "c"])
    maps = masks.astype(np.float32)
    trained = report.ModelHeatmaps({"wide_resnet": maps, "convnext": maps, gradcam.FUSED: maps}, np.full(6, 0.9))
    inverted = report.ModelHeatmaps({name: 1 - maps for name in trained.maps}, np.full(6, 0.5))
    return report.score_heatmaps(slices, trained, inverted, tolerance_px=0)


def test_summary_of_known_maps(perfect_vs_inverted):
    summary = report.summarise(perfect_vs_inverted.scored, n_resamples=200)
    assert summary["headline_layer"] == gradcam.FUSED
    rows = {(row["heatmap"], row["layer"]): row for row in summary["rows"]}
    for metric in report.METRICS:
        assert rows[(report.TRAINED, gradcam.FUSED)][metric]["estimate"] == 1
        assert rows[(report.RANDOMISED, gradcam.FUSED)][metric]["estimate"] == 0
        block = summary["differences"][f"trained: fused - {report.RANDOMISED}: fused"][metric]
        assert (block["estimate"], block["ci_low"], block["ci_high"]) == (1, 1, 1)
    assert summary["mean_mask_fraction"] == pytest.approx(64 / 1600)
    assert summary["n_examples"] == 6 and summary["n_patients"] == 3


def test_bootstrap_resamples_patients_not_slices():
    # Patient a: ten slices scoring 0; patient b: one slice scoring 1. Drawing two patients with replacement
    # gives means 0 (a, a), 1/11 (a, b) or 1 (b, b), with probabilities 1/4, 1/2, 1/4: the 95% interval is
    # [0, 1]. Resampling slices instead would give a narrow interval around 1/11.
    values = np.array([0.0] * 10 + [1.0])
    interval = report.patient_bootstrap_mean(values, np.array(["a"] * 10 + ["b"]), n_resamples=4000, seed=1)
    assert interval["estimate"] == pytest.approx(1 / 11)
    assert (interval["ci_low"], interval["ci_high"]) == (0.0, 1.0)
    assert interval["n"] == 11 and interval["n_patients"] == 2


def test_bootstrap_skips_unscored_examples():
    interval = report.patient_bootstrap_mean(np.array([np.nan, 0.5, 0.5]), np.array(["a", "b", "c"]))
    assert interval["n"] == 2 and interval["n_patients"] == 2
    assert interval["estimate"] == interval["ci_low"] == interval["ci_high"] == 0.5


def test_pooling_equals_scoring_the_examples_together(perfect_vs_inverted, result):
    pooled = report.pool([perfect_vs_inverted.scored, perfect_vs_inverted.scored])
    assert pooled.patient_ids.shape == (12,)
    for row, original in zip(pooled.rows, perfect_vs_inverted.rows):
        np.testing.assert_array_equal(row.scores.heat_inside, np.tile(original.scores.heat_inside, 2))
    assert report.summarise(pooled)["rows"][0]["heat_inside"]["n"] == 12
    with pytest.raises(ValueError, match="same rows"):
        report.pool([perfect_vs_inverted.scored, result.scored])


def test_report_files(result, tmp_path):
    stem = str(tmp_path / "eval" / "localization_toy_test")
    summary = report.write_report(result, stem, title="toy", n_resamples=100)
    text = open(stem + ".md").read()
    assert text.startswith("# toy") and text.count("| trained | last_conv |") == 1
    assert f"{summary['rows'][0]['pointing_game']['estimate']:.3f}" in text
    figure = cv2.imread(stem + "_cases.png")
    assert figure is not None and figure.shape[0] > 200
    assert sorted(os.listdir(tmp_path / "eval")) == sorted(
        ["localization_toy_test.md", "localization_toy_test.json", "localization_toy_test_cases.png"])


def test_cases_figure_can_be_kept_out_of_the_report_folder(result, tmp_path):
    # Figures of unlicensed scans go to the (git-ignored) workdir, never beside the committed tables.
    stem, private = str(tmp_path / "results" / "localization"), str(tmp_path / "workdir" / "cases.png")
    report.write_report(result, stem, title="toy", n_resamples=100, cases_figure=private)
    assert sorted(os.listdir(tmp_path / "results")) == ["localization.json", "localization.md"]
    assert cv2.imread(private) is not None


def test_randomised_model_has_the_architecture_and_other_weights():
    config = load_config(f"{ABLATIONS_BASE}:model=asemblenet,preset=tiny")
    trained, randomised = build_model(config), report.randomised_model(config)
    assert config.seed == 0, "the run's config is left as it was"
    a, b = nnx.state(trained, nnx.Param), nnx.state(randomised, nnx.Param)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    # Parameters initialised at random (not to a constant such as a zero bias) must all be drawn anew.
    drawn = [(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if np.ptp(np.asarray(x)) > 0]
    assert len(drawn) > 10 and all(not np.allclose(x, y) for x, y in drawn)


def test_script_names_an_unusable_workdir_in_one_line(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "evaluate_localization_script", os.path.join(os.path.dirname(__file__), os.pardir, "scripts",
                                                     "evaluate_localization.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert run_main(script.main, [f"--workdir={tmp_path}", "--dataset=synthetic_sij/coronal"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {tmp_path}") and "config.json" in error[0]


@pytest.mark.parametrize("level", [0.0, 1.0, 95])
def test_bootstrap_refuses_a_bad_level(level):
    with pytest.raises(ValueError, match="level"):
        report.patient_bootstrap_mean(np.array([0.0, 1.0]), np.array(["a", "b"]), level=level)


def test_scores_survive_their_json_record(result):
    """A grid cell stores its scores as JSON and the tables pool them: the round trip must lose nothing."""
    import json

    scored = result.scored
    restored = report.ScoredSlices.from_json(json.loads(json.dumps(scored.to_json())))
    assert restored.resolution == scored.resolution and restored.headline_layer == scored.headline_layer
    np.testing.assert_array_equal(restored.patient_ids, scored.patient_ids)
    for row, original in zip(restored.rows, scored.rows):
        assert (row.heatmap, row.layer) == (original.heatmap, original.layer)
        for name in ("has_lesion", "pointing_hit", "heat_inside", "pixel_auc"):
            np.testing.assert_array_equal(getattr(row.scores, name), getattr(original.scores, name))
    assert (json.dumps(report.summarise(restored, n_resamples=50), sort_keys=True)
            == json.dumps(report.summarise(scored, n_resamples=50), sort_keys=True))
