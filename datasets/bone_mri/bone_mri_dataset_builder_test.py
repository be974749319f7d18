"""bone_mri builder on the synthetic dummy_data/ (no TensorFlow, no network): labels against a vote computed here
with nibabel, mask/image alignment, patient separation in every split scheme, skipped files, strict mode, layout
errors, and the download path served by a stand-in for GitHub."""
import collections
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from asemble_datasets.bone_mri import bone_mri_dataset_builder as bone_mri
from asemble_datasets.bone_mri import make_dummy_data
from asemble_jax.data import examples
from asemble_jax.data.builders import build
from asemble_jax.errors import InputError

DUMMY_DATA = pathlib.Path(__file__).resolve().parent / "dummy_data"
CHECKSUMS = pathlib.Path(__file__).resolve().parent / "checksums.tsv"
LABELLED_SCANS = {"1003", "1007", "1012"}  # dummy scans with all four readings
UNLABELLED_SCANS = {"1013", "2014"}


def read_split(builder, split):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def expected_slice_votes(root: pathlib.Path, scan_id: str) -> list[int]:
    """Per slice, the number of voxels that >= 2 of the 4 readings mark, straight from the files."""
    masks = [np.asarray(nib.load(p).dataobj) > 0
             for p in sorted(root.glob(f"data/segmentations/Inflammation_manual_segmentation/R*/"
                                       f"{scan_id}_inflammation_R*.nii.gz"))]
    assert len(masks) == 4
    votes = np.sum(masks, axis=0) >= 2
    return [int(votes[:, :, k].sum()) for k in range(votes.shape[2])]


def split_patient_sets(builder):
    return {name: {text(e["patient_id"]) for e in read_split(builder, name)} for name in builder.info.splits}


@pytest.fixture(scope="module")
def dummy_builder(tmp_path_factory):
    return build("bone_mri", data_dir=tmp_path_factory.mktemp("tfds"), manual_dir=DUMMY_DATA)


def test_every_slice_is_one_example_with_the_vote_as_label(dummy_builder):
    labelled = [e for split in ("train", "val", "test") for e in read_split(dummy_builder, split)]
    by_scan = collections.defaultdict(dict)
    for example in labelled:
        by_scan[text(example["scan_id"])][example["slice_index"]] = example
    assert set(by_scan) == LABELLED_SCANS
    for scan_id, slices in by_scan.items():
        voxels = expected_slice_votes(DUMMY_DATA, scan_id)
        assert sorted(slices) == list(range(len(voxels)))
        assert [slices[k]["label"] for k in sorted(slices)] == [int(v > 0) for v in voxels]
        assert [slices[k]["lesion_voxels"] for k in sorted(slices)] == voxels
    # The dummy marks one slice with a single reading: it must not count.
    assert 0 < sum(e["label"] for e in labelled) < len(labelled) - len(LABELLED_SCANS)


def test_stored_mask_lies_on_the_bright_lesion(dummy_builder):
    positives = [e for e in read_split(dummy_builder, "train") if e["label"] == 1]
    assert positives
    for example in positives:
        image = examples.decode_png(example["image"])[..., 0].astype(float)
        mask = examples.decode_png(example["mask"])[..., 0]
        assert set(np.unique(mask)) == {0, 1}
        assert image[mask == 1].mean() > image[mask == 0].mean() + 50


def test_examples_carry_the_schema_values(dummy_builder):
    for example in read_split(dummy_builder, "val") + read_split(dummy_builder, "unlabeled"):
        assert examples.decode_png(example["image"]).shape == (256, 256, 1)
        assert text(example["source"]) == "bone_mri"
        assert text(example["plane"]) == "coronal"
        assert "doi:10.1371/journal.pone.0284508" in text(example["attribution"])
        assert text(example["timepoint"]) == ("post" if text(example["scan_id"]) == "1012" else "pre")


def test_scans_without_four_readings_are_unlabeled(dummy_builder):
    unlabeled = read_split(dummy_builder, "unlabeled")
    assert {text(e["scan_id"]) for e in unlabeled} == UNLABELLED_SCANS
    assert {e["label"] for e in unlabeled} == {-1}
    assert all(not examples.decode_png(e["mask"]).any() for e in unlabeled)


