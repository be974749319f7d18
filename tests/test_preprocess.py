"""Preprocessing steps, one by one and chained, against expectations computed independently in each test."""
import dataclasses

import cv2
import numpy as np
import pytest

from asemble_jax.data import preprocess as pp
from asemble_jax.errors import InputError
from asemble_jax.data.readers import read_nifti_volume


def _evenly_spaced_image(shape, seed=0):
    """Values 0..100 evenly spaced, shuffled over the image: every percentile p of it is exactly p."""
    values = np.linspace(0.0, 100.0, shape[0] * shape[1])
    return np.random.default_rng(seed).permutation(values).reshape(shape)


def _expected_window(values, low, high):
    return np.clip(np.rint((values - low) / (high - low) * 255.0), 0, 255).astype(np.uint8)


def _body_phantom(shape=(400, 400), centre=(230, 200), axes=(110, 140), seed=0):
    """Noisy dark background with a bright textured ellipse ('the body'); returns the image and the body mask."""
    rng = np.random.default_rng(seed)
    image = rng.normal(5.0, 2.0, shape)
    body = np.zeros(shape, np.uint8)
    cv2.ellipse(body, (centre[1], centre[0]), (axes[1], axes[0]), 0, 0, 360, 1, -1)
    image[body > 0] = 300.0 + 80.0 * rng.standard_normal(int(body.sum()))
    return image, body.astype(bool)


def _bounding_box(mask):
    rows, columns = np.nonzero(mask)
    return rows.min(), rows.max() + 1, columns.min(), columns.max() + 1


def test_windowing_matches_percentile_formula():
    raw = _evenly_spaced_image((100, 100))
    np.testing.assert_array_equal(pp.window_to_uint8(raw), _expected_window(raw, 1.0, 99.0))
    np.testing.assert_array_equal(pp.window_to_uint8(raw, (10.0, 60.0)), _expected_window(raw, 10.0, 60.0))


def test_windowing_ignores_non_finite_values_and_zeroes_them():
    finite = _evenly_spaced_image((100, 100)).ravel()
    raw = np.concatenate([finite, [np.nan] * 50, [np.inf] * 25, [-np.inf] * 25]).reshape(101, 100)
    windowed = pp.window_to_uint8(raw).ravel()
    np.testing.assert_array_equal(windowed[:finite.size], _expected_window(finite, 1.0, 99.0))
    assert not windowed[finite.size:].any()


def test_windowing_constant_image():
    assert not pp.window_to_uint8(np.full((32, 32), 7.0)).any()
    spots = np.full((32, 32), 7.0)
    spots[3, 4] = spots[20, 9] = 9.0
    np.testing.assert_array_equal(np.argwhere(pp.window_to_uint8(spots) == 255), [[3, 4], [20, 9]])
    assert pp.window_to_uint8(spots).sum() == 2 * 255


def test_clahe_is_opencv_on_the_windowed_input():
    raw = _evenly_spaced_image((256, 256)) ** 2  # a skewed histogram, so that CLAHE visibly changes it
    windowed = _expected_window(raw, *np.percentile(raw, (1.0, 99.0)))
    for clip_limit, tiles in ((2.0, (8, 8)), (4.0, (4, 6))):
        config = pp.PreprocessConfig(crop=False, clahe_clip_limit=clip_limit, clahe_tile_grid_size=tiles)
        expected = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tiles).apply(windowed)
        np.testing.assert_array_equal(pp.preprocess(raw, config).image, expected)
        np.testing.assert_array_equal(pp.apply_clahe(windowed, clip_limit, tiles), expected)
        assert not np.array_equal(expected, windowed)
    unenhanced = pp.preprocess(raw, pp.PreprocessConfig(crop=False, clahe_clip_limit=None)).image
    np.testing.assert_array_equal(unenhanced, windowed)


