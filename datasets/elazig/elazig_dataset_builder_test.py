"""elazig builder on the made-up dummy_data/ (no TensorFlow): class and plane from folder names, patient and
near-duplicate groups kept whole across splits, skipped and ignored files reported, strict mode, layout errors."""
import collections
import pathlib
import shutil

import numpy as np
import pytest

from asemble_datasets.elazig import make_dummy_data as dummy
from asemble_jax.data import examples, manual_sources
from asemble_jax.data.builders import build
from asemble_jax.errors import InputError

DUMMY_DATA = pathlib.Path(__file__).resolve().parent / "dummy_data"
IMAGE_SUFFIXES = {".png", ".jpg", ".tif"}


def read_all(builder):
    records = {}
    for split in builder.info.splits:
        source = builder.as_data_source(split)
        records[split] = [source[i] for i in range(len(source))]
    return records


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def dummy_images(plane_folder: str) -> list[pathlib.Path]:
    """The readable images of one plane, from the folder itself."""
    return [p for p in (DUMMY_DATA / plane_folder).rglob("*")
            if p.suffix in IMAGE_SUFFIXES and p.name not in {pathlib.Path(d).name for d in dummy.DAMAGED}]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return {plane: build(f"elazig/{plane}", data_dir=data_dir, manual_dir=DUMMY_DATA) for plane in examples.PLANES}


@pytest.mark.parametrize("plane, folder, classes", [
    ("axial", "Axial", {"AS diagnosis": "AS", "Normal": "healthy"}),
    ("coronal", "Coronal", {"AS": "AS", "healthy_controls": "healthy"}),
])
def test_every_readable_image_is_one_example_labelled_by_its_folder(built, plane, folder, classes):
    expected = collections.Counter(classes[p.relative_to(DUMMY_DATA / folder).parts[0]] for p in dummy_images(folder))
    records = [r for split in read_all(built[plane]).values() for r in split]
    names = built[plane].info.features["label"].names
    assert collections.Counter(names[r["label"]] for r in records) == expected
    assert {text(r["plane"]) for r in records} == {plane}
    assert {text(r["source"]) for r in records} == {"elazig"}
    image = examples.decode_png(records[0]["image"])
    assert image.shape == (256, 256, 1) and image.dtype == np.uint8


@pytest.mark.parametrize("plane", examples.PLANES)
def test_no_patient_or_group_in_two_splits(built, plane):
    patients = {split: {text(r["patient_id"]) for r in records} for split, records in read_all(built[plane]).items()}
    names = sorted(patients)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not patients[a] & patients[b], (a, b)
    files = built[plane].info.metadata["files"]
    split_of_group = collections.defaultdict(set)
    for entry in files:
        split_of_group[entry["group"]].add(entry["split"])
    assert all(len(s) == 1 for s in split_of_group.values())


def test_copy_joins_its_original_and_distinct_images_stay_apart(built):
    files = {entry["file"]: entry for entry in built["axial"].info.metadata["files"]}
    (copy, original), = dummy.COPIES.items()
    assert files[copy]["group"] == files[original]["group"]
    assert files[copy]["split"] == files[original]["split"]
    # Every other image is its own group, except the slices that share a patient folder.
    patient_folders = {str(pathlib.PurePath(f).parent) for f in files if "patient_" in f}
    loose = [f for f in files if "patient_" not in f and f != copy]
    assert built["axial"].info.metadata["num_groups"] == len(patient_folders) + len(loose)


def test_patient_ids_come_from_patients_csv_then_folders(built):
    axial = {e["file"]: e["patient_id"] for e in built["axial"].info.metadata["files"]}
    coronal = {e["file"]: e["patient_id"] for e in built["coronal"].info.metadata["files"]}
    listed = dict(line.split(",") for line in dummy.PATIENTS_CSV.strip().splitlines()[1:])
    for name, patient in listed.items():
        assert coronal[name] == patient
    assert axial["Axial/AS diagnosis/patient_01/slice_1.png"] == axial["Axial/AS diagnosis/patient_01/slice_2.png"]
    assert axial["Axial/AS diagnosis/patient_01/slice_1.png"] != axial["Axial/AS diagnosis/patient_02/slice_1.png"]
    assert axial["Axial/AS diagnosis/img_004.png"] == ""  # unknown: kept apart only by its group


def test_skipped_and_ignored_files_are_reported(built):
    metadata = built["axial"].info.metadata
    assert [e["path"] for e in metadata["skipped_files"]] == list(dummy.DAMAGED)
    ignored = {e["path"]: e["reason"] for e in metadata["ignored_files"]}
    assert set(ignored) == {dummy.NOT_AN_IMAGE, dummy.OUTSIDE_PLANE_FOLDERS}
    assert metadata["other_plane_images"] == len(dummy_images("Coronal"))
    assert metadata["near_duplicate_threshold_bits"] > 0


