"""asas: expert-annotated axial and coronal MRI from the ASAS Online Case Library, for external testing only.

The library is a login-only teaching site, so the user saves the images by hand and lists them in labels.csv
(file, case_id, plane, label); see README.md. There is only a `test` split, ever: these images must never reach
training or model selection. Every example credits the library and its case.
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from asemble_jax.data import manual_sources as ms
from asemble_jax.data.build_log import SkippedFiles
from asemble_jax.errors import InputError

LABELS_CSV = "labels.csv"
TEST_SPLIT = "test"


def attribution(case_id: str) -> str:
    return f"ASAS Online Case Library (Assessment of SpondyloArthritis international Society), case {case_id}"


class Builder(ms.ManualSourceBuilder):
    """ASAS Online Case Library images, external test set."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [ms.ManualSourceConfig(name=plane, plane=plane, description=f"{plane} images")
                       for plane in ("axial", "coronal")]
    SOURCE = "asas"
    LAYOUT = ("<manual_dir>/labels.csv with columns file, case_id, plane, label (file relative to manual_dir; plane "
              "axial or coronal; label AS or healthy, or an alias) and the images it lists (.png .jpg .tif .dcm)")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    The ASAS Online Case Library needs a login; save the images you may use and describe them as
    {LAYOUT}.
    See datasets/asas/README.md.
    """

    def _split_images(self, root: pathlib.Path, skipped: SkippedFiles):
        config = self.builder_config
        classes = ms.class_aliases(config.class_aliases)
        table = ms.read_table_for_plane(root, LABELS_CSV, ("case_id", "label"), config.plane, layout=self.LAYOUT,
                                        skipped=skipped)
        images = []
        for row, path in table.rows:
            label = classes.get(row.values["label"])
            if label is None:
                skipped.skip(InputError(row.values["file"], f"{LABELS_CSV} line {row.line}: unknown label "
                                                            f"{row.values['label']!r} (expected {classes.describe()})"))
                continue
            case_id = row.values["case_id"]
            images.append(ms.SourceImage(path=path, label=label, plane=config.plane, patient_id=case_id,
                                         attribution=attribution(case_id)))
        prepared = ms.prepare_images(images, root, config.preprocess, skipped)
        report = {**table.report(), "class_aliases": classes.describe(),
                  "cases": len({image.patient_id for image in images})}
        return {TEST_SPLIT: prepared}, report