def test_resize_uses_area_down_and_cubic_up():
    rng = np.random.default_rng(1)
    large = rng.random((512, 512)).astype(np.float32)
    # Area interpolation at exactly half size is the mean of each 2x2 block.
    block_means = large.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(pp.resize_to(large, 256), block_means, atol=1e-6)
    small = rng.random((64, 64)).astype(np.float32)
    up = pp.resize_to(small, 256)
    np.testing.assert_array_equal(up, cv2.resize(small, (256, 256), interpolation=cv2.INTER_CUBIC))
    assert not np.allclose(up, cv2.resize(small, (256, 256), interpolation=cv2.INTER_LINEAR))


def test_crop_removes_black_border_text_and_ruler_but_keeps_the_body():
    image, body = _body_phantom()
    overlay = np.zeros(image.shape, np.uint8)
    cv2.putText(overlay, "STIR 3.0T  L", (20, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1, 2)
    cv2.line(overlay, (385, 60), (385, 380), 1, 2)
    for y in range(60, 381, 20):
        cv2.line(overlay, (375, y), (385, y), 1, 2)
    image[overlay > 0] = 1000.0
    box = pp.body_crop_box(pp.window_to_uint8(image))
    y0, y1, x0, x1 = box
    assert y1 - y0 == x1 - x0
    body_y0, body_y1, body_x0, body_x1 = _bounding_box(body)
    assert y0 <= body_y0 and y1 >= body_y1 and x0 <= body_x0 and x1 >= body_x1
    inside = np.zeros(image.shape, bool)
    inside[max(y0, 0):y1, max(x0, 0):x1] = True
    assert not (inside & (overlay > 0)).any(), "burned-in text or ruler kept inside the crop"
    # The black border is gone: the body's bounding box fills most of the square.
    assert (body_x1 - body_x0) / (x1 - x0) > 0.9
    result = pp.preprocess(image)
    assert result.crop_box == box and result.image.shape == (256, 256) and result.image.dtype == np.uint8


def test_crop_ignores_an_overlapping_measurement_line_and_keeps_dark_tissue_around_bright_fluid():
    image, body = _body_phantom()
    image[body] *= 0.3  # dark tissue, as fat-suppressed STIR muscle
    image[150:320, 190:210] = 450.0  # a bright column of fluid (5x the tissue), as the spinal canal on posterior slices
    line = np.zeros(image.shape, np.uint8)
    cv2.line(line, (300, 230), (398, 230), 1, 2)  # a measurement line from inside the body into the background
    image[line > 0] = 3000.0
    y0, y1, x0, x1 = pp.body_crop_box(pp.window_to_uint8(image))
    body_y0, body_y1, body_x0, body_x1 = _bounding_box(body)
    assert y0 <= body_y0 and y1 >= body_y1 and x0 <= body_x0 and x1 >= body_x1
    assert x1 - x0 <= 1.1 * (body_x1 - body_x0), "the line's part outside the body must not widen the crop"


def test_crop_keeps_a_body_that_fills_the_image():
    rng = np.random.default_rng(2)
    image = 300.0 + 80.0 * rng.standard_normal((336, 336))
    assert pp.body_crop_box(pp.window_to_uint8(image)) == (0, 336, 0, 336)
    assert pp.body_crop_box(np.zeros((50, 70), np.uint8)) == (-10, 60, 0, 70)


def test_wide_image_is_padded_not_distorted():
    image, body = _body_phantom(shape=(200, 400), centre=(100, 200), axes=(80, 160))
    result = pp.preprocess(image, pp.PreprocessConfig(clahe_clip_limit=None))
    y0, y1, x0, x1 = result.crop_box
    assert y1 - y0 == x1 - x0 and y0 < 0 and y1 > 200
    top, bottom, left, right = _bounding_box(result.image > 128)
    assert abs((right - left) / (bottom - top) - 2.0) < 0.05, "a 2:1 ellipse must stay 2:1"
    assert not result.image[:10].any() and not result.image[-10:].any(), "padding must be background"


@pytest.mark.parametrize("shape, centre, axes", [((400, 400), (230, 200), (100, 120)),  # cropped
                                                  ((240, 480), (120, 240), (100, 200))])  # padded
def test_mask_follows_crop_padding_and_resize(shape, centre, axes):
    image, body = _body_phantom(shape=shape, centre=centre, axes=axes)
    lesion = np.zeros(shape, np.uint8)
    top, left = centre[0] - 30, centre[1] + 40
    lesion[top:top + 24, left:left + 32] = 1
    image[lesion > 0] = 2000.0
    result = pp.preprocess(image, pp.PreprocessConfig(clahe_clip_limit=None), mask=lesion)
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) == {0, 1}

    y0, y1, x0, x1 = result.crop_box
    assert (y0 < 0) == (shape[0] < shape[1])
    scale = 256 / (y1 - y0)
    expected_edges = np.array([(top - y0) * scale, (top + 24 - y0) * scale,
                               (left - x0) * scale, (left + 32 - x0) * scale])
    assert np.abs(np.array(_bounding_box(result.mask)) - expected_edges).max() <= 1.0
    # The bright lesion of the image lands where the mask does: shifting the mask by a few pixels would put
    # part of it on the darker body.
    square = np.ones((3, 3), np.uint8)
    interior = cv2.erode(result.mask, square) > 0
    ring = (cv2.dilate(result.mask, square, iterations=3) > 0) & ~(cv2.dilate(result.mask, square) > 0)
    assert (result.image[interior] == 255).all()
    assert np.mean(result.image[ring] == 255) < 0.1


