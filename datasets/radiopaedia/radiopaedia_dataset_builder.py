"""radiopaedia: normal sacroiliac MRI from Radiopaedia.org cases, added to the healthy class.

Radiopaedia cases carry their own licences (mostly CC BY-NC-SA), which ask for credit: the user lists each saved
image in cases.csv (file, case_id, plane, url, author, licence; see README.md) and every example carries the credit
line built from it. Splits keep each case, and near-duplicate images, whole.
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from asemble_jax.data import manual_sources as ms
from asemble_jax.data.build_log import SkippedFiles

CASES_CSV = "cases.csv"
ATTRIBUTION_COLUMNS = ("case_id", "url", "author", "licence")


def attribution(case_id: str, url: str, author: str, licence: str) -> str:
    """Credit line in Radiopaedia's own form ("Case courtesy of ..., Radiopaedia.org, rID: ...")."""
    return f"Case courtesy of {author}, Radiopaedia.org, rID: {case_id}, {url}, licence: {licence}"


class Builder(ms.ManualSourceBuilder):
    """Radiopaedia normal MRI, healthy class."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [ms.SplitSourceConfig(name=plane, plane=plane, description=f"{plane} images")
                       for plane in ("axial", "coronal")]
    SOURCE = "radiopaedia"
    LAYOUT = ("<manual_dir>/cases.csv with columns file, case_id, plane, url, author, licence (file relative to "
              "manual_dir; plane axial or coronal) and the images it lists (.png .jpg .tif .dcm)")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Save normal cases from Radiopaedia.org under their licence terms and describe them as
    {LAYOUT}.
    See datasets/radiopaedia/README.md.
    """

    def _split_images(self, root: pathlib.Path, skipped: SkippedFiles):
        config = self.builder_config
        table = ms.read_table_for_plane(root, CASES_CSV, ATTRIBUTION_COLUMNS, config.plane, layout=self.LAYOUT,
                                        skipped=skipped)
        images = [ms.SourceImage(path=path, label="healthy", plane=config.plane, patient_id=row.values["case_id"],
                                 attribution=attribution(*(row.values[c] for c in ATTRIBUTION_COLUMNS)))
                  for row, path in table.rows]
        prepared = ms.prepare_images(images, root, config.preprocess, skipped)
        splits, report = ms.split_prepared(prepared, config)
        report.update(table.report(), cases=len({image.patient_id for image in images}))
        return splits, report
