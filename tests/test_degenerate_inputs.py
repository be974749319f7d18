"""Slices with nothing to classify (issue 18, items 5 and 6): blank, constant and almost-all-padding slices are
refused by preprocessing's contrast check, and a volume's unusable slices (no usable contrast, no finite value)
are refused one by one, naming the slice, while its other slices are still read. No model is needed: the tools'
end-to-end behaviour is in tests/test_predict.py and tests/test_gradcam.py."""
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from asemble_jax import user_inputs
from asemble_jax.data import phantom
from asemble_jax.data import preprocess as pp
from asemble_jax.errors import InputError

SIZE = 32


def _body(shape=(120, 100), seed=0):
    """A noisy bright disc on a dark noisy background: a slice with a body in it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]]
    disc = (y - shape[0] / 2) ** 2 + (x - shape[1] / 2) ** 2 < (min(shape) / 3) ** 2
    return 40 + 500 * disc + rng.normal(0, 10, shape)


def _strip(rows=8, columns=20000, seed=1):
    """An image a few pixels high: squared and zero-padded by the crop, the model's input is almost empty."""
    return np.random.default_rng(seed).integers(0, 256, (rows, columns)).astype(np.uint8)


@pytest.mark.parametrize("name, raw, stage", [
    ("black", np.zeros((120, 100)), "windowing leaves no grey levels"),
    ("constant", np.full((120, 100), 77.0), "windowing leaves no grey levels"),
    # A constant slice with a few bright specks: windowing maps it to 0 and 255 only.
    ("specks", np.where(np.random.default_rng(2).random((300, 300)) < 0.005, 200.0, 10.0),
     "windowing leaves no grey levels"),
    ("strip", _strip().astype(float), "after windowing and cropping"),
])
def test_slices_without_contrast_are_refused_by_the_contrast_check(name, raw, stage):
    with pytest.raises(InputError) as raised:
        pp.preprocess(raw, path=f"{name}.png", require_contrast=True)
    message = str(raised.value)
    assert message.startswith(f"{name}.png: no usable contrast") and stage in message and "\n" not in message
    pp.preprocess(raw)  # the dataset builders' call: unchanged, never refused


def test_the_contrast_check_passes_every_phantom_slice_and_changes_no_output():
    """Training data must never be refused: the phantom's slices, of both planes, lesions or not, pass with a wide
    margin, and a slice that passes comes out exactly as without the check."""
    for plane in ("coronal", "axial"):
        for index in range(2):
            config = phantom.PhantomConfig(plane=plane, size=128, slices_per_patient=4)
            for phantom_slice in phantom.generate_patient(7, index, has_lesions=index == 1, config=config).slices:
                checked = pp.preprocess(phantom_slice.image, path="phantom", require_contrast=True)
                np.testing.assert_array_equal(checked.image, pp.preprocess(phantom_slice.image).image)
                assert checked.crop_box == pp.preprocess(phantom_slice.image).crop_box


def _save_nifti(path, slices):
    """(slices, H, W) as read back by read_nifti_volume: stored as vol[:, :, k] = flipud(slice k).T."""
    volume = np.stack([np.flipud(s).T for s in slices], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)


def _read(path, **options):
    errors = []
    slices = list(user_inputs.iter_slices(path, path, path.parent / "out", image_size=SIZE, slice_index=None,
                              on_slice_error=errors.append, **options))
    return [s.label for s in slices], [str(e) for e in errors]


def test_blank_images_and_a_volume_of_zeros_are_refused_slice_by_slice(tmp_path):
    Image.fromarray(np.zeros((120, 100), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.full((120, 100), 77, np.uint8)).save(tmp_path / "constant.png")
    _save_nifti(tmp_path / "zeros.nii.gz", np.zeros((3, 40, 48)))
    for name in ("black.png", "constant.png"):
        labels, errors = _read(tmp_path / name)
        assert labels == [] and len(errors) == 1
        assert errors[0].startswith(f"{tmp_path / name}: no usable contrast")
    labels, errors = _read(tmp_path / "zeros.nii.gz")
    assert labels == []
    assert [e.split(": ")[0] for e in errors] == [f"{tmp_path / 'zeros.nii.gz'} slice {k}" for k in range(3)]
    assert all("no usable contrast" in e for e in errors)


def test_a_nearly_blank_model_input_is_refused(tmp_path):
    path = tmp_path / "strip.png"
    Image.fromarray(_strip()).save(path)
    labels, errors = _read(path, max_side=20000)  # past the size limit, to reach the contrast check
    assert labels == [] and len(errors) == 1
    assert errors[0].startswith(f"{path}: no usable contrast after windowing and cropping")
    # With the default limits it never gets that far: refused from its header.
    with pytest.raises(InputError, match="exceeds the limit of 4096 pixels a side"):
        _read(path)


def test_a_volume_with_unusable_slices_keeps_its_usable_ones(tmp_path):
    slices = [_body(seed=k) for k in range(6)]
    slices[1] = np.full_like(slices[1], np.inf)
    slices[2] = np.full_like(slices[2], np.nan)
    slices[3] = np.full_like(slices[3], -np.inf)
    slices[4] = np.zeros_like(slices[4])
    path = tmp_path / "mixed.nii.gz"
    _save_nifti(path, slices)
    labels, errors = _read(path)
    assert labels == [f"{path} slice 0", f"{path} slice 5"]
    assert errors[:3] == [f"{path} slice {k}: no finite pixel values (all NaN or infinite)" for k in (1, 2, 3)]
    assert errors[3].startswith(f"{path} slice 4: no usable contrast")
    # The usable slices are preprocessed exactly as on their own.
    alone = tmp_path / "alone.nii.gz"
    _save_nifti(alone, [slices[0], slices[5]])
    kept = user_inputs.iter_slices(path, path, tmp_path, image_size=SIZE, slice_index=None,
                                   on_slice_error=lambda error: None)
    by_itself = user_inputs.load_slices(alone, alone, tmp_path, image_size=SIZE, slice_index=None)
    np.testing.assert_array_equal(np.stack([s.image for s in kept]), np.stack([s.image for s in by_itself]))
    # Asked for one slice only, only that one is judged; without on_slice_error the refusal is raised.
    assert _read_one(path, 5) == [f"{path} slice 5"]
    with pytest.raises(InputError, match=r"mixed\.nii\.gz slice 2: no finite pixel values"):
        _read_one(path, 2)


def _read_one(path, index):
    return [s.label for s in user_inputs.load_slices(path, path, path.parent, image_size=SIZE, slice_index=index)]
