"""What the three hand-filled sources (elazig, asas, radiopaedia) share: finding images in a manual_dir, reading
class and plane names from folder names, reading the user's CSV tables, preparing every image the way all builders
do, and splitting so that no patient, case or near-duplicate image lands in two splits.

Folder and CSV layouts of these sources are made by people, so names are matched generously (case, spaces,
underscores and hyphens do not matter; common synonyms are accepted) and everything that was not used is reported
with its reason, never silently dropped.
"""
from __future__ import annotations

import abc
import collections
import csv
import dataclasses
import logging
import os
import pathlib
import re
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds

from asemble_jax.data import examples
from asemble_jax.data.build_log import SkippedFiles, relative
from asemble_jax.data.builders import ProjectBuilder
from asemble_jax.errors import InputError
from asemble_jax.data.near_duplicates import DEFAULT_THRESHOLD, group_near_duplicates, hash_hex, perceptual_hash
from asemble_jax.data.preprocess import PreprocessConfig, preprocess, window_to_uint8
from asemble_jax.data.readers import read_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"})
# DICOM files are often exported without a suffix (I1000000, IM_0001): they are recognised by this marker.
_DICOM_MAGIC_OFFSET, _DICOM_MAGIC = 128, b"DICM"

DEFAULT_CLASS_ALIASES: Mapping[str, tuple[str, ...]] = {
    "AS": ("AS", "AS diagnosis", "ankylosing spondylitis", "axSpA", "spondyloarthritis", "patient", "patients",
           "sick", "disease", "positive", "hasta"),
    "healthy": ("healthy", "normal", "control", "controls", "healthy control", "healthy controls", "negative",
                "saglikli", "sağlıklı", "kontrol"),
}
DEFAULT_PLANE_ALIASES: Mapping[str, tuple[str, ...]] = {
    "axial": ("axial", "ax", "transverse", "transversal", "tra", "aksiyel"),
    "coronal": ("coronal", "cor", "semi coronal", "semicoronal", "oblique coronal", "koronal"),
}
# A folder that names one patient, e.g. "patient_012", "Subject 7", "case-3", "P12", "hasta 4".
PATIENT_FOLDER = re.compile(r"^(?:patient|subject|case|hasta|pt|p)[ _-]*\d[\w-]*$", re.IGNORECASE)

log = logging.getLogger(__name__)

PATIENTS_CSV = "patients.csv"
# Tables that sit among the images by design, so they are not reported as ignored files.
_TABLE_NAMES = frozenset({PATIENTS_CSV, "labels.csv", "cases.csv"})

DEFAULT_SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.7), ("val", 0.15), ("test", 0.15))


def normalize_name(name: str) -> str:
    """Folder or CSV value as compared: case-folded, '_' and '-' as spaces, runs of spaces collapsed."""
    return " ".join(re.sub(r"[_\-]+", " ", name).casefold().split())


class NameAliases:
    """Maps user-written names onto canonical ones ("AS diagnosis" -> "AS"); built from {canonical: aliases}."""

    def __init__(self, aliases: Mapping[str, Iterable[str]], *, allowed: Sequence[str]):
        self._lookup: dict[str, str] = {}
        for canonical, names in aliases.items():
            if canonical not in allowed:
                raise ValueError(f"alias target {canonical!r} is not one of {', '.join(allowed)}")
            for name in (canonical, *names):
                key = normalize_name(name)
                if self._lookup.setdefault(key, canonical) != canonical:
                    raise ValueError(f"alias {name!r} maps to both {self._lookup[key]!r} and {canonical!r}")
        self.canonical = tuple(allowed)

    def get(self, name: str) -> str | None:
        return self._lookup.get(normalize_name(name))

    def describe(self) -> str:
        by_target = collections.defaultdict(list)
        for key, canonical in self._lookup.items():
            by_target[canonical].append(key)
        return "; ".join(f"{c}: {', '.join(sorted(by_target[c]))}" for c in self.canonical)


