"""elazig: axial and coronal MRI of AS patients and healthy controls (Elazig Fethi Sekin City Hospital, 2018-2023),
read from a folder the user fills by hand; see README.md for the layout.

Splits (train/val/test, class-stratified) keep every patient whole. Patient ids come from patients.csv, else from
a folder named like "patient_012"; images without one are grouped with their near-duplicates (perceptual hash) and
the groups are kept whole instead. A file that patients.csv lists without an id, or with two different ids, is
left out and reported, never given a guessed patient. The metadata records every file's group and split and what was ignored and why.
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from asemble_jax.data import manual_sources as ms
from asemble_jax.data.build_log import SkippedFiles


class Builder(ms.ManualSourceBuilder):
    """Elazig AS / healthy MRI from a hand-filled manual_dir."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [ms.SplitSourceConfig(name=plane, plane=plane, description=f"{plane} slices")
                       for plane in ("axial", "coronal")]
    SOURCE = "elazig"
    LAYOUT = ("<manual_dir>/<plane>/.../<class>/ images (.png .jpg .tif .dcm), plane 'axial' or 'coronal', class "
              "'AS' or 'healthy' or an alias ('AS diagnosis', 'Normal', 'control', ...), optional patients.csv")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    The Elazig set is not public. Put its images under manual_dir as
    {LAYOUT}.
    See datasets/elazig/README.md.
    """

    def _split_images(self, root: pathlib.Path, skipped: SkippedFiles):
        config = self.builder_config
        classes = ms.class_aliases(config.class_aliases)
        patients = ms.read_patient_ids(root, skipped)
        inventory = ms.scan_class_folders(root, config.plane, classes=classes, planes=ms.plane_aliases(),
                                          patient_ids=patients.ids, exclude=patients.left_out)
        if not inventory.images:
            raise ms.layout_error(root, self.LAYOUT, inventory.summary(config.plane))
        prepared = ms.prepare_images(inventory.images, root, config.preprocess, skipped)
        splits, report = ms.split_prepared(prepared, config)
        report.update({
            "files_per_class": inventory.counts(),
            "other_plane_images": inventory.other_plane_images,
            "ignored_files": inventory.ignored,
            "class_aliases": classes.describe(),
            "patient_id_from": dict(inventory.patient_id_from),
        })
        return splits, report
