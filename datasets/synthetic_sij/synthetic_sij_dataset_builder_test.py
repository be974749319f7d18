"""Builds a tiny synthetic_sij into a temporary folder and reads it back, without TensorFlow.

tfds.testing.DatasetBuilderTestCase derives from tf.test.TestCase and so needs TensorFlow, which the default
install does not have: this is a plain pytest test of the same things.
"""
import collections

import numpy as np
import pytest

from asemble_datasets.synthetic_sij.synthetic_sij_dataset_builder import SyntheticSij, SyntheticSijConfig
from asemble_jax.data import examples, phantom

SLICES = 3
PATIENTS = {"train": 4, "val": 2, "test": 2}


def _build(data_dir, seed):
    config = SyntheticSijConfig(
        name="tiny", phantom=phantom.PhantomConfig(size=128, slices_per_patient=SLICES), seed=seed,
        train_patients=PATIENTS["train"], val_patients=PATIENTS["val"], test_patients=PATIENTS["test"])
    builder = SyntheticSij(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return {split: [source[i] for i in range(len(source))]
            for split, source in ((s, builder.as_data_source(split=s)) for s in PATIENTS)}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return {name: _build(tmp_path_factory.mktemp(name), seed)
            for name, seed in (("first", 1), ("again", 1), ("other_seed", 2))}


def _by_key(split_examples):
    return sorted(split_examples, key=lambda e: (e["patient_id"], e["slice_index"]))


def test_examples_have_the_project_schema(builds):
    for split, split_examples in builds["first"].items():
        assert len(split_examples) == PATIENTS[split] * SLICES
        for example in split_examples:
            image, mask = examples.decode_png(example["image"]), examples.decode_png(example["mask"])
            assert image.shape == mask.shape == (256, 256, 1) and image.dtype == mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1}
            assert example["label"] in (0, 1)
            assert example["source"] == b"synthetic_sij" and example["plane"] == b"coronal"
            assert example["attribution"] == b""
            assert example["patient_id"].startswith(b"phantom-tiny-")
            assert 0 <= example["slice_index"] < SLICES
            assert example["difficulty"] == pytest.approx(0.5)


def test_masks_are_empty_for_healthy_patients_only(builds):
    lesion_slices = collections.Counter()
    for split_examples in builds["first"].values():
        for example in split_examples:
            has_lesion = examples.decode_png(example["mask"]).any()
            if example["label"] == 0:
                assert not has_lesion
            lesion_slices[example["patient_id"]] += int(has_lesion)
    as_patients = {e["patient_id"] for s in builds["first"].values() for e in s if e["label"] == 1}
    assert as_patients and all(lesion_slices[p] > 0 for p in as_patients)


def test_no_patient_in_two_splits_and_classes_balanced(builds):
    patients = {split: {e["patient_id"] for e in split_examples} for split, split_examples in builds["first"].items()}
    for split, ids in patients.items():
        assert len(ids) == PATIENTS[split]
        labels = collections.Counter(e["label"] for e in builds["first"][split])
        assert labels[0] == labels[1]
    splits = list(patients)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not patients[a] & patients[b], f"{a} and {b} share patients"
    for split_examples in builds["first"].values():
        labels_of = collections.defaultdict(set)
        for example in split_examples:
            labels_of[example["patient_id"]].add(example["label"])
        assert all(len(labels) == 1 for labels in labels_of.values())  # the label is the patient's


def test_same_seed_same_bytes_and_other_seed_other_bytes(builds):
    for split in PATIENTS:
        first, again, other = (_by_key(builds[name][split]) for name in ("first", "again", "other_seed"))
        assert [(e["image"], e["mask"]) for e in first] == [(e["image"], e["mask"]) for e in again]
        assert all(a["image"] != b["image"] for a, b in zip(first, other))


def test_predefined_configs():
    configs = {c.name: c for c in SyntheticSij.BUILDER_CONFIGS}
    assert set(configs) == {"axial", "coronal", "shifted", "shifted_axial"}
    assert configs["axial"].phantom.plane == "axial" and configs["coronal"].phantom.plane == "coronal"
    for name in ("shifted", "shifted_axial"):
        assert list(configs[name].patients()) == ["test"]  # an external stand-in is never trained on
        assert configs[name].phantom.contrast != configs["coronal"].phantom.contrast
        assert configs[name].phantom.fov != configs["coronal"].phantom.fov
    for name in ("axial", "coronal"):
        ranges = configs[name].patients()
        assert list(ranges) == ["train", "val", "test"]
        assert sum(len(r) * configs[name].phantom.slices_per_patient for r in ranges.values()) == 1500
