"""The SIJ phantom: deterministic, masks that match labels and pixels, and a lesion signal that is really there."""
import cv2
import numpy as np
import pytest

from asemble_jax.data.phantom import PhantomConfig, generate_patient

SMALL = PhantomConfig(size=160, slices_per_patient=4)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask, kernel)


def _same(a, b) -> bool:
    return all(np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a.slices, b.slices))


def test_same_seed_and_config_give_identical_patients_whatever_the_order():
    alone = generate_patient(7, 3, True, SMALL)
    generate_patient(7, 2, True, SMALL)  # another patient first must not change patient 3
    assert _same(alone, generate_patient(7, 3, True, SMALL))
    assert not _same(alone, generate_patient(8, 3, True, SMALL))
    assert not _same(alone, generate_patient(7, 4, True, SMALL))
    assert not _same(alone, generate_patient(7, 3, True, PhantomConfig(size=160, slices_per_patient=4, noise=0.05)))


@pytest.mark.parametrize("plane", ["axial", "coronal"])
def test_raw_slices_look_like_an_acquisition(plane):
    patient = generate_patient(0, 1, True, PhantomConfig(plane=plane, size=160, slices_per_patient=3))
    assert [s.slice_index for s in patient.slices] == [0, 1, 2]
    for s in patient.slices:
        assert s.image.shape == (160, 160) and s.image.dtype == np.float32
        assert s.mask.shape == s.bone.shape == (160, 160) and s.mask.dtype == s.bone.dtype == np.uint8
        assert np.isfinite(s.image).all() and s.image.min() >= 0.0  # Rician magnitudes are never negative
        # Air around the body is dark next to the bone, so a body crop has something to find.
        assert np.median(s.image[:8, :8]) < 0.3 * np.median(s.image[s.bone > 0])
    # Slices of one patient share their anatomy: neighbouring bone masks overlap far more than they differ.
    first, second = patient.slices[0].bone > 0, patient.slices[1].bone > 0
    assert (first & second).sum() > 0.7 * (first | second).sum()


@pytest.mark.parametrize("plane", ["axial", "coronal"])
def test_masks_follow_the_label_and_sit_on_the_joints(plane):
    config = PhantomConfig(plane=plane, size=160, slices_per_patient=5)
    for index in range(4):
        healthy = generate_patient(0, index, False, config)
        assert not any(s.mask.any() for s in healthy.slices)
        sick = generate_patient(0, index, True, config)
        assert set(np.unique(np.concatenate([s.mask.ravel() for s in sick.slices]))) <= {0, 1}
        assert sum(s.mask.any() for s in sick.slices) >= 3  # lesions span several slices, not all
        for s in sick.slices:
            # Oedema, erosion and sclerosis lie in bone; ankylosis bridges the joint space between two bones.
            assert (s.mask & (1 - _dilate(s.bone, 2))).sum() == 0


@pytest.mark.parametrize("plane", ["axial", "coronal"])
def test_lesions_change_the_image_only_where_the_mask_says(plane):
    config = PhantomConfig(plane=plane, size=160, slices_per_patient=4)
    for index in range(3):
        healthy = generate_patient(3, index, False, config)
        sick = generate_patient(3, index, True, config)
        for h, s in zip(healthy.slices, sick.slices):
            # The point-spread blur (sigma 0.3 px at 160 px, kernel radius <= 3) is all that may leak out.
            outside = _dilate(s.mask, 3) == 0
            assert np.array_equal(h.image[outside], s.image[outside])
            assert np.array_equal(h.bone, s.bone)


@pytest.mark.parametrize("plane", ["axial", "coronal"])
def test_lesion_pixels_are_brighter_than_the_bone_around_them(plane):
    config = PhantomConfig(plane=plane, size=160, slices_per_patient=4)
    lesion, around = [], []
    for index in range(6):
        for s in generate_patient(11, index, True, config).slices:
            ring = (_dilate(s.mask, 10) > 0) & (_dilate(s.mask, 3) == 0) & (s.bone > 0)
            lesion.append(s.image[s.mask > 0])
            around.append(s.image[ring])
    assert np.concatenate(lesion).mean() > 1.2 * np.concatenate(around).mean()


def test_difficulty_lowers_lesion_contrast():
    def lesion_contrast(difficulty):
        config = PhantomConfig(size=160, slices_per_patient=4, difficulty=difficulty, noise=0.0, bias=0.0)
        gains = []
        for index in range(4):
            for h, s in zip(generate_patient(5, index, False, config).slices,
                            generate_patient(5, index, True, config).slices):
                if s.mask.any():
                    gains.append((s.image[s.mask > 0] - h.image[s.mask > 0]).mean() / np.median(h.image[h.bone > 0]))
        return np.mean(gains)

    easy, hard = lesion_contrast(0.0), lesion_contrast(1.0)
    assert easy > hard > 0.0


@pytest.mark.parametrize("bad", [dict(plane="sagittal"), dict(difficulty=1.5), dict(size=16), dict(fov=0.0),
                                 dict(slices_per_patient=0)])
def test_config_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        PhantomConfig(**bad)
