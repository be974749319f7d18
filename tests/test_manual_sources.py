"""Scanning, CSV reading, near-duplicate grouping and group-aware splitting shared by the hand-filled sources."""
import collections
import pathlib

import cv2
import numpy as np
import pytest
import scipy.fft

from asemble_jax.data import manual_sources as ms
from asemble_jax.data.build_log import SkippedFiles, relative
from asemble_jax.errors import InputError
from asemble_jax.data.near_duplicates import (DEFAULT_THRESHOLD, group_near_duplicates, hamming_distances,
                                              perceptual_hash)


def smooth_image(seed: int, side: int = 128) -> np.ndarray:
    """uint8 image with structure at every scale down to ~side/16: what a pHash sees of a real slice."""
    rng = np.random.default_rng(seed)
    field = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), side / 16)
    return np.rint(255 * (field - field.min()) / np.ptp(field)).astype(np.uint8)


def write_png(path: pathlib.Path, image: np.ndarray) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


# ------------------------------------------------------------------------------------------------ aliases

@pytest.mark.parametrize("written, expected", [
    ("AS", "AS"), ("as", "AS"), ("AS diagnosis", "AS"), ("AS_Diagnosis", "AS"), ("  Ankylosing-Spondylitis ", "AS"),
    ("patient", "AS"), ("Normal", "healthy"), ("HEALTHY", "healthy"), ("healthy_controls", "healthy"),
    ("Control", "healthy"), ("maybe", None), ("ASdiagnosis", None),
])
def test_default_class_aliases(written, expected):
    assert ms.class_aliases().get(written) == expected


@pytest.mark.parametrize("written, expected", [
    ("Axial", "axial"), ("AX", "axial"), ("transverse", "axial"), ("Coronal", "coronal"), ("semi-coronal", "coronal"),
    ("oblique_coronal", "coronal"), ("sagittal", None),
])
def test_default_plane_aliases(written, expected):
    assert ms.plane_aliases().get(written) == expected


def test_class_aliases_are_configurable_and_checked():
    custom = ms.class_aliases({"AS": ("hasta grubu",), "healthy": ("kontrol grubu",)})
    assert custom.get("Hasta_Grubu") == "AS" and custom.get("kontrol-grubu") == "healthy"
    assert custom.get("Normal") is None  # a custom table replaces the default one
    with pytest.raises(ValueError, match="both"):
        ms.class_aliases({"AS": ("x",), "healthy": ("X",)})
    with pytest.raises(ValueError, match="not one of"):
        ms.class_aliases({"sick": ("x",)})


# ------------------------------------------------------------------------------------------ folder scans

