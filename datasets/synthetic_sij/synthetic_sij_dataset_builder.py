"""synthetic_sij: the procedural sacroiliac-joint phantom of asemble_jax.data.phantom, preprocessed like real MRI.

Each phantom slice goes through asemble_jax.data.preprocess.preprocess (windowing, body crop, 256x256, CLAHE) with
its lesion mask, exactly as a real source would. Patients are numbered 0..N-1 in split order (train, then val, then
test) and odd-numbered patients are AS, so every split holds whole patients and, with an even patient count, as many
AS as healthy ones. The label is the patient's; the mask is the slice's (an AS slice that no lesion reaches has an
empty mask). Same seed and config -> the same bytes, whatever the machine or the order of generation.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from asemble_jax.data import examples, phantom
from asemble_jax.data.builders import ProjectBuilder
from asemble_jax.data.preprocess import preprocess

SOURCE = "synthetic_sij"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(eq=False)
class SyntheticSijConfig(tfds.core.BuilderConfig):
    """A phantom configuration, the seed and the number of patients in each split (a split with 0 is absent)."""

    phantom: phantom.PhantomConfig = phantom.PhantomConfig()
    seed: int = 2025
    train_patients: int = 104
    val_patients: int = 22
    test_patients: int = 24

    def patients(self) -> dict[str, range]:
        """Patient indices of each non-empty split, in the order the module docstring gives."""
        counts = {"train": self.train_patients, "val": self.val_patients, "test": self.test_patients}
        ranges, start = {}, 0
        for split in SPLITS:
            if counts[split] > 0:
                ranges[split] = range(start, start + counts[split])
            start += counts[split]
        return ranges


_SHIFTED = dict(contrast=phantom.SHIFTED_CONTRAST, noise=0.06, fov=1.25, bias=0.35, slices_per_patient=8)


class SyntheticSij(ProjectBuilder):
    """Phantom SIJ slices, healthy vs AS, with per-slice lesion masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Axial and coronal phantoms, shifted external-test stand-ins, patient-level splits."}
    BUILDER_CONFIGS = [
        SyntheticSijConfig(name="axial", description="Axial phantom, 150 patients x 10 slices.",
                           phantom=phantom.PhantomConfig(plane="axial")),
        SyntheticSijConfig(name="coronal", description="Semi-coronal phantom, 150 patients x 10 slices.",
                           phantom=phantom.PhantomConfig(plane="coronal")),
        SyntheticSijConfig(
            name="shifted", description="Stand-in external test set: coronal geometry with another contrast, "
            "more noise, a stronger bias field and a wider field of view; 30 patients x 8 slices, test only.",
            phantom=phantom.PhantomConfig(plane="coronal", **_SHIFTED),
            train_patients=0, val_patients=0, test_patients=30),
        SyntheticSijConfig(
            name="shifted_axial", description="The `shifted` stand-in external test set in the axial plane.",
            phantom=phantom.PhantomConfig(plane="axial", **_SHIFTED),
            train_patients=0, val_patients=0, test_patients=30),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config: SyntheticSijConfig = self.builder_config
        return self.dataset_info_from_configs(
            features=examples.features(
                with_mask=True,
                extra={
                    "slice_index": tfds.features.Scalar(np.int32, doc="position of the slice in its patient"),
                    "difficulty": tfds.features.Scalar(np.float32, doc="phantom difficulty knob, 0..1"),
                }),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(seed=config.seed, phantom=repr(config.phantom)),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {split: self._generate_examples(indices)
                for split, indices in self.builder_config.patients().items()}

    def _generate_examples(self, indices: range) -> Iterator[tuple[str, dict]]:
        config: SyntheticSijConfig = self.builder_config
        for index in indices:
            patient = phantom.generate_patient(config.seed, index, has_lesions=index % 2 == 1, config=config.phantom)
            patient_id = f"phantom-{config.name}-{index:04d}"
            for phantom_slice in patient.slices:
                key = f"{patient_id}/{phantom_slice.slice_index:02d}"
                prepared = preprocess(phantom_slice.image, mask=phantom_slice.mask, path=key)
                yield key, {
                    "image": examples.encode_png(prepared.image),
                    "mask": examples.encode_png(prepared.mask, "mask"),
                    "label": int(patient.has_lesions),
                    "patient_id": patient_id,
                    "source": SOURCE,
                    "plane": config.phantom.plane,
                    "attribution": "",
                    "slice_index": phantom_slice.slice_index,
                    "difficulty": config.phantom.difficulty,
                }
