"""The samples figure: which examples it shows, that it writes a real PNG, and what it says when nothing is built."""
import cv2
import pytest

from asemble_datasets.synthetic_sij.synthetic_sij_dataset_builder import SyntheticSij, SyntheticSijConfig
from asemble_jax.data import examples, phantom
from asemble_jax.data.figures import pick_samples, samples_figure, write_samples_figure
from asemble_jax.atomic_io import save_figure
from asemble_jax.errors import InputError

SLICES = 3


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    built = {}
    for plane in examples.PLANES:
        config = SyntheticSijConfig(name=f"figure_{plane}", phantom=phantom.PhantomConfig(
            plane=plane, size=128, slices_per_patient=SLICES), train_patients=0, val_patients=0, test_patients=6)
        builder = SyntheticSij(config=config, data_dir=str(tmp_path_factory.mktemp(plane)), file_format="array_record")
        builder.download_and_prepare(file_format="array_record")
        built[plane] = builder.as_data_source(split="test")
    return built


def test_picks_middle_slices_of_distinct_patients_with_visible_lesions(sources):
    picked = pick_samples(sources["coronal"], per_class=2)
    for label, chosen in picked.items():
        assert len(chosen) == 2
        assert len({e["patient_id"] for e in chosen}) == 2
        assert all(e["label"] == label and e["slice_index"] == SLICES // 2 for e in chosen)
    assert all(examples.decode_png(e["mask"]).any() for e in picked[1])
    assert not any(examples.decode_png(e["mask"]).any() for e in picked[0])


def test_figure_has_a_row_per_plane_and_class_and_outlines_lesions(sources, tmp_path):
    figure = samples_figure(sources, per_class=2)
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 2 * len(examples.PLANES) * 2
    outlined = [ax for ax in shown if ax.collections]  # contour sets are the only collections drawn
    assert len(outlined) == len(examples.PLANES) * 2
    save_figure(figure, tmp_path / "grid.png")
    image = cv2.imread(str(tmp_path / "grid.png"))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 200
    assert (image[..., 2].astype(int) - image[..., 1] > 100).any()  # red outlines made it into the pixels


def test_unbuilt_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="build_dataset.py --dataset=synthetic_sij/axial"):
        write_samples_figure(tmp_path / "empty", tmp_path / "samples.png")
    assert not (tmp_path / "samples.png").exists()
