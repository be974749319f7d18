import numpy as np
import pytest

from asemble_jax.data import examples


def test_png_round_trip_is_lossless():
    image = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    decoded = examples.decode_png(examples.encode_png(image))
    assert decoded.shape == (256, 256, 1) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[..., 0], image)


@pytest.mark.parametrize("bad", [np.zeros((128, 128), np.uint8), np.zeros((256, 256), np.uint16),
                                 np.zeros((256, 256, 3), np.uint8)])
def test_encode_refuses_anything_but_256_square_uint8(bad):
    with pytest.raises(ValueError, match="256x256"):
        examples.encode_png(bad, "mask")


def test_features_include_mask_only_when_asked():
    assert "mask" not in examples.features().keys()
    assert "mask" in examples.features(with_mask=True).keys()
