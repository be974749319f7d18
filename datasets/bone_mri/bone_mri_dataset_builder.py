"""bone_mri: semi-coronal sacroiliac-joint STIR MRI of axial spondyloarthritis with expert inflammation masks.

Source: the supplement of Hepburn et al. (PLOS ONE 2023) at github.com/c-hepburn/Bone_MRI, pinned to one commit.
Two ways in: a local copy with the repository's layout given as manual_dir (scans found by glob, so any subset
works), or, with no manual_dir, the files downloaded from that commit by the TFDS download manager.

One example per slice. The lesion mask is the voxel-wise vote of >= 2 of the 4 readings (2 readers x 2 readings):
single readings agree only moderately, and the vote is the consensus the authors' data supports. The label is
"this slice has active inflammation", taken from the vote at native resolution, so a lesion of a voxel or two that
the nearest-neighbour resize drops from the stored mask still counts. Scans without all 4 readings go to
`unlabeled` (label -1).

Splits, always by patient:
- train / val / test: a deterministic patient-level split (see `patient_splits`);
- fold{k}_train / fold{k}_test: leave-one-patient-out, fold k holding out the k-th labelled patient in sorted
  order (see `lopo_folds`). They are real splits, not a recipe: any TFDS reader (tfds.data_source, grain) can use
  them without filtering code, and the fold count follows whatever subset of scans was built. The cost is that
  each labelled slice is stored once more per fold (41 MB in all for the 7-scan subset, 9 MB without the folds).
- unlabeled: scans without the 4 readings (their patients hold no labelled scan).
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from asemble_jax.data import examples
from asemble_jax.data.build_log import SkippedFiles
from asemble_jax.data.builders import ProjectBuilder
from asemble_jax.errors import InputError
from asemble_jax.data.preprocess import PreprocessConfig, preprocess
from asemble_jax.data.readers import read_nifti_volume

PINNED_COMMIT = "3338c88fb441cdeb6c1d6acb3ef61e7af3e7f99d"
REPOSITORY = "https://github.com/c-hepburn/Bone_MRI"
RAW_URL = f"https://raw.githubusercontent.com/c-hepburn/Bone_MRI/{PINNED_COMMIT}/"
SOURCE = "bone_mri"
PLANE = "coronal"  # semi-coronal: the slab follows the sacrum's long axis
LABEL_NAMES = ("no_inflammation", "inflammation")
READINGS = ("R11", "R12", "R21", "R22")  # R<reader><reading>
LESION_MIN_VOTES = 2
CHECKSUMS_PATH = pathlib.Path(__file__).resolve().parent / "checksums.tsv"  # where TFDS looks (ProjectBuilder)
ATTRIBUTION = (
    "Hepburn C, Jones A, Bainbridge A, Ciurtin C, Iglesias JE, Zhang H, Hall-Craggs MA, Bray TJP. Volume of "
    "hyperintense inflammation (VHI): a quantitative imaging biomarker of inflammation load in spondyloarthritis, "
    "enabled by human-machine cooperation. PLOS ONE 18(4):e0284508, 2023. doi:10.1371/journal.pone.0284508. "
    f"Data: {REPOSITORY} at commit {PINNED_COMMIT[:7]}."
)

# data_description.docx, main table: subject number -> (pre-treatment scan, post-treatment scan), None for "-".
SUBJECT_SCANS: Mapping[int, tuple[str | None, str | None]] = {
    1: ("1234", None), 2: ("6785", "9976"), 3: (None, "4386"), 4: ("9807", "4109"), 5: ("5489", "1897"),
    6: ("7777", "8888"), 7: ("6767", "9090"), 8: ("1001", None), 9: ("1003", None), 10: ("1005", "1006"),
    11: ("1007", None), 12: ("1009", "1010"), 13: (None, "1012"), 14: ("1013", None), 15: (None, "1016"),
    16: ("2001", "3001"), 17: (None, "3002"), 18: ("2003", "3003"), 19: ("2004", "3004"), 20: ("2005", "3005"),
    21: ("2006", "3006"), 22: ("2007", "3007"), 23: ("2008", "3008"), 24: (None, "3009"), 25: ("2010", "3010"),
    26: ("2011", "3011"), 27: ("2012", "3012"), 28: ("2014", None), 29: ("2015", None), 30: ("2016", None),
}
# Subjects the table lists with a STIR sequence, and those whose STIR scan was segmented for inflammation.
STIR_SUBJECTS = frozenset({1, 3, 9, 11, 13, 14, 15, 17, 28, 29})
INFLAMMATION_SEGMENTED_SUBJECTS = frozenset({1, 3, 9, 11, 13, 14, 15, 17})

EXPECTED_LAYOUT = (
    "the layout of github.com/c-hepburn/Bone_MRI: data/images_study/STIR/{Pre,Post}_Scans/<scan>_STIR.nii.gz, "
    "readings in data/segmentations/Inflammation_manual_segmentation/{R11,R12,R21,R22}/"
    "<scan>_inflammation_<reading>.nii.gz"
)


def image_path(scan_id: str, timepoint: str) -> str:
    """Repository-relative path of a STIR scan; timepoint is "pre" or "post"."""
    return f"data/images_study/STIR/{timepoint.capitalize()}_Scans/{scan_id}_STIR.nii.gz"


def reading_path(scan_id: str, reading: str) -> str:
    return f"data/segmentations/Inflammation_manual_segmentation/{reading}/{scan_id}_inflammation_{reading}.nii.gz"


def scan_subjects() -> dict[str, tuple[int, str]]:
    """Every scan id in the subject table -> (subject number, "pre" or "post")."""
    table = {}
    for subject, scans in SUBJECT_SCANS.items():
        for scan_id, timepoint in zip(scans, ("pre", "post")):
            if scan_id is not None:
                table[scan_id] = (subject, timepoint)
    return table


def patient_id(subject: int) -> str:
    return f"{SOURCE}_subject{subject:02d}"


def remote_files() -> dict[str, str]:
    """Repository-relative path -> raw URL at the pinned commit, for every STIR scan and reading the table lists."""
    paths = []
    for subject in sorted(STIR_SUBJECTS):
        pre, post = SUBJECT_SCANS[subject]
        scan_id, timepoint = (pre, "pre") if pre else (post, "post")
        paths.append(image_path(scan_id, timepoint))
        if subject in INFLAMMATION_SEGMENTED_SUBJECTS:
            paths.extend(reading_path(scan_id, reading) for reading in READINGS)
    return {path: RAW_URL + path for path in paths}


def check_checksums_known(urls: Sequence[str], url_infos: Mapping[str, object] | None) -> None:
    """Raises a one-line InputError if any url has no line in checksums.tsv.

    TFDS validates a download only against a line it has, and downloads a url without one unchecked (unless
    force_checksums_validation is set), so the builder refuses before downloading anything.
    """
    missing = sorted(set(urls) - set(url_infos or {}))
    if missing:
        shown = ", ".join(url.removeprefix(RAW_URL) for url in missing[:3])
        raise InputError(CHECKSUMS_PATH, f"no sha256/size line for {len(missing)} of the {len(set(urls))} files to "
                                         f"download ({shown}{', ...' if len(missing) > 3 else ''}); refusing to "
                                         "download them unchecked (register_checksums=True adds the lines)")


def patient_splits(patient_ids: Sequence[str], *, val_fraction: float = 0.2,
                   test_fraction: float = 0.2) -> dict[str, tuple[str, ...]]:
    """Deterministic train/val/test assignment of patients.

    Patients are ordered by a hash of their id, not by the id, so that the split does not follow the authors'
    numbering, and adding or removing one patient moves few others; test takes the first share, val the next, train the rest. Each of val
    and test gets at least one patient once there are enough (test from 2 patients, val from 3). Splits left empty
    are omitted.
    """
    order = sorted(set(patient_ids), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    n = len(order)
    n_test = max(1, round(n * test_fraction)) if n >= 2 else 0
    n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
    splits = {"train": order[n_test + n_val:], "val": order[n_test:n_test + n_val], "test": order[:n_test]}
    return {name: tuple(sorted(patients)) for name, patients in splits.items() if patients}


def lopo_folds(patient_ids: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Leave-one-patient-out: fold k = (the k-th patient in sorted order held out, every other patient to train)."""
    patients = sorted(set(patient_ids))
    return [(held_out, tuple(p for p in patients if p != held_out)) for held_out in patients]


