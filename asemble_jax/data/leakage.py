"""Leakage between the splits of built datasets, and between datasets: the same image, or the same patient, on both
sides of a split boundary (scripts/check_leakage.py).

Every stored image is hashed (the DCT pHash of asemble_jax.data.near_duplicates) and two images are near-duplicates
when their hashes differ in at most `threshold` bits. Findings:
- near-duplicates in two different splits of one dataset;
- near-duplicates in two different datasets, whatever their splits: the same case can sit in ASAS and
  Radiopaedia, and the same person in a hospital set and a teaching library;
- one patient or case id in two splits of one dataset.

Built images are compared as stored, after the body crop; the builders also compare images before cropping, which
catches copies that the crop framed differently, so this check can miss such a pair that a build would not.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

from asemble_jax.data.builders import get_builder
from asemble_jax.data.examples import decode_png
from asemble_jax.data.near_duplicates import DEFAULT_THRESHOLD, hash_hex, near_duplicate_pairs, perceptual_hash
from asemble_jax.errors import InputError, first_line

# Rows per Markdown table: enough to act on; the JSON report always holds every finding.
MARKDOWN_ROWS = 200


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stored example: where it is and what it shows."""

    dataset: str
    split: str
    index: int
    patient_id: str
    phash: int

    def describe(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "index": self.index, "patient_id": self.patient_id,
                "phash": hash_hex(self.phash)}


def read_entries(dataset: str, data_dir: str, splits: Sequence[str] | None = None) -> list[Entry]:
    """Every example of the named splits (all if None) of a built dataset; InputError if it is not built under
    data_dir."""
    try:
        builder = get_builder(dataset, data_dir=data_dir)
    except (ValueError, KeyError) as error:
        raise InputError(dataset, first_line(error)) from None
    if not builder.is_prepared():
        raise InputError(os.path.join(data_dir, dataset), "not built here; build it with scripts/build_dataset.py")
    entries = []
    for split in sorted(s for s in builder.info.splits if splits is None or s in splits):
        for index, record in enumerate(builder.as_data_source(split)):
            patient_id = record["patient_id"]
            entries.append(Entry(dataset=dataset, split=split, index=index,
                                 patient_id=patient_id.decode() if isinstance(patient_id, bytes) else str(patient_id),
                                 phash=perceptual_hash(decode_png(record["image"]))))
    return entries


def near_duplicate_findings(entries: Sequence[Entry], threshold: int) -> list[dict]:
    """Near-duplicate pairs in different splits of one dataset or in different datasets."""
    findings = []
    for i, j, distance in near_duplicate_pairs([e.phash for e in entries], threshold=threshold):
        a, b = entries[i], entries[j]
        if a.dataset != b.dataset:
            kind = "near-duplicate across datasets"
        elif a.split != b.split:
            kind = "near-duplicate across splits"
        else:
            continue
        findings.append({"kind": kind, "distance_bits": distance, "a": a.describe(), "b": b.describe()})
    return findings


def shared_patient_findings(entries: Iterable[Entry]) -> list[dict]:
    """Patient or case ids found in more than one split of one dataset."""
    splits_of: dict[tuple[str, str], set[str]] = {}
    for entry in entries:
        if entry.patient_id:
            splits_of.setdefault((entry.dataset, entry.patient_id), set()).add(entry.split)
    return [{"kind": "patient in several splits", "dataset": dataset, "patient_id": patient_id,
             "splits": sorted(splits)}
            for (dataset, patient_id), splits in sorted(splits_of.items()) if len(splits) > 1]


def check(datasets: Sequence[str], data_dir: str, threshold: int = DEFAULT_THRESHOLD,
          splits: Sequence[str] | None = None) -> dict:
    """The full report: what was scanned and every finding."""
    entries = [entry for dataset in dict.fromkeys(datasets) for entry in read_entries(dataset, data_dir, splits)]
    scanned = {}
    for entry in entries:
        counts = scanned.setdefault(entry.dataset, {})
        counts[entry.split] = counts.get(entry.split, 0) + 1
    findings = near_duplicate_findings(entries, threshold) + shared_patient_findings(entries)
    return {"data_dir": data_dir, "threshold_bits": threshold, "examples": scanned, "findings": findings}


def markdown(report: dict) -> str:
    lines = ["# Leakage check", "",
             f"Data dir `{report['data_dir']}`; near-duplicates: pHash within {report['threshold_bits']} bits.", "",
             "| dataset | examples per split |", "|---|---|"]
    for dataset, counts in report["examples"].items():
        lines.append(f"| {dataset} | {', '.join(f'{split} {n}' for split, n in sorted(counts.items()))} |")
    findings = report["findings"]
    lines += ["", f"**{len(findings)} finding(s).**" if findings else "**No leakage found.**"]
    pairs = [f for f in findings if "a" in f]
    if pairs:
        lines += ["", "| finding | bits | image A | image B |", "|---|---|---|---|"]
        for finding in pairs[:MARKDOWN_ROWS]:
            a, b = (f"{x['dataset']} {x['split']} #{x['index']} (patient {x['patient_id'] or '?'})"
                    for x in (finding["a"], finding["b"]))
            lines.append(f"| {finding['kind']} | {finding['distance_bits']} | {a} | {b} |")
        lines += _left_out(len(pairs))
    patients = [f for f in findings if "a" not in f]
    if patients:
        lines += ["", "| dataset | patient | splits |", "|---|---|---|"]
        lines += [f"| {f['dataset']} | {f['patient_id']} | {', '.join(f['splits'])} |"
                  for f in patients[:MARKDOWN_ROWS]]
        lines += _left_out(len(patients))
    return "\n".join(lines) + "\n"


def _left_out(count: int) -> list[str]:
    return [f"\n... and {count - MARKDOWN_ROWS} more in the JSON report"] if count > MARKDOWN_ROWS else []
