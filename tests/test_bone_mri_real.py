"""The bone_mri builder on the real 7-scan subset in ../shared/data/bone_mri, checked against counts computed here
straight from the NIfTI files with nibabel (vote >= 2 of the 4 readings), not with the builder's code."""
import collections
import csv

import nibabel as nib
import numpy as np
import pytest

from asemble_jax.data import examples
from asemble_jax.data.builders import build

READINGS = ("R11", "R12", "R21", "R22")
UNLABELLED_SCANS = {"2014", "2015"}  # published without inflammation masks


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def read_split(builder, split):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def bone_mri_root(shared_data):
    root = shared_data / "bone_mri"
    if not (root / "data/images_study/STIR").is_dir():
        pytest.skip(f"{root} holds no Bone_MRI STIR scans")
    return root


@pytest.fixture(scope="module")
def scans(bone_mri_root):
    with open(bone_mri_root / "scans.csv", newline="") as f:
        return {row["scan_id"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def lesion_voxels_per_slice(bone_mri_root, scans):
    """scan id -> voxels with >= 2 of 4 votes in each slice vol[:, :, k], for every scan that has the 4 readings."""
    result = {}
    for scan_id in scans:
        paths = [bone_mri_root / f"data/segmentations/Inflammation_manual_segmentation/{r}/{scan_id}_inflammation_{r}.nii.gz"
                 for r in READINGS]
        if all(p.exists() for p in paths):
            votes = np.sum([np.asarray(nib.load(p).dataobj) > 0 for p in paths], axis=0)
            result[scan_id] = (votes >= 2).sum(axis=(0, 1)).tolist()
    return result


@pytest.fixture(scope="module")
def builder(bone_mri_root, tmp_path_factory):
    return build("bone_mri", data_dir=tmp_path_factory.mktemp("tfds"), manual_dir=bone_mri_root)


@pytest.fixture(scope="module")
def labelled_examples(builder):
    return [e for split in ("train", "val", "test") for e in read_split(builder, split)]


def test_labelled_and_positive_slice_counts_match_the_readings(labelled_examples, lesion_voxels_per_slice):
    assert set(lesion_voxels_per_slice) == {"1003", "1007", "1012", "1013", "3002"}
    expected = {(scan_id, k): voxels for scan_id, per_slice in lesion_voxels_per_slice.items()
                for k, voxels in enumerate(per_slice)}
    built = {(text(e["scan_id"]), e["slice_index"]): e for e in labelled_examples}
    assert len(built) == len(labelled_examples) == len(expected)
    assert sum(e["label"] for e in labelled_examples) == sum(v > 0 for v in expected.values())
    assert {key: e["label"] for key, e in built.items()} == {key: int(v > 0) for key, v in expected.items()}
    assert {key: e["lesion_voxels"] for key, e in built.items()} == expected


def test_positive_slices_keep_a_lesion_in_the_stored_mask(labelled_examples):
    positives = [e for e in labelled_examples if e["label"] == 1]
    with_mask = [e for e in positives if examples.decode_png(e["mask"]).any()]
    # Nearest-neighbour downsizing may drop a lesion of a voxel or two, never most of them.
    assert len(with_mask) >= 0.9 * len(positives)
    assert not any(examples.decode_png(e["mask"]).any() for e in labelled_examples if e["label"] == 0)


def test_patients_follow_the_subject_table(builder, labelled_examples, scans):
    for example in labelled_examples + read_split(builder, "unlabeled"):
        row = scans[text(example["scan_id"])]
        assert text(example["patient_id"]).endswith(f"subject{int(row['subject_no']):02d}")
        assert text(example["timepoint"]) == row["timepoint"]


def test_scans_without_readings_are_unlabeled(builder, scans):
    unlabeled = read_split(builder, "unlabeled")
    assert {text(e["scan_id"]) for e in unlabeled} == UNLABELLED_SCANS
    slices = {scan_id: int(scans[scan_id]["shape"].split("x")[2]) for scan_id in UNLABELLED_SCANS}
    assert len(unlabeled) == sum(slices.values())
    assert {e["label"] for e in unlabeled} == {-1}


def test_no_patient_in_two_splits_of_any_scheme(builder):
    patients = {name: {text(e["patient_id"]) for e in read_split(builder, name)} for name in builder.info.splits}
    train, val, test = patients["train"], patients["val"], patients["test"]
    assert not (train & val or train & test or val & test)
    labelled = train | val | test
    assert len(labelled) == 5
    assert not patients["unlabeled"] & labelled
    fold_tests = [name for name in patients if name.startswith("fold") and name.endswith("_test")]
    assert len(fold_tests) == len(labelled)
    for name in fold_tests:
        fold_train = patients[name.replace("_test", "_train")]
        assert len(patients[name]) == 1 and not fold_train & patients[name]
        assert fold_train | patients[name] == labelled
    assert set().union(*(patients[name] for name in fold_tests)) == labelled


def test_build_skipped_nothing(builder):
    assert builder.info.metadata["skipped_files"] == []
    assert collections.Counter(len(s["readings"]) for s in builder.info.metadata["scans"]) == {4: 5, 0: 2}