def class_aliases(aliases: Mapping[str, Iterable[str]] = DEFAULT_CLASS_ALIASES) -> NameAliases:
    return NameAliases(aliases, allowed=examples.CLASS_NAMES)


def plane_aliases(aliases: Mapping[str, Iterable[str]] = DEFAULT_PLANE_ALIASES) -> NameAliases:
    return NameAliases(aliases, allowed=examples.PLANES)


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One input file and what the source says about it. `patient_id` None means unknown: the file is then kept
    apart from other splits only through near-duplicate grouping."""

    path: pathlib.Path
    label: str
    plane: str
    patient_id: str | None = None
    attribution: str = ""


@dataclasses.dataclass
class Inventory:
    """The images of one plane found in a manual_dir, and every other file with the reason it was not used."""

    images: list[SourceImage] = dataclasses.field(default_factory=list)
    ignored: list[dict[str, str]] = dataclasses.field(default_factory=list)
    other_plane_images: int = 0
    patient_id_from: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def ignore(self, path: str, reason: str) -> None:
        self.ignored.append({"path": path, "reason": reason})

    def counts(self) -> dict[str, int]:
        return dict(sorted(collections.Counter(image.label for image in self.images).items()))

    def summary(self, plane: str) -> str:
        """What was found, for the error about a manual_dir with nothing usable."""
        examples_of_ignored = "; ".join(f"{e['path']}: {e['reason']}" for e in self.ignored[:2])
        return (f"{len(self.images)} {plane} images ({self.other_plane_images} of another plane, "
                f"{len(self.ignored)} files ignored{', e.g. ' + examples_of_ignored if self.ignored else ''})")


def is_image_file(path: pathlib.Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as file:
            header = file.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError:
        return False
    return header[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def walk_files(root: pathlib.Path) -> Iterable[pathlib.Path]:
    """Every file under root in a fixed (sorted) order, so builds do not depend on the file system's order."""
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            yield pathlib.Path(folder) / name


def top_level_entries(root: pathlib.Path, limit: int = 12) -> str:
    if not root.is_dir():
        return "(folder does not exist)"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(entries[:limit]) + (f", ... ({len(entries) - limit} more)" if len(entries) > limit else "")
    return shown or "(empty folder)"


def layout_error(root: pathlib.Path, expected: str, found: str) -> InputError:
    """The one-line error for a manual_dir that holds nothing usable: what was expected and what is there."""
    return InputError(root, f"expected {expected}; found {found}; top-level entries: {top_level_entries(root)}")


def scan_class_folders(root: pathlib.Path, plane: str, *, classes: NameAliases, planes: NameAliases,
                       patient_ids: Mapping[str, str] | None = None, exclude: Iterable[str] = ()) -> Inventory:
    """Images of `plane` under root laid out as <plane>/.../<class>/.../image, in any nesting order.

    A file's plane and class are read from the names of the folders above it (below root); a file with no plane or
    class folder, or with two different ones, is ignored and reported. Its patient id comes from `patient_ids`
    (relative path -> id, e.g. from patients.csv), else from a folder named like "patient_012" above it, else it
    stays unknown. Files in `exclude` (relative paths, already reported elsewhere) are passed over.
    """
    patient_ids = patient_ids or {}
    exclude = frozenset(exclude)
    inventory = Inventory()
    for path in walk_files(root):
        rel = pathlib.PurePath(relative(path, root)).as_posix()
        if rel in exclude:
            continue
        folders = pathlib.PurePath(rel).parts[:-1]
        if any(part.startswith(".") for part in pathlib.PurePath(rel).parts):
            inventory.ignore(rel, "hidden file or folder")
            continue
        if not is_image_file(path):
            if path.name not in _TABLE_NAMES:
                inventory.ignore(rel, f"not an image (accepted: {', '.join(sorted(IMAGE_SUFFIXES))}, or DICOM)")
            continue
        found_planes = {p for p in map(planes.get, folders) if p}
        found_classes = {c for c in map(classes.get, folders) if c}
        if len(found_planes) != 1:
            inventory.ignore(rel, "no plane folder above it" if not found_planes
                             else f"folders name two planes: {', '.join(sorted(found_planes))}")
            continue
        if found_planes != {plane}:
            inventory.other_plane_images += 1
            continue
        if len(found_classes) != 1:
            inventory.ignore(rel, "no class folder above it" if not found_classes
                             else f"folders name two classes: {', '.join(sorted(found_classes))}")
            continue
        (label,) = found_classes
        patient_id = patient_ids.get(rel)
        patient_folders = [f for f in folders if PATIENT_FOLDER.match(f.strip())]
        if patient_id is not None:
            inventory.patient_id_from[PATIENTS_CSV] += 1
        elif patient_folders:
            # Numbering usually restarts per class folder, so the class keeps two "patient_1" folders apart.
            patient_id = f"{label}/{patient_folders[-1]}"
            inventory.patient_id_from["patient folder"] += 1
        else:
            inventory.patient_id_from["unknown: near-duplicate group"] += 1
        inventory.images.append(SourceImage(path=path, label=label, plane=plane, patient_id=patient_id))
    return inventory