def test_scan_reads_plane_class_and_patient_from_folders_and_reports_the_rest(tmp_path):
    image = smooth_image(0)
    used = {
        "Axial/AS diagnosis/patient_01/a.png": ("AS", "AS/patient_01"),
        "Axial/AS diagnosis/b.png": ("AS", None),
        "Normal/transverse/c.png": ("healthy", None),  # class above plane is accepted too
        "Axial/Normal/listed.png": ("healthy", "P9"),  # patients.csv wins over folders
    }
    for name in used:
        write_png(tmp_path / name, image)
    write_png(tmp_path / "Coronal/AS/d.png", image)
    write_png(tmp_path / "loose.png", image)
    write_png(tmp_path / "Axial/Normal/AS/both.png", image)
    (tmp_path / "Axial/AS diagnosis/readme.txt").write_text("x")
    (tmp_path / "Axial/Normal/I0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)  # DICOM without a suffix
    inventory = ms.scan_class_folders(tmp_path, "axial", classes=ms.class_aliases(), planes=ms.plane_aliases(),
                                      patient_ids={"Axial/Normal/listed.png": "P9"})

    found = {relative(i.path, tmp_path): (i.label, i.patient_id) for i in inventory.images}
    assert found == {**used, "Axial/Normal/I0001": ("healthy", None)}
    assert all(i.plane == "axial" for i in inventory.images)
    assert inventory.other_plane_images == 1
    reasons = {e["path"]: e["reason"] for e in inventory.ignored}
    assert set(reasons) == {"loose.png", "Axial/Normal/AS/both.png", "Axial/AS diagnosis/readme.txt"}
    assert "plane" in reasons["loose.png"] and "two classes" in reasons["Axial/Normal/AS/both.png"]
    assert "not an image" in reasons["Axial/AS diagnosis/readme.txt"]
    assert inventory.counts() == {"AS": 2, "healthy": 3}


# ------------------------------------------------------------------------------------------------- CSV

def test_csv_accepts_bom_semicolons_and_header_synonyms(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_bytes("\ufeffFile Name;Case ID;Plane;Diagnosis\r\nimg/a.png;7;axial;AS\r\n;;;\r\n".encode("utf-8"))
    rows = ms.read_csv_rows(table, ("file", "case_id", "plane", "label"))
    assert [(r.line, dict(r.values)) for r in rows] == [
        (2, {"file": "img/a.png", "case_id": "7", "plane": "axial", "label": "AS"})]


def test_csv_missing_columns_name_what_is_missing_and_what_was_found(tmp_path):
    table = tmp_path / "cases.csv"
    table.write_text("file,case,url\na.png,1,http://x\n")
    with pytest.raises(InputError) as caught:
        ms.read_csv_rows(table, ("file", "case_id", "plane", "author"))
    message = str(caught.value)
    assert message.startswith(str(table)) and "\n" not in message
    assert "missing column(s) plane, author" in message and "found columns file, case_id, url" in message


@pytest.mark.parametrize("content, problem", [(None, "not found"), (b"", "empty"), (b"\xff\xfe\x00bad", "UTF-8")])
def test_csv_unusable_files_are_one_line_errors(tmp_path, content, problem):
    table = tmp_path / "labels.csv"
    if content is not None:
        table.write_bytes(content)
    with pytest.raises(InputError, match=problem) as caught:
        ms.read_csv_rows(table, ("file",))
    assert caught.value.path == str(table)


def test_table_rows_with_problems_are_skipped_with_their_line(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png", "unlisted.png"):
        write_png(tmp_path / name, smooth_image(1))
    (tmp_path / "labels.csv").write_text(
        "file,case_id,plane,label\n"
        "a.png,1,axial,AS\n"
        "a.png,1,axial,AS\n"           # listed twice
        "b.png,,axial,AS\n"            # no case id
        "c.png,3,sagittal,AS\n"        # unknown plane
        "missing.png,4,axial,AS\n"     # no such file
        "../outside.png,5,axial,AS\n"  # outside the manual_dir
        "d.png,6,coronal,healthy\n")
    root = tmp_path
    skipped = SkippedFiles()
    table = ms.read_table_for_plane(root, "labels.csv", ("case_id", "label"), "axial", layout="L", skipped=skipped)
    assert [(row.line, path.name) for row, path in table.rows] == [(2, "a.png")]
    assert table.other_plane_rows == 1
    assert table.unlisted_images == ["unlisted.png"]
    problems = {entry["path"]: entry["problem"] for entry in skipped.as_metadata()}
    assert problems.keys() == {"a.png", "b.png", "c.png", "missing.png", "../outside.png"}
    assert "line 3" in problems["a.png"] and "again" in problems["a.png"]
    assert "line 4" in problems["b.png"] and "case_id" in problems["b.png"]
    assert "sagittal" in problems["c.png"]
    assert "not found" in problems["missing.png"] and "outside" in problems["../outside.png"]
    with pytest.raises(InputError, match="line 3"):
        ms.read_table_for_plane(root, "labels.csv", ("case_id", "label"), "axial", layout="L",
                                skipped=SkippedFiles(strict=True))


def test_a_stray_quote_costs_its_own_line_not_the_rows_after_it(tmp_path):
    """Issue 18.9: one '"' left open used to swallow every following row into one value."""
    names = [f"{letter}.png" for letter in "abcdef"]
    for name in names:
        write_png(tmp_path / name, smooth_image(1))
    (tmp_path / "labels.csv").write_text(
        "file,case_id,plane,label\n"
        "a.png,1,axial,AS\n"
        'b.png,2,axial,"AS\n'          # stray quote, never closed
        "c.png,3,axial,AS\n"
        "d.png,4,axial,healthy\n"
        "e.png,5,axial,healthy\n"
        "f.png,6,axial,AS\n")
    skipped = SkippedFiles()
    table = ms.read_table_for_plane(tmp_path, "labels.csv", ("case_id", "label"), "axial", layout="L",
                                    skipped=skipped)
    assert [path.name for _, path in table.rows] == ["a.png", "c.png", "d.png", "e.png", "f.png"]
    assert [row.line for row, _ in table.rows] == [2, 4, 5, 6, 7]
    (entry,) = skipped.as_metadata()
    assert entry["path"] == "labels.csv" and entry["problem"].startswith("line 3: ") and "quote" in entry["problem"]
    assert table.unlisted_images == ["b.png"]
    with pytest.raises(InputError, match="^labels.csv: line 3: "):
        ms.read_table_for_plane(tmp_path, "labels.csv", ("case_id", "label"), "axial", layout="L",
                                skipped=SkippedFiles(strict=True))


def test_rows_that_span_lines_or_miscount_their_values_are_reported_by_line(tmp_path):
    table = tmp_path / "cases.csv"
    table.write_text(
        "file,case_id,author\n"
        "a.png,1,Dr A\n"
        'b.png,2,"Dr B\nand C"\n'       # a quoted value over two lines: both lines reported, neither guessed
        "c.png,3\n"                      # a value missing
        "d.png,4,Smith, John\n"          # an unquoted separator: one value too many
        'e.png,5,"Dr "E\n'               # text after a closing quote
        "f.png,6,Dr F,,\n"               # surplus empty values are harmless
        'g.png,7,"Dr G, PhD"\n'
        'h.png,8, "Dr ""H"""\n')         # Excel's escaped quote, after a space
    skipped = SkippedFiles()
    rows = ms.read_csv_rows(table, ("file", "case_id", "author"), skipped)
    assert [(r.line, r.values["file"], r.values["author"]) for r in rows] == [
        (2, "a.png", "Dr A"), (8, "f.png", "Dr F"), (9, "g.png", "Dr G, PhD"), (10, "h.png", 'Dr "H"')]
    problems = [e["problem"] for e in skipped.entries]
    assert {e["path"] for e in skipped.entries} == {"cases.csv"}
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert "quote" in problems[0] and "span lines" in problems[0]
    assert "2 values but the header has 3" in problems[2] and "4 values but the header has 3" in problems[3]
    assert "',' expected after '\"'" in problems[4]
    with pytest.raises(InputError, match="^cases.csv: line 3: "):
        ms.read_csv_rows(table, ("file", "case_id", "author"))


def write_patients_table(root: pathlib.Path, rows: str) -> None:
    for name in ("Axial/AS/a.png", "Axial/AS/b.png", "Axial/AS/c.png", "Axial/AS/d.png", "Axial/AS/e.png"):
        write_png(root / name, smooth_image(2))
    (root / ms.PATIENTS_CSV).write_text("file,patient_id\n" + rows)


def test_patients_csv_conflicts_empty_ids_and_missing_files_are_reported_and_never_guessed(tmp_path):
    """Issue 18.8 and 18.11: a file with two patient ids used to take the last one (a patient could then span two
    splits), a missing file went unnoticed, and an empty id refused the whole build."""
    write_patients_table(tmp_path, "Axial/AS/a.png,P1\n"
                                   "Axial/AS/b.png,P2\n"
                                   "Axial/AS/a.png,P3\n"      # conflicting id
                                   "Axial/AS/c.png,P4\n"
                                   "./Axial/AS/c.png,P4\n"    # same file, same id: fine
                                   "Axial/AS/d.png,\n"        # no id
                                   "Axial/AS/gone.png,P5\n"   # not in the folder
                                   "Axial/AS/e.png,P6,extra\n")
    skipped = SkippedFiles()
    patients = ms.read_patient_ids(tmp_path, skipped)
    assert patients.ids == {"Axial/AS/b.png": "P2", "Axial/AS/c.png": "P4"}
    assert patients.left_out == {"Axial/AS/a.png", "Axial/AS/d.png"}
    problems = {e["path"]: e["problem"] for e in skipped.as_metadata()}
    assert problems.keys() == {"Axial/AS/a.png", "Axial/AS/d.png", "Axial/AS/gone.png", ms.PATIENTS_CSV}
    assert "lines 2 and 4" in problems["Axial/AS/a.png"] and "P1, P3" in problems["Axial/AS/a.png"]
    assert "left out" in problems["Axial/AS/a.png"]
    assert "line 7" in problems["Axial/AS/d.png"] and "no patient_id" in problems["Axial/AS/d.png"]
    assert "line 8" in problems["Axial/AS/gone.png"] and "not found" in problems["Axial/AS/gone.png"]
    assert problems[ms.PATIENTS_CSV].startswith("line 9: ")

    inventory = ms.scan_class_folders(tmp_path, "axial", classes=ms.class_aliases(), planes=ms.plane_aliases(),
                                      patient_ids=patients.ids, exclude=patients.left_out)
    found = {relative(i.path, tmp_path): i.patient_id for i in inventory.images}
    assert found == {"Axial/AS/b.png": "P2", "Axial/AS/c.png": "P4", "Axial/AS/e.png": None}


@pytest.mark.parametrize("rows, problem", [
    ("Axial/AS/a.png,P1\nAxial/AS/a.png,P2\n", "different patient ids"),
    ("Axial/AS/a.png,\n", "no patient_id"),
    ("Axial/AS/gone.png,P1\n", "not found"),
])
def test_patients_csv_problems_stop_a_strict_build(tmp_path, rows, problem):
    write_patients_table(tmp_path, rows)
    with pytest.raises(InputError, match=problem):
        ms.read_patient_ids(tmp_path, SkippedFiles(strict=True))


def test_missing_table_is_a_layout_error_listing_what_is_there(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.xlsx").write_bytes(b"")
    with pytest.raises(InputError) as caught:
        ms.read_table_for_plane(tmp_path, "labels.csv", ("case_id",), "axial", layout="<the layout>",
                                skipped=SkippedFiles())
    message = str(caught.value)
    assert "expected <the layout>" in message and "no labels.csv" in message
    assert "top-level entries: images/, labels.xlsx" in message


# ---------------------------------------------------------------------------------------- near-duplicates

def test_perceptual_hash_is_the_dct_phash():
    image = smooth_image(3, side=100)
    small = cv2.resize(image.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = scipy.fft.dctn(small, norm="ortho")[:8, :8]
    expected = sum(1 << (63 - k) for k, bit in enumerate((low > np.median(low)).ravel()) if bit)
    assert perceptual_hash(image) == expected


def test_resized_and_noised_copies_group_together_and_different_images_do_not():
    rng = np.random.default_rng(0)
    originals = [smooth_image(seed) for seed in range(6)]
    copies = []
    for original in originals[:3]:
        noisy = np.clip(original + rng.normal(0, 6, original.shape), 0, 255).astype(np.uint8)
        half = cv2.resize(original, (64, 64), interpolation=cv2.INTER_AREA)
        jpeg = cv2.imdecode(cv2.imencode(".jpg", original, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_GRAYSCALE)
        copies.append([noisy, half, jpeg])
    images = originals + [c for group in copies for c in group]
    groups = group_near_duplicates([perceptual_hash(i) for i in images])
    for k in range(3):
        copy_groups = {groups[len(originals) + 3 * k + j] for j in range(3)}
        assert copy_groups == {groups[k]}, f"copies of image {k} left its group"
    assert len(set(groups[:6])) == 6, "different images were grouped"


def test_groups_are_transitive_and_follow_links():
    # 0 and 2 are 8 bits apart, each 4 from 1: one chain at threshold 4.
    hashes = [0, 0xF, 0xFF, 0xFFFF_0000_0000_0000, 0xF0F0_0000_0000_0000]
    assert group_near_duplicates(hashes, threshold=4) == [0, 0, 0, 1, 2]
    assert group_near_duplicates(hashes, threshold=4, linked_by=[None, None, None, "p", "p"]) == [0, 0, 0, 1, 1]
    # A second view joins what the first keeps apart.
    assert group_near_duplicates(hashes, [1, 2, 3, 4, 4], threshold=0) == [0, 1, 2, 3, 3]


# ------------------------------------------------------------------------------------------------ splits

def test_split_keeps_groups_whole_stratifies_and_is_deterministic():
    rng = np.random.default_rng(1)
    groups, labels = [], []
    for group in range(200):
        label = "AS" if group % 3 else "healthy"
        for _ in range(rng.integers(1, 5)):
            groups.append(group)
            labels.append(label)
    splits = ms.assign_splits(groups, labels, seed=3)

    split_of = collections.defaultdict(set)
    for group, split in zip(groups, splits):
        split_of[group].add(split)
    assert all(len(s) == 1 for s in split_of.values()), "a group was cut across splits"
    for label in ("AS", "healthy"):
        in_class = [s for s, lab in zip(splits, labels) if lab == label]
        for name, fraction in ms.DEFAULT_SPLIT_FRACTIONS:
            assert abs(in_class.count(name) / len(in_class) - fraction) < 0.03, (label, name)
    assert ms.assign_splits(groups, labels, seed=3) == splits
    assert ms.assign_splits(groups, labels, seed=4) != splits


def test_split_fractions_are_checked():
    with pytest.raises(ValueError):
        ms.assign_splits([0], ["AS"], fractions=(("train", 0.5), ("train", 0.5)))


# ------------------------------------------------------------------------------ threshold on real MRI

def test_threshold_joins_copies_and_separates_patients_of_real_mri(shared_data):
    """The reason for DEFAULT_THRESHOLD: on real SIJ MRI, resized and noised copies of a slice stay within it in
    one of the builders' two views, while slices of different patients are beyond it in both."""
    from asemble_jax.data.preprocess import PreprocessConfig, preprocess
    from asemble_jax.data.readers import read_nifti_volume

    scans = sorted((shared_data / "bone_mri").glob("data/images_study/STIR/*/*_STIR.nii.gz"))
    if len(scans) < 2:
        pytest.skip("needs at least two bone_mri scans")
    rng = np.random.default_rng(0)

    def views(raw):
        return (perceptual_hash(preprocess(raw).image),
                ms.uncropped_hash(raw, PreprocessConfig().window_percentiles))

    per_scan = []
    for scan in scans[:4]:
        volume = read_nifti_volume(scan)
        per_scan.append([views(s) for s in volume[::3]])
        for raw in volume[2::6]:
            spread = np.percentile(raw, 99) - np.percentile(raw, 1)
            noisy = raw + rng.normal(0, 0.05 * spread, raw.shape).astype(np.float32)
            half = cv2.resize(raw, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
            for copy in (noisy, half):
                distance = min(bin(a ^ b).count("1") for a, b in zip(views(raw), views(copy)))
                assert distance <= DEFAULT_THRESHOLD
    for i in range(len(per_scan)):
        for j in range(i + 1, len(per_scan)):
            closest = min(hamming_distances([v[k] for v in per_scan[i]], [v[k] for v in per_scan[j]]).min()
                          for k in range(2))
            assert closest > DEFAULT_THRESHOLD, (scans[i].name, scans[j].name)


def test_frames_of_one_file_are_examples_of_one_group(tmp_path):
    from PIL import Image

    from asemble_jax.data.preprocess import PreprocessConfig

    path = tmp_path / "stack.tif"
    pages = [Image.fromarray(smooth_image(seed)) for seed in (10, 11)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    write_png(tmp_path / "other.png", smooth_image(12))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    images = [ms.SourceImage(path=tmp_path / name, label="AS", plane="axial")
              for name in ("stack.tif", "other.png", "broken.png")]
    skipped = SkippedFiles()
    prepared = ms.prepare_images(images, tmp_path, PreprocessConfig(), skipped)

    assert [p.key for p in prepared] == ["stack.tif#0", "stack.tif#1", "other.png"]
    assert [e["path"] for e in skipped.as_metadata()] == ["broken.png"]
    groups = ms.split_groups(prepared, threshold=DEFAULT_THRESHOLD)
    assert groups[0] == groups[1] != groups[2]
    assert ms.fill_unknown_patient_ids(prepared, groups)[0].source.patient_id == f"near-duplicate-group-{groups[0]}"
