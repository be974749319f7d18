"""Training augmentation: geometry is right and shared with the mask, intensity formulas hold, seeds decide."""
import math

import cv2
import numpy as np
import pytest

from asemble_jax.data.augment import AugmentConfig, AugmentParams, apply, augment, sample_params

SIZE = 256
NO_INTENSITY_JITTER = dict(gamma_range=(1.0, 1.0), contrast_range=(1.0, 1.0), max_brightness_delta=0.0)


def smooth_image(seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).random((SIZE, SIZE)) * 255
    return cv2.GaussianBlur(noise.astype(np.uint8), (0, 0), 4)


def lesion_pattern() -> np.ndarray:
    """An asymmetric 0/1 pattern (a bar and a disk off-centre), so that flips and rotations change it."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[60:90, 40:150] = 1
    cv2.circle(mask, (190, 170), 25, 1, -1)
    return mask


def test_identity_params_only_rescale_to_unit_interval():
    image = smooth_image()
    mask = lesion_pattern()
    out, out_mask = apply(image, AugmentParams(), mask)
    assert out.shape == (SIZE, SIZE, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], image / 255.0, atol=1e-6)
    np.testing.assert_array_equal(out_mask[..., 0], mask)


def test_flip_mirrors_image_and_mask_left_right():
    image = smooth_image()
    mask = lesion_pattern()
    out, out_mask = apply(image, AugmentParams(flip=True), mask)
    np.testing.assert_allclose(out[..., 0], image[:, ::-1] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(out_mask[..., 0], mask[:, ::-1])


def test_geometry_moves_a_point_where_flip_rotation_scale_and_shift_say():
    params = AugmentParams(rotation_degrees=8.0, scale=1.07, shift_xy=(9.0, -6.0), flip=True)
    x, y = 70.0, 200.0
    image = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(image, (int(x), int(y)), 3, 255, -1)
    # Expected position worked out by hand: mirror x, then rotate counter-clockwise as displayed (y points down,
    # so the angle enters with the opposite sign of the textbook formula) and scale about the centre, then shift.
    centre = (SIZE - 1) / 2
    dx, dy = (SIZE - 1 - x) - centre, y - centre
    theta = math.radians(params.rotation_degrees)
    expected_x = centre + params.scale * (dx * math.cos(theta) + dy * math.sin(theta)) + params.shift_xy[0]
    expected_y = centre + params.scale * (-dx * math.sin(theta) + dy * math.cos(theta)) + params.shift_xy[1]

    out, out_mask = apply(image, params, (image > 0).astype(np.uint8))
    weights = out[..., 0]
    rows, cols = np.indices(weights.shape)
    centroid = (np.sum(cols * weights) / weights.sum(), np.sum(rows * weights) / weights.sum())
    assert centroid == pytest.approx((expected_x, expected_y), abs=0.5)
    mask_rows, mask_cols = np.nonzero(out_mask[..., 0])
    assert (mask_cols.mean(), mask_rows.mean()) == pytest.approx((expected_x, expected_y), abs=0.75)


@pytest.mark.parametrize("seed", range(6))
def test_mask_stays_aligned_with_image_under_random_augmentation(seed):
    mask = lesion_pattern()
    config = AugmentConfig(max_rotation_degrees=15, flip_probability=0.5, **NO_INTENSITY_JITTER)
    out, out_mask = augment(mask * 255, config, np.random.default_rng(seed), mask=mask)
    image_says_lesion = out[..., 0] > 0.5
    mask_says_lesion = out_mask[..., 0] == 1
    assert set(np.unique(out_mask)) <= {0, 1}
    assert mask_says_lesion.sum() > 0.8 * mask.sum()
    # Bilinear (image) and nearest (mask) sampling may disagree only on the outline of the lesion.
    outline = cv2.dilate(mask_says_lesion.astype(np.uint8), np.ones((3, 3))) - cv2.erode(
        mask_says_lesion.astype(np.uint8), np.ones((3, 3)))
    disagreement = image_says_lesion != mask_says_lesion
    assert not np.any(disagreement & (outline == 0))


def test_gamma_contrast_and_brightness_follow_their_formulas():
    ramp = np.tile(np.arange(SIZE, dtype=np.uint8), (SIZE, 1))
    x = ramp / 255.0

    gamma_only, _ = apply(ramp, AugmentParams(gamma=1.3))
    np.testing.assert_allclose(gamma_only[..., 0], x ** 1.3, atol=1e-6)

    contrast_only, _ = apply(ramp, AugmentParams(contrast=0.7))
    np.testing.assert_allclose(contrast_only[..., 0], (x - x.mean()) * 0.7 + x.mean(), atol=1e-6)

    brightness_only, _ = apply(ramp, AugmentParams(brightness=-0.04))
    np.testing.assert_allclose(brightness_only[..., 0], np.clip(x - 0.04, 0, 1), atol=1e-6)


def test_output_stays_in_unit_interval_under_strong_jitter():
    config = AugmentConfig(gamma_range=(0.5, 2.0), contrast_range=(0.5, 2.0), max_brightness_delta=0.3)
    for seed in range(5):
        out, _ = augment(smooth_image(seed), config, np.random.default_rng(seed))
        assert 0.0 <= out.min() and out.max() <= 1.0


def test_same_seed_same_output_different_seed_different_output():
    image, mask = smooth_image(), lesion_pattern()
    first = augment(image, AugmentConfig(), np.random.default_rng(7), mask=mask)
    again = augment(image, AugmentConfig(), np.random.default_rng(7), mask=mask)
    other = augment(image, AugmentConfig(), np.random.default_rng(8), mask=mask)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_sampled_params_respect_the_configured_ranges():
    config = AugmentConfig()
    rng = np.random.default_rng(0)
    draws = [sample_params(config, rng, SIZE, SIZE) for _ in range(2000)]
    max_shift = config.max_shift_fraction * SIZE
    for p in draws:
        assert abs(p.rotation_degrees) <= config.max_rotation_degrees
        assert config.scale_range[0] <= p.scale <= config.scale_range[1]
        assert max(abs(p.shift_xy[0]), abs(p.shift_xy[1])) <= max_shift
        assert config.gamma_range[0] <= p.gamma <= config.gamma_range[1]
        assert config.contrast_range[0] <= p.contrast <= config.contrast_range[1]
        assert abs(p.brightness) <= config.max_brightness_delta
    flip_rate = np.mean([p.flip for p in draws])
    # Binomial(2000, 0.5): the standard deviation of the rate is about 0.011.
    assert abs(flip_rate - config.flip_probability) < 0.05


@pytest.mark.parametrize("bad", [
    dict(scale_range=(1.1, 0.9)),
    dict(gamma_range=(0.0, 1.0)),
    dict(flip_probability=1.5),
    dict(max_rotation_degrees=-1.0),
])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError, match="AugmentConfig"):
        AugmentConfig(**bad)


def test_wrong_dtype_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="uint8"):
        apply(np.zeros((SIZE, SIZE), np.float32), AugmentParams())


def test_mask_values_are_sampled_never_blended():
    label_map = lesion_pattern() * 3
    _, out_mask = apply(np.zeros((SIZE, SIZE), np.uint8), AugmentParams(rotation_degrees=7.0, scale=1.03), label_map)
    assert set(np.unique(out_mask)) == {0, 3}