def unlisted_images(root: pathlib.Path, listed: Iterable[pathlib.Path]) -> list[str]:
    """Images under root that a CSV table does not mention: reported, since the user may have forgotten them."""
    listed = {p.resolve() for p in listed}
    return [relative(p, root) for p in walk_files(root)
            if is_image_file(p) and p.resolve() not in listed and not p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------- CSV tables

# Header spellings accepted for the project's column names.
COLUMN_ALIASES: Mapping[str, str] = {
    "filename": "file", "file_name": "file", "path": "file", "image": "file", "image_path": "file",
    "case": "case_id", "caseid": "case_id", "patient": "patient_id", "patientid": "patient_id",
    "license": "licence", "class": "label", "diagnosis": "label", "link": "url",
}


@dataclasses.dataclass(frozen=True)
class CsvRow:
    line: int
    values: Mapping[str, str]

    def empty(self, columns: Iterable[str]) -> list[str]:
        return [column for column in columns if not self.values.get(column)]


def _column_key(header: str) -> str:
    key = normalize_name(header).replace(" ", "_")
    return COLUMN_ALIASES.get(key, key)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def read_csv_rows(path: pathlib.Path, required: Sequence[str], skipped: SkippedFiles | None = None) -> list[CsvRow]:
    """Non-blank rows of a user's CSV table with at least the `required` columns, values stripped (a value may be
    empty: see `CsvRow.empty`). The one reader of every manual-source table (patients.csv, labels.csv, cases.csv).

    Accepts a UTF-8 byte-order mark (Excel), ',', ';' or tab as separator, header case and common synonyms
    (COLUMN_ALIASES). Raises InputError naming the file for a missing file, non-UTF-8 text, an empty table, an
    unreadable header or missing columns.

    Each line is one row: a value may be quoted (to hold a separator) but not span lines, so that one stray '"'
    costs its own line and never swallows the rows after it. A line whose quoting is broken (a quote left open,
    text after a closing quote) or whose number of values differs from the header's is reported to `skipped` by
    its line number (`<table name>: line N: ...`) and left out; surplus empty values at the end of a line are
    accepted. Without `skipped` the first bad line raises.
    """
    skipped = skipped if skipped is not None else SkippedFiles(strict=True)
    expected = f"a CSV table with columns {', '.join(required)}"
    if not path.is_file():
        raise InputError(path, f"not found; expected {expected}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(path, f"not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8 CSV")
    if not text.strip():
        raise InputError(path, f"empty; expected {expected}")
    lines = _LINE_BREAK.split(text)
    try:
        delimiter = csv.Sniffer().sniff(lines[0], delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","

    def parse(line: str) -> list[str]:
        # Only the separator is guessed (from the header); quoting is Excel's ('""' inside quotes is one '"').
        # strict: an open quote at the end of the line, or text after a closing quote, is an error, not a guess.
        return next(csv.reader([line], csv.excel, delimiter=delimiter, skipinitialspace=True, strict=True), [])

    try:
        header = [_column_key(h) for h in parse(lines[0])]
    except csv.Error as error:
        raise InputError(path, f"line 1 (the header): {_quoting_problem(error)}")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; found columns {', '.join(header)}; "
                               f"expected {expected}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            cells = parse(line)
        except csv.Error as error:
            skipped.skip(InputError(path.name, f"line {number}: {_quoting_problem(error)}; the line is left out"))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) < len(header) or any(cell.strip() for cell in cells[len(header):]):
            skipped.skip(InputError(path.name, f"line {number}: {len(cells)} value{'' if len(cells) == 1 else 's'} "
                                               f"but the header has {len(header)} columns (a missing or extra "
                                               f"separator?); the line is left out"))
            continue
        rows.append(CsvRow(line=number, values={c: cell.strip() for c, cell in zip(header, cells)}))
    return rows


def _quoting_problem(error: csv.Error) -> str:
    if "unexpected end of data" in str(error):
        return "a quoted value is not closed on its line (a stray '\"'? values cannot span lines)"
    return f"unreadable ({error}; a stray '\"'?)"


def listed_file(root: pathlib.Path, table: pathlib.Path, row: CsvRow) -> pathlib.Path:
    """The image a table row names, relative to root; InputError (naming the file as the table writes it) if it is
    missing or points outside root. Windows separators are accepted."""
    name = row.values["file"].replace("\\", "/")
    if not name:
        raise InputError(table.name, f"line {row.line}: no file")
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InputError(name, f"{table.name} line {row.line} points outside the manual_dir")
    if not path.is_file():
        raise InputError(name, f"listed in {table.name} line {row.line} but not found")
    return path


@dataclasses.dataclass
class TableInventory:
    """Rows of a table (labels.csv, cases.csv) whose images are of one plane, and what else the folder holds."""

    rows: list[tuple[CsvRow, pathlib.Path]]
    other_plane_rows: int
    unlisted_images: list[str]

    def report(self) -> dict:
        return {"other_plane_rows": self.other_plane_rows, "unlisted_images": self.unlisted_images}


def read_table_for_plane(root: pathlib.Path, table_name: str, required: Sequence[str], plane: str, *,
                         layout: str, skipped: SkippedFiles) -> TableInventory:
    """Rows of root/table_name listing images of `plane`. A missing table is a layout error; a line that cannot be
    read (see `read_csv_rows`), or a row that names a missing file, a file already listed, or an unknown plane goes
    to `skipped`."""
    table = root / table_name
    if not table.is_file():
        raise layout_error(root, layout, f"no {table_name}")
    planes = plane_aliases()
    rows = read_csv_rows(table, ("file", "plane", *required), skipped)
    first_line: dict[pathlib.Path, int] = {}
    kept, other_plane = [], 0
    for row in rows:
        try:
            path = listed_file(root, table, row)
            if path in first_line:
                raise InputError(row.values["file"], f"{table_name} line {row.line} lists it again "
                                                     f"(first on line {first_line[path]}); the first row is used")
            first_line[path] = row.line
            empty = row.empty(required)
            if empty:
                raise InputError(row.values["file"], f"{table_name} line {row.line}: no {', '.join(empty)}")
            row_plane = planes.get(row.values["plane"])
            if row_plane is None:
                raise InputError(row.values["file"], f"{table_name} line {row.line}: unknown plane "
                                                     f"{row.values['plane']!r} (expected {planes.describe()})")
        except InputError as error:
            skipped.skip(error)
            continue
        if row_plane == plane:
            kept.append((row, path))
        else:
            other_plane += 1
    return TableInventory(rows=kept, other_plane_rows=other_plane,
                          unlisted_images=unlisted_images(root, first_line))


@dataclasses.dataclass
class PatientTable:
    """What patients.csv says: `ids` maps a file (relative to the manual_dir) to its patient; `left_out` holds the
    files that must not be used because their rows are unusable or disagree (already reported as skipped)."""

    ids: dict[str, str] = dataclasses.field(default_factory=dict)
    left_out: set[str] = dataclasses.field(default_factory=set)


def read_patient_ids(root: pathlib.Path, skipped: SkippedFiles | None = None) -> PatientTable:
    """patients.csv (file, patient_id) if the manual_dir has one, checked row by row; problems go to `skipped`
    (without it, the first one raises).

    A line that cannot be read, a row without a file, or a row naming a file that is not in the manual_dir is
    reported. A file whose row has no patient id, or that is listed twice with two different ids, is reported and
    left out of the build: it is never given a guessed patient, since a wrong one could put a patient in two
    splits. A file listed twice with the same id is fine.
    """
    skipped = skipped if skipped is not None else SkippedFiles(strict=True)
    table = root / PATIENTS_CSV
    result = PatientTable()
    if not table.exists():
        return result
    first_row: dict[str, CsvRow] = {}
    for row in read_csv_rows(table, ("file", "patient_id"), skipped):
        try:
            listed_file(root, table, row)
        except InputError as error:
            skipped.skip(error)
            continue
        name = pathlib.PurePath(os.path.normpath(row.values["file"].replace("\\", "/"))).as_posix()
        patient_id = row.values["patient_id"]
        first = first_row.setdefault(name, row) if patient_id else None
        if first is None:
            problem = f"{PATIENTS_CSV} line {row.line}: no patient_id; the file is left out"
        elif first.values["patient_id"] != patient_id and name not in result.left_out:
            problem = (f"{PATIENTS_CSV} lines {first.line} and {row.line} give different patient ids "
                       f"({first.values['patient_id']}, {patient_id}); the file is left out")
        else:
            continue
        result.left_out.add(name)
        skipped.skip(InputError(name, problem))
    result.ids = {name: row.values["patient_id"] for name, row in first_row.items() if name not in result.left_out}
    return result


# ------------------------------------------------------------------------------------ preparing images

@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """One preprocessed 2-D image: `key` is the file's path relative to the manual_dir, with '#<frame>' added for
    frames of a multi-frame file. `phash` is the perceptual hash of the stored image, `phash_uncropped` that of
    the windowed full frame: the body crop can move with noise or resolution, the full frame does not, while a
    copy that the user cropped differently only matches after cropping."""

    key: str
    source: SourceImage
    png: bytes
    phash: int
    phash_uncropped: int


_UNCROPPED_HASH_SIDE = 64


def uncropped_hash(raw: np.ndarray, percentiles: tuple[float, float]) -> int:
    """pHash of the whole frame, windowed as preprocessing windows it. The frame is shrunk first: the hash only
    sees 32x32 anyway, and windowing a full-size frame would cost a quarter of a build."""
    small = cv2.resize(np.asarray(raw, dtype=np.float32), (_UNCROPPED_HASH_SIDE, _UNCROPPED_HASH_SIDE),
                       interpolation=cv2.INTER_AREA)
    return perceptual_hash(window_to_uint8(small, percentiles))


def prepare_images(images: Sequence[SourceImage], root: pathlib.Path, config: PreprocessConfig,
                   skipped: SkippedFiles) -> list[PreparedImage]:
    """Reads and preprocesses every image as all builders do; an unusable file goes to `skipped`."""
    prepared = []
    for image in images:
        rel = relative(image.path, root)
        try:
            raw = read_image(image.path)
            frames = [raw] if raw.ndim == 2 else list(raw)
            outputs = [preprocess(frame, config, path=str(image.path)).image for frame in frames]
        except InputError as error:
            skipped.skip(InputError(rel, error.problem))
            continue
        for index, (frame, output) in enumerate(zip(frames, outputs)):
            key = rel if len(outputs) == 1 else f"{rel}#{index}"
            prepared.append(PreparedImage(key=key, source=image, png=examples.encode_png(output, key),
                                          phash=perceptual_hash(output),
                                          phash_uncropped=uncropped_hash(frame, config.window_percentiles)))
    return prepared


# ------------------------------------------------------------------------------------------ splitting

def split_groups(prepared: Sequence[PreparedImage], *, threshold: int) -> list[int]:
    """Split unit per image: images of one patient or case, and near-duplicate images, are joined transitively."""
    # Frames of one multi-frame file are one patient even when the source does not say which.
    links = [p.source.patient_id or ("file", p.source.path) for p in prepared]
    return group_near_duplicates([p.phash for p in prepared], [p.phash_uncropped for p in prepared],
                                 threshold=threshold, linked_by=links)


def assign_splits(groups: Sequence[int], labels: Sequence[str], *,
                  fractions: Sequence[tuple[str, float]] = DEFAULT_SPLIT_FRACTIONS, seed: int = 0) -> list[str]:
    """Split name per image; every group goes whole into one split, class by class, so that each split gets about
    its fraction of each class's images.

    A group's class is its most common label. Within a class, groups are taken largest first (ties in a seeded
    random order) and each goes to the split furthest below its target; the result depends only on the inputs.
    """
    names = [name for name, _ in fractions]
    weights = np.array([weight for _, weight in fractions], dtype=float)
    if len(set(names)) != len(names) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"split fractions must name distinct splits with non-negative weights, got {fractions}")
    weights = weights / weights.sum()
    members = collections.defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    group_label = {g: collections.Counter(labels[i] for i in idx).most_common(1)[0][0] for g, idx in members.items()}
    rng = np.random.default_rng(seed)
    split_of_group = {}
    for label in sorted(set(group_label.values())):
        class_groups = sorted(g for g, lab in group_label.items() if lab == label)
        order = rng.permutation(len(class_groups))
        class_groups = sorted((class_groups[i] for i in order), key=lambda g: -len(members[g]))
        total = sum(len(members[g]) for g in class_groups)
        filled = np.zeros(len(names))
        for group in class_groups:
            choice = int(np.argmax(weights * total - filled))
            filled[choice] += len(members[group])
            split_of_group[group] = names[choice]
    return [split_of_group[group] for group in groups]


def grouping_report(prepared: Sequence[PreparedImage], groups: Sequence[int], splits: Sequence[str], *,
                    threshold: int) -> dict:
    """Build metadata on the grouping: threshold, each file's group and split, and the groups that mix classes
    (a mislabelled copy, or a threshold too loose for the data)."""
    labels_in_group = collections.defaultdict(set)
    sizes = collections.Counter(groups)
    for image, group in zip(prepared, groups):
        labels_in_group[group].add(image.source.label)
    mixed = sorted(g for g, labels in labels_in_group.items() if len(labels) > 1)
    return {
        "near_duplicate_threshold_bits": threshold,
        "num_groups": len(sizes),
        "largest_group_size": max(sizes.values(), default=0),
        "groups_with_both_classes": [[p.key for p, g in zip(prepared, groups) if g == m] for m in mixed],
        "files": [{"file": p.key, "label": p.source.label, "patient_id": p.source.patient_id or "",
                   "group": g, "split": s,
                   "phash": hash_hex(p.phash), "phash_uncropped": hash_hex(p.phash_uncropped)}
                  for p, g, s in zip(prepared, groups, splits)],
    }


def fill_unknown_patient_ids(prepared: Sequence[PreparedImage], groups: Sequence[int]) -> list[PreparedImage]:
    """Images whose patient is unknown get their split group as a stand-in id, so that every example names the
    unit that the splits keep apart."""
    return [p if p.source.patient_id else
            dataclasses.replace(p, source=dataclasses.replace(p.source, patient_id=f"near-duplicate-group-{g}"))
            for p, g in zip(prepared, groups)]


# --------------------------------------------------------------------------------------- TFDS builders

@dataclasses.dataclass
class ManualSourceConfig(tfds.core.BuilderConfig):
    """One plane of a hand-filled source. `class_aliases` maps each class to the names accepted for it."""

    plane: str = "axial"
    class_aliases: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_CLASS_ALIASES))
    preprocess: PreprocessConfig = PreprocessConfig()


