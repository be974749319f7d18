"""scripts/check_leakage.py on built dummy datasets: silent on clean data, loud on a case planted in two sources,
and the finding rules of asemble_jax/data/leakage.py on hand-made entries."""
import importlib.util
import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from asemble_jax.data import leakage
from asemble_jax.data.builders import build
from asemble_jax.errors import run_main

REPO = pathlib.Path(__file__).resolve().parents[1]
ASAS_DUMMY = REPO / "datasets" / "asas" / "dummy_data"
RADIOPAEDIA_DUMMY = REPO / "datasets" / "radiopaedia" / "dummy_data"


spec = importlib.util.spec_from_file_location("check_leakage", REPO / "scripts" / "check_leakage.py")
check_leakage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_leakage)


def check(argv):
    """The script's exit status, as its command line would return it."""
    return run_main(check_leakage.main, argv)


@pytest.fixture(scope="module")
def asas_data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("clean")
    build("asas/axial", data_dir=data_dir, manual_dir=ASAS_DUMMY)
    return data_dir


def test_clean_sources_pass(asas_data_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    shutil.copytree(asas_data_dir, data_dir)
    build("radiopaedia/axial", data_dir=data_dir, manual_dir=RADIOPAEDIA_DUMMY)
    report_path = tmp_path / "report.json"
    status = check(["--data_dir", str(data_dir), "--datasets", "asas/axial", "radiopaedia/axial",
            "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert status == 0 and report["findings"] == []
    assert sum(report["examples"]["radiopaedia/axial"].values()) > 0
    check(["--data_dir", str(data_dir), "--datasets", "asas/axial", "radiopaedia/axial",
           "--splits", "train", "--json", str(report_path)])
    assert json.loads(report_path.read_text())["examples"] == {
        "radiopaedia/axial": {"train": report["examples"]["radiopaedia/axial"]["train"]}}


def test_case_planted_in_two_sources_is_found(asas_data_dir, tmp_path):
    manual = tmp_path / "radiopaedia"
    shutil.copytree(RADIOPAEDIA_DUMMY, manual)
    # The same ASAS image, saved again at another size and with noise, as a different Radiopaedia case.
    asas_image = cv2.imread(str(ASAS_DUMMY / "images" / "case_102_ax.png"), cv2.IMREAD_GRAYSCALE)
    rng = np.random.default_rng(0)
    copy = cv2.resize(asas_image, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    copy = np.clip(copy + rng.normal(0, 3, copy.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(manual / "normal_sij_3" / "axial.png"), copy)
    data_dir = tmp_path / "tfds"
    shutil.copytree(asas_data_dir, data_dir)
    build("radiopaedia/axial", data_dir=data_dir, manual_dir=manual)

    report_path, markdown_path = tmp_path / "report.json", tmp_path / "report.md"
    argv = ["--data_dir", str(data_dir), "--datasets", "asas/axial", "radiopaedia/axial",
            "--json", str(report_path), "--markdown", str(markdown_path)]
    assert check(argv) == 1
    findings = json.loads(report_path.read_text())["findings"]
    assert len(findings) == 1
    (finding,) = findings
    assert finding["kind"] == "near-duplicate across datasets"
    assert {(finding[s]["dataset"], finding[s]["patient_id"]) for s in ("a", "b")} == {
        ("asas/axial", "102"), ("radiopaedia/axial", "90003")}
    assert "near-duplicate across datasets" in markdown_path.read_text()
    assert check(argv + ["--warn_only"]) == 0


def test_finding_rules():
    Entry = leakage.Entry
    far = 0xFF << 40  # 8 bits from 0
    entries = [
        Entry("a/x", "train", 0, "p1", 0),
        Entry("a/x", "test", 0, "p2", 0b11),           # 2 bits from train #0: across splits
        Entry("a/x", "train", 1, "p3", 0b1),           # 1 bit from train #0, same split: not leakage
        Entry("b/x", "test", 0, "q1", far),
        Entry("b/x", "test", 1, "q2", far | 1 << 63),  # same split as its twin: not leakage
        Entry("c/x", "train", 0, "r1", far | 1),       # near both b/x images, in another dataset
        Entry("a/x", "val", 2, "p3", 0xF << 20),       # far from all, but patient p3 is also in train
    ]
    pairs = {(f["kind"], f["a"]["dataset"], f["a"]["index"], f["b"]["dataset"], f["b"]["index"])
             for f in leakage.near_duplicate_findings(entries, threshold=2)}
    assert pairs == {
        ("near-duplicate across splits", "a/x", 0, "a/x", 0),
        ("near-duplicate across splits", "a/x", 0, "a/x", 1),  # test #0 vs train #1
        ("near-duplicate across datasets", "b/x", 0, "c/x", 0),
        ("near-duplicate across datasets", "b/x", 1, "c/x", 0),
    }
    patients = leakage.shared_patient_findings(entries)
    assert [(f["dataset"], f["patient_id"], f["splits"]) for f in patients] == [("a/x", "p3", ["train", "val"])]


def test_dataset_not_built_is_exit_status_2(tmp_path, capsys):
    assert check(["--data_dir", str(tmp_path), "--datasets", "asas/axial"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "not built" in error and len(error.splitlines()) == 1
