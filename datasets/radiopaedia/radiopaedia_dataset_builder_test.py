"""radiopaedia builder on the made-up dummy_data/ (no TensorFlow): every example healthy and credited with its own
case's author, URL and licence; no case in two splits; a row without an author skipped."""
import collections
import csv
import pathlib

import pytest

from asemble_datasets.radiopaedia import make_dummy_data as dummy
from asemble_jax.data import examples
from asemble_jax.data.builders import build

DUMMY_DATA = pathlib.Path(__file__).resolve().parent / "dummy_data"


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def table_rows() -> list[dict[str, str]]:
    with open(DUMMY_DATA / "cases.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    return {plane: build(f"radiopaedia/{plane}", data_dir=data_dir, manual_dir=DUMMY_DATA) for plane in examples.PLANES}


def read_all(builder):
    records = {}
    for split in builder.info.splits:
        source = builder.as_data_source(split)
        records[split] = [source[i] for i in range(len(source))]
    return records


@pytest.mark.parametrize("plane", examples.PLANES)
def test_every_example_is_healthy_and_credits_its_case(built, plane):
    rows = [r for r in table_rows() if r["plane"] == plane and r["author"]]
    records = [r for split in read_all(built[plane]).values() for r in split]
    assert len(records) == len(rows)
    names = built[plane].info.features["label"].names
    credit = {r["case_id"]: r for r in rows}
    for record in records:
        assert names[record["label"]] == "healthy"
        row = credit[text(record["patient_id"])]
        attribution = text(record["attribution"])
        for field in (row["author"], row["url"], row["license"], "Radiopaedia.org"):
            assert field in attribution


@pytest.mark.parametrize("plane", examples.PLANES)
def test_no_case_in_two_splits(built, plane):
    splits_of_case = collections.defaultdict(set)
    for split, records in read_all(built[plane]).items():
        for record in records:
            splits_of_case[text(record["patient_id"])].add(split)
    assert splits_of_case and all(len(s) == 1 for s in splits_of_case.values())


def test_row_without_author_is_skipped_not_built_without_credit(built):
    (no_author,) = [name for name, (_, _, author) in dummy.ROWS.items() if not author]
    skipped = {e["path"]: e["problem"] for e in built["axial"].info.metadata["skipped_files"]}
    assert set(skipped) == {no_author} and "author" in skipped[no_author]