def test_strict_mode_stops_at_the_damaged_file(tmp_path):
    with pytest.raises(InputError, match="broken.png"):
        build("elazig/axial", data_dir=tmp_path, manual_dir=DUMMY_DATA, strict=True)


def test_empty_manual_dir_states_the_layout(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(InputError) as caught:
        build("elazig/axial", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")
    assert "expected <manual_dir>/<plane>/" in str(caught.value) and "\n" not in str(caught.value)


def test_wrong_layout_states_what_was_found(tmp_path):
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY_DATA / "Axial" / "Normal", manual / "images")
    with pytest.raises(InputError) as caught:
        build("elazig/axial", data_dir=tmp_path / "tfds", manual_dir=manual)
    message = str(caught.value)
    assert "found 0 axial images" in message and "no plane folder" in message
    assert message.endswith("top-level entries: images/")


def test_a_config_of_ones_own_replaces_the_alias_table(tmp_path):
    config = manual_sources.SplitSourceConfig(name="axial_normal_only", plane="axial",
                                              class_aliases={"AS": (), "healthy": ("normal",)})
    builder = build("elazig", config=config, data_dir=tmp_path, manual_dir=DUMMY_DATA)
    ignored = {e["path"]: e["reason"] for e in builder.info.metadata["ignored_files"]}
    as_folder = [p for p in dummy_images("Axial") if "AS diagnosis" in p.parts]
    assert all(ignored[p.relative_to(DUMMY_DATA).as_posix()] == "no class folder above it" for p in as_folder)
    # Files are counted when found, before reading: the damaged Normal image is among them.
    found_normal = len(dummy_images("Axial")) - len(as_folder) + len(dummy.DAMAGED)
    assert builder.info.metadata["files_per_class"] == {"healthy": found_normal}


def manual_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY_DATA, manual)
    return manual


def test_a_file_with_two_patient_ids_is_left_out_and_missing_files_are_listed(tmp_path):
    """Issue 18.8: a file listed twice with different ids used to take the last one silently, so one patient could
    land in two splits; a row naming a missing file went unreported."""
    manual = manual_copy(tmp_path)
    (manual / "patients.csv").write_text(
        "file,patient_id\n"
        "Coronal/AS/cor_01.png,P7\n"
        "Coronal/AS/cor_02.png,P7\n"
        "Coronal/AS/cor_03.png,P8\n"
        "Coronal/AS/cor_03.png,P9\n"       # one file, two patients
        "Coronal/AS/cor_01.png,P7\n"       # repeated with the same id: fine
        "Coronal/AS/cor_99.png,P10\n")     # not in the folder
    builder = build("elazig/coronal", data_dir=tmp_path / "tfds", manual_dir=manual)
    files = {e["file"]: e for e in builder.info.metadata["files"]}
    assert "Coronal/AS/cor_03.png" not in files
    assert files["Coronal/AS/cor_01.png"]["patient_id"] == files["Coronal/AS/cor_02.png"]["patient_id"] == "P7"
    assert len(files) == len(dummy_images("Coronal")) - 1
    assert sum(len(records) for records in read_all(builder).values()) == len(files)
    skipped = {e["path"]: e["problem"] for e in builder.info.metadata["skipped_files"]}
    assert skipped.keys() == {"Coronal/AS/cor_03.png", "Coronal/AS/cor_99.png"}
    assert "P8, P9" in skipped["Coronal/AS/cor_03.png"] and "left out" in skipped["Coronal/AS/cor_03.png"]
    assert "patients.csv line 7 but not found" in skipped["Coronal/AS/cor_99.png"]
    with pytest.raises(InputError, match="cor_03.png: patients.csv lines 4 and 5 give different patient ids"):
        build("elazig/coronal", data_dir=tmp_path / "strict", manual_dir=manual, strict=True)


def test_an_empty_patient_id_skips_its_file_not_the_build(tmp_path):
    """Issue 18.11: one row without a patient id used to refuse the whole build, even without --strict."""
    manual = manual_copy(tmp_path)
    (manual / "patients.csv").write_text("file,patient_id\nCoronal/AS/cor_01.png,P7\n"
                                         "Coronal/healthy_controls/cor_11.png,\n")
    builder = build("elazig/coronal", data_dir=tmp_path / "tfds", manual_dir=manual)
    files = {e["file"]: e for e in builder.info.metadata["files"]}
    assert "Coronal/healthy_controls/cor_11.png" not in files and files["Coronal/AS/cor_01.png"]["patient_id"] == "P7"
    assert len(files) == len(dummy_images("Coronal")) - 1
    (entry,) = builder.info.metadata["skipped_files"]
    assert entry == {"path": "Coronal/healthy_controls/cor_11.png",
                     "problem": "patients.csv line 3: no patient_id; the file is left out"}
    with pytest.raises(InputError, match="cor_11.png: patients.csv line 3: no patient_id"):
        build("elazig/coronal", data_dir=tmp_path / "strict", manual_dir=manual, strict=True)