def test_no_patient_in_two_splits_of_any_scheme(dummy_builder):
    patients = split_patient_sets(dummy_builder)
    labelled = patients["train"] | patients["val"] | patients["test"]
    assert len(labelled) == 3
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert not patients["unlabeled"] & labelled
    folds = sorted(name.split("_")[0] for name in patients if name.endswith("_test"))
    assert len(folds) == len(labelled)
    held_out = set()
    for fold in folds:
        train, test = patients[f"{fold}_train"], patients[f"{fold}_test"]
        assert len(test) == 1 and not train & test
        assert train | test == labelled
        held_out |= test
    assert held_out == labelled


def test_split_assignment_is_recorded_in_the_metadata(dummy_builder):
    recorded = dummy_builder.info.metadata["split_patients"]
    assert {name: set(p) for name, p in recorded.items()} == split_patient_sets(dummy_builder)
    assert dummy_builder.info.metadata["skipped_files"] == []


@pytest.mark.parametrize("count", range(1, 10))
def test_patient_splits_partition_the_patients(count):
    patients = [f"p{i}" for i in range(count)]
    splits = bone_mri.patient_splits(patients)
    assigned = [p for members in splits.values() for p in members]
    assert sorted(assigned) == sorted(patients)  # every patient exactly once
    assert splits == bone_mri.patient_splits(list(reversed(patients)))
    if count >= 3:
        assert set(splits) == {"train", "val", "test"}


def test_lopo_folds_hold_out_each_patient_once():
    folds = bone_mri.lopo_folds(["b", "a", "c", "a"])
    assert [held_out for held_out, _ in folds] == ["a", "b", "c"]
    for held_out, training in folds:
        assert set(training) == {"a", "b", "c"} - {held_out}


def broken_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """dummy_data plus a corrupt reading of 1007 and a scan that the subject table does not know."""
    root = tmp_path / "bone_mri"
    shutil.copytree(DUMMY_DATA, root)
    (root / bone_mri.reading_path("1007", "R22")).write_bytes(b"\x1f\x8b not really gzip")
    shutil.copy(root / bone_mri.image_path("1003", "pre"), root / "data/images_study/STIR/Pre_Scans/9999_STIR.nii.gz")
    return root


def test_bad_files_are_skipped_and_listed(tmp_path):
    builder = build("bone_mri", data_dir=tmp_path / "tfds", manual_dir=broken_copy(tmp_path))
    skipped = {entry["path"]: entry["problem"] for entry in builder.info.metadata["skipped_files"]}
    assert set(skipped) == {bone_mri.reading_path("1007", "R22"), "data/images_study/STIR/Pre_Scans/9999_STIR.nii.gz"}
    assert "subject table" in skipped["data/images_study/STIR/Pre_Scans/9999_STIR.nii.gz"]
    # 1007 kept three readings only, so its slices are still there but unlabelled.
    assert "1007" in {text(e["scan_id"]) for e in read_split(builder, "unlabeled")}


def test_strict_mode_stops_at_the_first_bad_file(tmp_path):
    with pytest.raises(InputError, match=r"9999_STIR\.nii\.gz|1007_inflammation_R22"):
        build("bone_mri", data_dir=tmp_path / "tfds", manual_dir=broken_copy(tmp_path), strict=True)


def test_manual_dir_may_be_the_data_folder(tmp_path):
    builder = build("bone_mri", data_dir=tmp_path / "tfds", manual_dir=DUMMY_DATA / "data")
    assert {text(e["scan_id"]) for e in read_split(builder, "unlabeled")} == UNLABELLED_SCANS
    assert builder.info.metadata["skipped_files"] == []


def test_empty_manual_dir_names_the_expected_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as error:
        build("bone_mri", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "empty")
    message = str(error.value)
    assert "\n" not in message
    assert "data/images_study/STIR/{Pre,Post}_Scans/<scan>_STIR.nii.gz" in message
    assert "an empty folder" in message


def test_wrong_layout_reports_what_it_found(tmp_path):
    wrong = tmp_path / "wrong"
    (wrong / "scans").mkdir(parents=True)
    shutil.copy(DUMMY_DATA / bone_mri.image_path("1003", "pre"), wrong / "scans/1003_STIR.nii.gz")
    with pytest.raises(InputError, match=r"found 1 files \(scans/1003_STIR\.nii\.gz\)"):
        build("bone_mri", data_dir=tmp_path / "tfds", manual_dir=wrong)


