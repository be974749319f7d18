"""What the web tests share (loaded by path, as tests load scripts): a tiny trained workdir with an evaluation
report (so that the page has a threshold chosen on validation), the files they upload, and a real server
(scripts/serve.py under uvicorn) on a free loopback port (asemble_jax.web.benchmark.running_server)."""
import io
import os
import pathlib

import nibabel as nib
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from asemble_jax.config import load_config
from asemble_jax.data import examples
from asemble_jax.evaluation.evaluate import evaluate_workdir
from asemble_jax.train import trainer
from asemble_jax.web.benchmark import running_server  # noqa: F401  (the tests' real server)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATIENT_NAME, PATIENT_ID, BIRTH_DATE = "Testpatient^Secretname", "PID-7731-XQ", "19610203"
SECRET_FILE_NAME = "Doe_Jane_19610203_SIJ.png"


class WebToy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Healthy: noise. AS: noise plus a bright disc."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=examples.features())

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 32), "val": self._generate_examples(1, 16)}

    def _generate_examples(self, seed, count):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:256, :256]
        for i in range(count):
            image = rng.normal(90, 25, (256, 256))
            if i % 2:
                image[(yy - 128) ** 2 + (xx - 128) ** 2 < 40 ** 2] += 110
            yield i, {"image": examples.encode_png(np.clip(image, 0, 255).astype(np.uint8)), "label": i % 2,
                      "patient_id": f"toy-{seed}-{i // 2}", "source": "toy", "plane": "coronal", "attribution": ""}


def trained_workdir(tmp_path_factory, *, evaluate: bool = True) -> pathlib.Path:
    """8 steps of the tiny preset on the toy (tests/test_predict.py's workdir too), then, if `evaluate`, an
    evaluation report in WORKDIR/eval with the Youden threshold of the validation split."""
    data_dir = tmp_path_factory.mktemp("tfds")
    WebToy(data_dir=str(data_dir), file_format="array_record").download_and_prepare(file_format="array_record")
    config = load_config(f"{ROOT / 'ablations' / 'base.py'}:model=asemblenet,preset=tiny,dataset=web_toy")
    config.data.data_dir = str(data_dir)
    config.data.augment = False
    config.global_batch_size = 16
    config.total_steps = 8
    config.warmup_steps = 2
    config.eval_every = config.checkpoint_every = config.log_every = 8
    config.compilation_cache_dir = os.environ["JAX_COMPILATION_CACHE_DIR"]
    path = tmp_path_factory.mktemp("workdir")
    trainer.train_and_evaluate(config, str(path), progress=False)
    if not evaluate:
        return path
    # The toy has no test split: the report of val carries the threshold chosen on val, as any report does.
    evaluate_workdir(str(path), split="val", n_resamples=20)
    return path


def body(shape=(120, 100), seed=0, disc=True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]]
    inside = (y - shape[0] / 2) ** 2 + (x - shape[1] / 2) ** 2 < (min(shape) / 3) ** 2
    return np.clip(60 + 120 * (inside if disc else 0) + rng.normal(0, 12, shape), 0, 255)


def raster_bytes(image: np.ndarray, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(image)).save(buffer, format=format, **options)
    return buffer.getvalue()


def tiff_pages(pages) -> bytes:
    buffer = io.BytesIO()
    frames = [Image.fromarray(np.uint8(page)) for page in pages]
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def dicom_bytes(pixels: np.ndarray, *, instance: int = 1, series_uid: str | None = None) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, BIRTH_DATE
    ds.SeriesInstanceUID = series_uid or "1.2.826.0.1.3680043.8.498.1"
    ds.InstanceNumber = instance
    stored = np.uint16(np.round(pixels * 16))
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def nifti_bytes(slices, *, compressed: bool) -> bytes:
    """(slices, H, W) as read back by read_nifti_volume: stored as vol[:, :, k] = flipud(slice k).T."""
    volume = np.stack([np.flipud(s).T for s in slices], axis=-1).astype(np.float32)
    image = nib.Nifti1Image(volume, np.eye(4))
    data = image.to_bytes()
    if compressed:
        import gzip
        return gzip.compress(data)
    return data