@dataclasses.dataclass
class SplitSourceConfig(ManualSourceConfig):
    """A source split by patient or case; `split_fractions` are of each class's images."""

    near_duplicate_threshold: int = DEFAULT_THRESHOLD
    split_fractions: tuple[tuple[str, float], ...] = DEFAULT_SPLIT_FRACTIONS
    split_seed: int = 0


class ManualSourceBuilder(ProjectBuilder, skip_registration=True):
    """Common frame of the hand-filled sources: a subclass finds and splits the images (`_split_images`), this
    class writes them as the project's examples and their build report as the dataset's metadata.

    `strict=True` (the `--strict` of scripts/build_dataset.py) stops the build at the first unusable file instead
    of skipping it.
    """

    SOURCE = ""
    # One line: shown when the manual_dir is missing, empty or holds nothing usable.
    LAYOUT = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=examples.features(), metadata=tfds.core.MetadataDict())

    @abc.abstractmethod
    def _split_images(self, root: pathlib.Path, skipped: SkippedFiles) -> tuple[dict[str, list[PreparedImage]], dict]:
        """{split: images} and the source's own build report."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            root = pathlib.Path(dl_manager.manual_dir)
        except AssertionError:
            # TFDS's own message spreads the instructions over many lines; users get the one-line form.
            where = pathlib.Path(getattr(dl_manager, "_manual_dir", None) or "manual_dir")
            raise layout_error(where, self.LAYOUT, "a missing or empty folder") from None
        skipped = SkippedFiles(strict=self._strict)
        splits, report = self._split_images(root, skipped)
        if not any(splits.values()):
            raise layout_error(root, self.LAYOUT, f"no usable image ({len(skipped)} unreadable)")
        # TFDS cannot write a split without examples; a source too small to fill every split says so instead.
        empty = [name for name, images in splits.items() if not images]
        if empty:
            log.warning("%s/%s: too few patients or cases to fill split(s) %s", self.name, self.builder_config.name,
                        ", ".join(empty))
        per_split = {name: dict(sorted(collections.Counter(p.source.label for p in images).items()))
                     for name, images in splits.items() if images}
        self.info.metadata.update(report)
        self.info.metadata.update({
            "plane": self.builder_config.plane,
            "examples_per_split_and_class": per_split,
            "empty_splits_not_written": empty,
            "skipped_files": skipped.as_metadata(),
            "preprocess": dataclasses.asdict(self.builder_config.preprocess),
        })
        log.info("%s/%s: %s; %d file(s) skipped", self.name, self.builder_config.name, per_split, len(skipped))
        return {name: self._generate_examples(images) for name, images in splits.items() if images}

    def _generate_examples(self, images: Sequence[PreparedImage]):
        for image in images:
            yield image.key, {
                "image": image.png,
                "label": image.source.label,
                "patient_id": image.source.patient_id or "",
                "source": self.SOURCE,
                "plane": image.source.plane,
                "attribution": image.source.attribution,
            }


def split_prepared(prepared: Sequence[PreparedImage], config: SplitSourceConfig) -> tuple[dict[str, list], dict]:
    """Groups, splits and reports: {split: images} with stand-in ids for unknown patients, and the grouping
    report for the metadata."""
    groups = split_groups(prepared, threshold=config.near_duplicate_threshold)
    names = assign_splits(groups, [p.source.label for p in prepared], fractions=config.split_fractions,
                          seed=config.split_seed)
    report = grouping_report(prepared, groups, names, threshold=config.near_duplicate_threshold)
    splits: dict[str, list[PreparedImage]] = {name: [] for name, _ in config.split_fractions}
    for image, name in zip(fill_unknown_patient_ids(prepared, groups), names):
        splits[name].append(image)
    return splits, report