def test_download_fetches_every_scan_of_the_pinned_commit(tmp_path, monkeypatch):
    """With no manual_dir the builder downloads; a stand-in for GitHub writes synthetic files for each URL."""
    requested = []
    remote = tmp_path / "github"

    def fake_download(self, urls):
        paths = {}
        for name, url in urls.items():
            requested.append(url)
            relpath = url.removeprefix(f"https://raw.githubusercontent.com/c-hepburn/Bone_MRI/{bone_mri.PINNED_COMMIT}/")
            target = remote / relpath
            if "/images_study/" in relpath:
                make_dummy_data.write_image(target, pathlib.Path(relpath).name.split("_")[0])
            else:
                make_dummy_data.write_reading(target, pathlib.Path(relpath).parent.name)
            paths[name] = target
        return paths

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    builder = build("bone_mri", data_dir=tmp_path / "tfds")
    assert all(url.startswith(f"https://raw.githubusercontent.com/c-hepburn/Bone_MRI/{bone_mri.PINNED_COMMIT}/")
               for url in requested)
    checksummed = {line.split("\t")[0] for line in CHECKSUMS.read_text().splitlines() if not line.startswith("#")}
    assert checksummed == set(requested)
    # data_description.docx: 10 subjects with a STIR scan, 8 of them read for inflammation by 2 readers x 2 readings.
    assert len(requested) == 10 + 8 * 4
    patients = split_patient_sets(builder)
    assert len(patients["train"] | patients["val"] | patients["test"]) == 8
    assert len(patients["unlabeled"]) == 2
    assert builder.info.metadata["origin"].startswith("download")


def checksum_lines() -> dict[str, tuple[int, str]]:
    rows = [line.split("\t") for line in CHECKSUMS.read_text().splitlines() if not line.startswith("#")]
    assert all(len(row) == 3 for row in rows)
    return {url: (int(size), sha256) for url, size, sha256 in rows}


def test_every_url_the_builder_requests_has_a_checksum_line():
    """Offline: the URLs come from the builder's own remote_files(), the lines from checksums.tsv as TFDS loads it."""
    requested = set(bone_mri.remote_files().values())
    assert len(requested) == 10 + 8 * 4
    lines = checksum_lines()
    assert set(lines) == requested
    assert len(lines) == len(CHECKSUMS.read_text().splitlines()) - 3  # no URL twice (3 comment lines)
    assert all(size > 0 and len(sha256) == 64 and int(sha256, 16) >= 0 for size, sha256 in lines.values())
    assert pathlib.Path(bone_mri.Builder._checksums_path) == bone_mri.CHECKSUMS_PATH == CHECKSUMS
    assert set(bone_mri.Builder.url_infos) == requested  # what the TFDS download manager validates against
    assert {url: (int(info.size), info.checksum) for url, info in bone_mri.Builder.url_infos.items()} == lines
    bone_mri.check_checksums_known(sorted(requested), bone_mri.Builder.url_infos)


def test_a_file_without_a_checksum_line_is_refused_before_any_download(tmp_path, monkeypatch):
    unlisted = bone_mri.RAW_URL + bone_mri.reading_path("4386", "R22")
    infos = {url: info for url, info in bone_mri.Builder.url_infos.items() if url != unlisted}
    monkeypatch.setattr(bone_mri.Builder, "url_infos", infos)
    requested = []
    monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, urls: requested.extend(urls))
    with pytest.raises(InputError) as error:
        build("bone_mri", data_dir=tmp_path / "tfds")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{CHECKSUMS}: no sha256/size line for 1 of the 42 files")
    assert bone_mri.reading_path("4386", "R22") in message
    assert requested == []


def test_the_download_manager_refuses_a_file_that_differs_from_its_line(tmp_path, monkeypatch):
    """The real TFDS download path with only the HTTP fetch replaced: a synthetic file is not the published one."""
    from tensorflow_datasets.core.download import checksums as tfds_checksums
    from tensorflow_datasets.core.download import download_manager, downloader

    def fake_fetch(self, url, destination_path, verify=True):
        target = pathlib.Path(destination_path) / url.rsplit("/", 1)[-1]
        if "/images_study/" in url:
            make_dummy_data.write_image(target, target.name.split("_")[0])
        else:
            make_dummy_data.write_reading(target, pathlib.Path(url).parent.name)
        return downloader.DownloadResult(path=target, url_info=tfds_checksums.compute_url_info(target))

    monkeypatch.setattr(downloader._Downloader, "_sync_download", fake_fetch)
    with pytest.raises(download_manager.NonMatchingChecksumError, match="has wrong checksum"):
        build("bone_mri", data_dir=tmp_path / "tfds")
