"""Localisation scores on synthetic masks whose answers are known by construction."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asemble_jax.evaluation.localization import centre_prior, localization_scores

SIZE = 32


def _quadrant(top: bool, left: bool) -> np.ndarray:
    region = np.zeros((SIZE, SIZE), bool)
    rows = slice(0, SIZE // 2) if top else slice(SIZE // 2, SIZE)
    cols = slice(0, SIZE // 2) if left else slice(SIZE // 2, SIZE)
    region[rows, cols] = True
    return region


def test_heat_equal_to_the_mask_scores_perfectly():
    mask = _quadrant(top=True, left=True)
    scores = localization_scores(mask[None].astype(float), mask[None], tolerance_px=0)
    assert scores.pointing_hit[0] == 1.0 and scores.heat_inside[0] == 1.0 and scores.pixel_auc[0] == 1.0


def test_heat_inside_the_mask_is_all_inside():
    mask = _quadrant(top=True, left=True)
    heat = np.zeros((SIZE, SIZE))
    heat[2:10, 3:12] = np.linspace(0.1, 1.0, 72).reshape(8, 9)
    scores = localization_scores(heat[None], mask[None], tolerance_px=0)
    assert scores.heat_inside[0] == pytest.approx(1.0) and scores.pointing_hit[0] == 1.0


def test_heat_in_the_opposite_quadrant_misses():
    mask = _quadrant(top=True, left=True)
    heat = np.zeros((SIZE, SIZE))
    heat[24:, 24:] = 1.0  # nearest lesion pixel (15, 15) is 9 * sqrt(2) ~ 12.7 pixels from the heat
    scores = localization_scores(heat[None], mask[None], tolerance_px=5)
    assert scores.heat_inside[0] == 0.0 and scores.pointing_hit[0] == 0.0
    # No lesion pixel has more heat than any other pixel; lesion ties the cold background half the time.
    lesion, hot = mask.sum(), heat.sum()
    background = SIZE * SIZE - lesion
    assert scores.pixel_auc[0] == pytest.approx(0.5 * (background - hot) / background)


def test_tolerance_is_a_euclidean_distance_in_pixels():
    mask = np.zeros((1, SIZE, SIZE), bool)
    mask[0, 10:14, 10:14] = True
    heat = np.zeros((1, SIZE, SIZE))
    heat[0, 16, 16] = 1.0  # nearest lesion pixel (13, 13): distance sqrt(18) ~ 4.24
    assert localization_scores(heat, mask, tolerance_px=4).pointing_hit[0] == 0.0
    assert localization_scores(heat, mask, tolerance_px=4.25).pointing_hit[0] == 1.0


def test_flat_heatmap_scores_the_lesion_area_not_a_free_hit():
    mask = _quadrant(top=True, left=True)
    scores = localization_scores(np.full((1, SIZE, SIZE), 0.5), mask[None], tolerance_px=0)
    assert scores.pointing_hit[0] == pytest.approx(0.25)
    assert scores.pixel_auc[0] == pytest.approx(0.5)


def test_pixel_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, SIZE, SIZE)) < 0.2
    heatmaps = np.clip(masks * 0.3 + rng.uniform(0, 0.7, masks.shape), 0, 1).round(2)
    scores = localization_scores(heatmaps, masks)
    for i in range(3):
        assert scores.pixel_auc[i] == pytest.approx(roc_auc_score(masks[i].ravel(), heatmaps[i].ravel()))


def test_empty_masks_are_flagged_and_skipped():
    masks = np.stack([_quadrant(True, True), np.zeros((SIZE, SIZE), bool)])
    scores = localization_scores(masks.astype(float), masks, tolerance_px=0)
    assert scores.has_lesion.tolist() == [True, False]
    assert np.isnan([scores.pointing_hit[1], scores.heat_inside[1], scores.pixel_auc[1]]).all()
    summary = scores.summary()
    assert (summary["n_scored"], summary["n_skipped_empty_mask"]) == (1, 1)
    assert summary["pointing_game"] == 1.0 and summary["heat_inside"] == 1.0


def test_centre_prior_is_a_centred_gaussian_of_the_stated_sigma():
    prior = centre_prior(64, 64)  # sigma = 0.25 * 64 = 16 pixels, centre at (31.5, 31.5)
    assert prior.max() <= 1.0 and prior.min() > 0.0
    np.testing.assert_allclose(prior, prior[::-1, ::-1])
    # (31.5 + 16, 31.5) is not a pixel; compare two pixels at known distances from the centre instead.
    assert prior[31, 31] == pytest.approx(np.exp(-(0.5**2 + 0.5**2) / (2 * 16**2)))
    assert prior[31, 63] == pytest.approx(np.exp(-(0.5**2 + 31.5**2) / (2 * 16**2)))


def test_one_reference_heatmap_is_scored_against_every_mask():
    masks = np.stack([_quadrant(True, True), np.zeros((SIZE, SIZE), bool)])
    masks[1, 14:18, 14:18] = True  # a lesion at the centre, where the prior peaks
    scores = localization_scores(centre_prior(SIZE, SIZE), masks, tolerance_px=0)
    assert scores.pointing_hit.tolist() == [0.25, 1.0]  # the prior's four tied central maxima; one is in quadrant 1


def test_heatmaps_outside_the_unit_interval_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        localization_scores(np.full((1, 4, 4), 2.0), np.ones((1, 4, 4), bool))
