"""asas builder on the made-up dummy_data/ (no TensorFlow): a test split and nothing else, labels and planes read
from labels.csv through their aliases, the library credited on every example, bad rows skipped and reported."""
import csv
import pathlib
import shutil

import pytest

from asemble_datasets.asas import make_dummy_data as dummy
from asemble_jax.data import examples, manual_sources
from asemble_jax.data.builders import build
from asemble_jax.errors import InputError

DUMMY_DATA = pathlib.Path(__file__).resolve().parent / "dummy_data"


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def expected_rows(plane: str) -> dict[str, str]:
    """case id -> class of the usable rows of one plane, read from labels.csv and the folder directly."""
    with open(DUMMY_DATA / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    written = {"AS": "AS", "ankylosing spondylitis": "AS", "Normal": "healthy", "healthy": "healthy"}
    return {row["Case ID"]: written[row["Diagnosis"]] for row in rows
            if row["Plane"].lower().replace("semi-", "") in (plane, plane[:2])
            and (DUMMY_DATA / row["File"]).exists() and row["Diagnosis"] in written}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return {plane: build(f"asas/{plane}", data_dir=data_dir, manual_dir=DUMMY_DATA) for plane in examples.PLANES}


@pytest.mark.parametrize("plane", examples.PLANES)
def test_only_a_test_split_with_labels_from_the_table(built, plane):
    builder = built[plane]
    assert list(builder.info.splits) == ["test"]
    source = builder.as_data_source("test")
    records = [source[i] for i in range(len(source))]
    names = builder.info.features["label"].names
    assert {text(r["patient_id"]): names[r["label"]] for r in records} == expected_rows(plane)
    assert len(records) == len(expected_rows(plane))
    for record in records:
        assert text(record["source"]) == "asas" and text(record["plane"]) == plane
        assert "ASAS Online Case Library" in text(record["attribution"])
        assert text(record["patient_id"]) in text(record["attribution"])


def test_bad_rows_and_unlisted_images_are_reported(built):
    metadata = built["axial"].info.metadata
    skipped = {e["path"]: e["problem"] for e in metadata["skipped_files"]}
    assert set(skipped) == set(dummy.BAD_ROWS)
    assert "not found" in skipped["images/case_105_ax.png"] and "maybe" in skipped["images/case_106_ax.png"]
    assert metadata["unlisted_images"] == [dummy.UNLISTED]


def test_asas_configs_have_no_split_settings():
    # asas has no split configuration at all: nothing a user sets can move its images into training.
    from asemble_datasets.asas.asas_dataset_builder import Builder
    assert all(not isinstance(c, manual_sources.SplitSourceConfig) for c in Builder.BUILDER_CONFIGS)


def test_missing_labels_csv_states_the_layout(tmp_path):
    manual = tmp_path / "manual"
    (manual / "images").mkdir(parents=True)
    (manual / "images" / "a.png").write_bytes((DUMMY_DATA / "images" / "case_101_ax.png").read_bytes())
    with pytest.raises(InputError) as caught:
        build("asas/axial", data_dir=tmp_path / "tfds", manual_dir=manual)
    message = str(caught.value)
    assert "labels.csv with columns file, case_id, plane, label" in message and "found no labels.csv" in message


def test_a_stray_quote_in_labels_csv_costs_one_row(tmp_path):
    """Issue 18.9: a '"' left open on one line used to swallow the rows after it, and the build succeeded with a
    fraction of the images."""
    manual = tmp_path / "manual"
    shutil.copytree(DUMMY_DATA, manual)
    lines = (manual / "labels.csv").read_text().splitlines()
    (broken,) = [n for n, line in enumerate(lines) if line.startswith("images/case_101_cor.png,")]
    lines[broken] = lines[broken].replace(",coronal,", ',"coronal,')
    (manual / "labels.csv").write_text("\n".join(lines) + "\n")
    builder = build("asas/axial", data_dir=tmp_path / "tfds", manual_dir=manual)
    source = builder.as_data_source("test")
    assert {text(source[i]["patient_id"]) for i in range(len(source))} == set(expected_rows("axial"))
    skipped = {e["path"]: e["problem"] for e in builder.info.metadata["skipped_files"]}
    assert skipped["labels.csv"].startswith(f"line {broken + 1}: ") and "quote" in skipped["labels.csv"]
    assert "images/case_101_cor.png" in builder.info.metadata["unlisted_images"]
    with pytest.raises(InputError, match=f"labels.csv: line {broken + 1}: "):
        build("asas/axial", data_dir=tmp_path / "strict", manual_dir=manual, strict=True)