def test_bad_slices_raise_input_error_naming_the_file():
    good = _evenly_spaced_image((64, 64))
    cases = [
        (np.zeros((2, 64, 64)), pp.PreprocessConfig(), None, "2-D slice"),
        (np.full((64, 64), np.nan), pp.PreprocessConfig(), None, "no finite"),
        (np.zeros((4, 64)), pp.PreprocessConfig(), None, "too small"),
        (good, pp.PreprocessConfig(max_pixels=1000), None, "exceeds the limit"),
        (good, pp.PreprocessConfig(), np.zeros((32, 64)), "does not match"),
        (good, pp.PreprocessConfig(), np.full((64, 64), 0.5), "integer labels"),
        (np.zeros((64, 64), complex), pp.PreprocessConfig(), None, "not real numbers"),
    ]
    for raw, config, mask, fragment in cases:
        with pytest.raises(InputError) as caught:
            pp.preprocess(raw, config, mask=mask, path="scans/p01/slice.dcm")
        assert str(caught.value).startswith("scans/p01/slice.dcm: ") and fragment in str(caught.value)


def test_config_rejects_nonsense():
    for change in ({"window_percentiles": (99.0, 1.0)}, {"size": 2}, {"crop_opening": 0.0},
                   {"clahe_clip_limit": -1.0}, {"clahe_tile_grid_size": (0, 8)}, {"crop_min_component": 0.0}):
        with pytest.raises(ValueError):
            dataclasses.replace(pp.PreprocessConfig(), **change)


def test_real_stir_slices_keep_their_anatomy(shared_data):
    scans = sorted((shared_data / "bone_mri").glob("data/images_study/STIR/*/*_STIR.nii.gz"))
    if not scans:
        pytest.skip("no bone_mri STIR scans in the shared data")
    volume = read_nifti_volume(scans[0])
    # These scans are framed on the pelvis with little background: on every slice, the posterior ones with the
    # bright spinal canal included, the crop must keep nearly all of the image.
    for k, raw in enumerate(volume):
        result = pp.preprocess(raw)
        y0, y1, x0, x1 = result.crop_box
        assert min(y1 - y0, x1 - x0) >= 0.95 * min(raw.shape), f"slice {k} cropped to {result.crop_box}"
        assert result.image.shape == (256, 256) and result.image.std() > 20
