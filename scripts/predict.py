r"""Classifies image files with a trained workdir and writes a Grad-CAM overlay for each.

    python scripts/predict.py --workdir=DIR FILE [FILE ...] [--out=DIR] [--which=best] [--slice=all]

Files: PNG, JPEG, TIFF, DICOM (any file name) and NIfTI (.nii, .nii.gz). They are read and preprocessed exactly
as scripts/gradcam.py reads them (asemble_jax.user_inputs.load_slices: asemble_jax.data.readers, then the training
preprocessing of asemble_jax.data.preprocess, then the evaluation input conversion
asemble_jax.data.pipeline.to_model_input), so the model sees what it saw in evaluation. The model classifies
2-D slices: a volume (NIfTI, multi-frame DICOM, multi-page TIFF) gives one prediction per slice, every slice by
default (NIfTI slice k is vol[:, :, k] shown superior-up, as the builders store it), or only slice K (0-based)
with --slice=K. One line per slice on stdout:

    scan.nii.gz slice 12: inflammation (p=0.912), Grad-CAM: OUT/scan.nii.gz_slice12_gradcam.png

the class is the most probable one, p its probability, and the overlay (written atomically under --out, default
WORKDIR/predictions) shows the Grad-CAM of that class: the fused map of all branches, or the only layer of a
single-branch model (asemble_jax/gradcam.py). Class names are those of the dataset the model was trained on.
A file that cannot be read or is not an image gets one line on stderr naming it and the reason; the other
files are still processed and the exit status is 1. Exit status 2: the workdir or an option is unusable.
Nothing from DICOM headers is printed or written: lines name files by the path given.
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import sys
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow_datasets as tfds

from asemble_jax import gradcam
from asemble_jax.errors import InputError, UserError
from asemble_jax.workdir import load_trained_model
from asemble_jax.user_inputs import Slice, batches, load_slices, slice_argument, write_png

EXIT_SOME_FILES_FAILED = 1
EXIT_UNUSABLE_SETUP = 2


def class_names(dataset: str, data_dir: str, num_classes: int) -> list[str]:
    """The label names of the training dataset when its prepared copy can be read, else "class K"."""
    try:
        names = list(tfds.builder(dataset, data_dir=data_dir).info.features["label"].names)
    except (tfds.core.DatasetNotFoundError, FileNotFoundError, KeyError, ValueError, AttributeError):
        names = []
    return names if len(names) == num_classes else [f"class {k}" for k in range(num_classes)]


def output_folders(paths: list[pathlib.Path], out: pathlib.Path) -> list[pathlib.Path]:
    """Where each file's outputs go: `out`, except that a later file with the name of an earlier one gets a
    subfolder of its own (same-name-2, -3, ...), so that no output overwrites another."""
    seen: collections.Counter[str] = collections.Counter()
    folders = []
    for path in paths:
        seen[path.name] += 1
        folders.append(out if seen[path.name] == 1 else out / f"same-name-{seen[path.name]}")
    return folders


def predict_batch(model, layers, batch, *, batch_size: int, names: list[str]) -> list[str]:
    """Classifies one batch of slices, writes each one's overlay, and returns one report line per slice. The
    batch is padded to batch_size so that every batch reuses one compiled computation."""
    images = np.zeros((batch_size, *batch[0].image.shape), np.float32)
    images[:len(batch)] = np.stack([item.image for item in batch])
    result = gradcam.grad_cam(model, images, layers)  # explains each slice's predicted class
    heatmaps = np.asarray(result.maps[gradcam.FUSED if gradcam.FUSED in result.maps else next(iter(layers))])
    probabilities = np.asarray(jax.nn.softmax(result.logits, axis=-1))
    lines = []
    for index, item in enumerate(batch):
        predicted = int(np.argmax(probabilities[index]))
        grey = np.uint8(np.round(item.image[..., 0] * 255))
        overlay_path = item.out_prefix.with_name(f"{item.out_prefix.name}_gradcam.png")
        write_png(overlay_path, gradcam.overlay(grey, heatmaps[index]))
        lines.append(f"{item.label}: {names[predicted]} (p={probabilities[index, predicted]:.3f}), "
                     f"Grad-CAM: {overlay_path}")
    return lines


def run(model, files: list[pathlib.Path], *, out: pathlib.Path, image_size: int, names: list[str],
        slice_index: int | None = None, batch_size: int = 16) -> int:
    """Predicts every slice of every file; the exit status (0, or EXIT_SOME_FILES_FAILED)."""
    layers = gradcam.model_layers(model)
    failed = 0

    def readable_slices() -> Iterator[Slice]:
        nonlocal failed
        for path, folder in zip(files, output_folders(files, out)):
            try:
                yield from load_slices(path, path, folder, image_size=image_size, slice_index=slice_index)
            except InputError as error:
                print(f"error: {error}", file=sys.stderr, flush=True)
                failed += 1

    for batch in batches(readable_slices(), batch_size):
        for line in predict_batch(model, layers, batch, batch_size=batch_size, names=names):
            print(line, flush=True)
    return EXIT_SOME_FILES_FAILED if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=pathlib.Path, help="a training workdir")
    parser.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE", help="image files to classify")
    parser.add_argument("--out", type=pathlib.Path, help="where overlays go; default WORKDIR/predictions")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="which checkpoint")
    parser.add_argument("--slice", type=slice_argument, default=None, dest="slice_index",
                        help="'all' (default) or the 0-based slice of volumes to classify")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        model, config, _ = load_trained_model(str(args.workdir), which=args.which)
        names = class_names(config.data.dataset, config.data.data_dir, config.model.num_classes)
        files = list(dict.fromkeys(args.files))  # a file named twice is predicted once
        return run(model, files, out=args.out or args.workdir / "predictions", image_size=config.data.image_size,
                   names=names, slice_index=args.slice_index, batch_size=args.batch_size)
    except (UserError, OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE_SETUP


if __name__ == "__main__":
    sys.exit(main())