@dataclasses.dataclass(frozen=True)
class ScanFiles:
    scan_id: str
    subject: int
    timepoint: str
    image: pathlib.Path
    readings: Mapping[str, pathlib.Path]  # only the readings that exist
    name: str  # repository-relative path of the image, as errors and metadata name it


def _describe_contents(folder: pathlib.Path) -> str:
    if not folder.is_dir():
        return "the folder does not exist"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if not files:
        return "an empty folder"
    shown = ", ".join(files[:5])
    return f"{len(files)} files ({shown}{', ...' if len(files) > 5 else ''})"


def _find_volume(root: pathlib.Path, relpath: str) -> pathlib.Path | None:
    """The file at relpath, or its uncompressed .nii twin (a copy someone gunzipped)."""
    for candidate in (root / relpath, root / relpath.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def discover_local_scans(manual_dir: pathlib.Path, skipped: SkippedFiles) -> list[ScanFiles]:
    """Every STIR scan under a local copy (its root or its data/ folder); raises InputError if there is none."""
    root = manual_dir.parent if (manual_dir / "images_study").is_dir() else manual_dir
    subjects = scan_subjects()
    scans = []
    for image in sorted((root / "data/images_study/STIR").glob("*_Scans/*_STIR.nii*")):
        name = str(image.relative_to(root))
        scan_id = image.name.split("_")[0]
        if scan_id not in subjects:
            skipped.skip(InputError(name, f"scan {scan_id} is not in the subject table of data_description.docx, "
                                          "so it cannot be assigned to a patient"))
            continue
        subject, timepoint = subjects[scan_id]
        if image.parent.name.lower() != f"{timepoint}_scans":
            skipped.skip(InputError(name, f"data_description.docx lists scan {scan_id} as the {timepoint}-treatment "
                                          f"scan of subject {subject}, not {image.parent.name}"))
            continue
        readings = {r: path for r in READINGS if (path := _find_volume(root, reading_path(scan_id, r)))}
        scans.append(ScanFiles(scan_id, subject, timepoint, image, readings, name))
    if not scans:
        raise InputError(manual_dir, f"no usable STIR scan found; expected {EXPECTED_LAYOUT}; "
                                     f"found {_describe_contents(manual_dir)}")
    return scans


def scans_from_download(downloaded: Mapping[str, pathlib.Path]) -> list[ScanFiles]:
    """ScanFiles for the paths that `remote_files` names, mapped to where the download manager put them."""
    scans = []
    for scan_id, (subject, timepoint) in sorted(scan_subjects().items()):
        name = image_path(scan_id, timepoint)
        if name in downloaded:
            readings = {r: pathlib.Path(downloaded[reading_path(scan_id, r)]) for r in READINGS
                        if reading_path(scan_id, r) in downloaded}
            scans.append(ScanFiles(scan_id, subject, timepoint, pathlib.Path(downloaded[name]), readings, name))
    return scans


def _read(path: pathlib.Path, name: str) -> np.ndarray:
    """read_nifti_volume, with errors naming the repository-relative path (a download's cache name means nothing)."""
    try:
        return read_nifti_volume(path)
    except InputError as error:
        raise InputError(name, error.problem) from None


def lesion_vote(readings: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels that at least LESION_MIN_VOTES of the readings mark (any non-zero value is a mark)."""
    return np.sum([np.asarray(r) > 0 for r in readings], axis=0) >= LESION_MIN_VOTES


@dataclasses.dataclass(frozen=True)
class SliceExample:
    key: str
    patient: str
    labelled: bool
    features: dict


def scan_examples(scan: ScanFiles, config: PreprocessConfig, skipped: SkippedFiles) -> list[SliceExample]:
    """One example per slice of the scan; unreadable files and slices are skipped (or raised in strict mode)."""
    try:
        volume = _read(scan.image, scan.name)
    except InputError as error:
        skipped.skip(error)
        return []
    readings = []
    for reading, path in scan.readings.items():
        name = reading_path(scan.scan_id, reading)
        try:
            mask = _read(path, name)
            if mask.shape != volume.shape:
                raise InputError(name, f"mask shape {mask.shape} differs from the scan's {volume.shape}")
        except InputError as error:
            skipped.skip(error)
            continue
        readings.append(mask)
    vote = lesion_vote(readings) if len(readings) == len(READINGS) else None
    patient = patient_id(scan.subject)
    slices = []
    for k, raw in enumerate(volume):
        lesion = vote[k] if vote is not None else None
        try:
            result = preprocess(raw, config, mask=None if lesion is None else lesion.astype(np.uint8),
                                path=f"{scan.name}[slice {k}]")
        except InputError as error:
            skipped.skip(error)
            continue
        mask = result.mask if result.mask is not None else np.zeros_like(result.image)
        slices.append(SliceExample(
            key=f"{scan.scan_id}_{k:02d}",
            patient=patient,
            labelled=lesion is not None,
            features={
                "image": examples.encode_png(result.image),
                "mask": examples.encode_png(mask, "mask"),
                "label": -1 if lesion is None else int(lesion.any()),
                "lesion_voxels": -1 if lesion is None else int(lesion.sum()),
                "patient_id": patient,
                "scan_id": scan.scan_id,
                "slice_index": k,
                "timepoint": scan.timepoint,
                "source": SOURCE,
                "plane": PLANE,
                "attribution": ATTRIBUTION,
            },
        ))
    return slices


def split_patients(labelled: Sequence[str], unlabelled: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Every split's patients: train/val/test, the LOPO folds and unlabeled."""
    shared = set(labelled) & set(unlabelled)
    if shared:
        # Cannot happen with the transcribed table (one STIR scan per subject); guards a future table edit.
        raise ValueError(f"patients {sorted(shared)} have both labelled and unlabelled scans")
    splits = dict(patient_splits(labelled))
    if len(set(labelled)) >= 2:
        for k, (held_out, training) in enumerate(lopo_folds(labelled)):
            splits[f"fold{k}_train"] = training
            splits[f"fold{k}_test"] = (held_out,)
    if unlabelled:
        splits["unlabeled"] = tuple(sorted(set(unlabelled)))
    return splits


class Builder(ProjectBuilder):
    """Slices of the Bone_MRI STIR scans with >= 2-of-4 reader inflammation masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Slices of the STIR scans at commit 3338c88, >= 2-of-4 vote masks, patient splits."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="stir", description="Semi-coronal STIR slices.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Optional. Without a manual_dir the files are downloaded from {REPOSITORY} at commit {PINNED_COMMIT}. "
        f"With one, it must be a copy of that repository (or any subset of its scans) in {EXPECTED_LAYOUT}."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=examples.features(
                label_names=LABEL_NAMES,
                with_mask=True,
                extra={
                    "scan_id": tfds.features.Text(doc="scan number in data_description.docx"),
                    "slice_index": tfds.features.Scalar(np.int32, doc="slice k of the volume, vol[:, :, k]"),
                    "timepoint": tfds.features.Text(doc="pre or post (treatment)"),
                    "lesion_voxels": tfds.features.Scalar(
                        np.int32, doc="voxels of the slice with >= 2 of 4 votes, native resolution; -1 unlabelled"),
                },
            ),
            supervised_keys=("image", "label"),
            homepage=REPOSITORY,
            metadata=tfds.core.MetadataDict(),
        )

    def _local_copy(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path | None:
        """The manual_dir to read, or None to download.

        TFDS always passes a manual_dir (default <download_dir>/manual) and its public `manual_dir` property refuses
        an empty folder, so the private attribute is the only way to tell "the user named a folder, and it is
        empty" (an error) from "nobody named one" (download).
        """
        manual_dir = pathlib.Path(dl_manager._manual_dir)  # pylint: disable=protected-access
        named_by_user = manual_dir != pathlib.Path(dl_manager.download_dir) / "manual"
        if named_by_user or (manual_dir.is_dir() and any(manual_dir.iterdir())):
            return manual_dir
        return None

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        skipped = SkippedFiles(strict=self._strict)
        manual_dir = self._local_copy(dl_manager)
        if manual_dir is not None:
            scans = discover_local_scans(manual_dir, skipped)
            origin = "manual_dir"
        else:
            urls = remote_files()
            if not dl_manager.register_checksums:
                check_checksums_known(list(urls.values()), self.url_infos)
            downloaded = dl_manager.download(urls)
            scans = scans_from_download({name: pathlib.Path(path) for name, path in downloaded.items()})
            origin = f"download of {REPOSITORY} at {PINNED_COMMIT}"
        config = PreprocessConfig()
        slices = [example for scan in scans for example in scan_examples(scan, config, skipped)]
        labelled = sorted({s.patient for s in slices if s.labelled})
        unlabelled = sorted({s.patient for s in slices if not s.labelled})
        splits = split_patients(labelled, unlabelled)
        self.info.metadata.update({
            "origin": origin,
            "lesion_min_votes": LESION_MIN_VOTES,
            "preprocess": dataclasses.asdict(config),
            "scans": [{"scan_id": s.scan_id, "patient_id": patient_id(s.subject), "timepoint": s.timepoint,
                       "readings": sorted(s.readings)} for s in scans],
            "split_patients": {name: list(patients) for name, patients in splits.items()},
            "skipped_files": skipped.as_metadata(),
        })
        return {name: self._generate_examples(slices, frozenset(patients)) for name, patients in splits.items()}

    def _generate_examples(self, slices: Sequence[SliceExample], patients: frozenset[str]) -> Iterator:
        for example in slices:
            if example.patient in patients:
                yield example.key, example.features
