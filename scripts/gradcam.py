r"""Grad-CAM overlays of a trained model on image files.

    python scripts/gradcam.py --workdir=DIR --input=FILE_OR_DIR --out=DIR [--which=best] [--slice=all]
        [--target-class=K] [--batch-size=16]

Inputs: PNG, JPEG, TIFF, DICOM (any file name; a folder of DICOM slices is read file by file) and NIfTI
(.nii, .nii.gz). A folder is searched recursively, hidden files skipped. Every slice goes through the training
preprocessing (asemble_jax.data.preprocess) and is resized and scaled as evaluation does
(asemble_jax.data.pipeline.to_model_input). Volumes (NIfTI, multi-frame DICOM, multi-page TIFF) give every slice,
or only slice K (0-based, in the reader's order) with --slice=K.

For each slice, under --out, mirroring the input's folders: <name>_input.png (what the model saw), one overlay
per Grad-CAM layer (<name>_wide_resnet.png, _convnext.png, _vit.png for ASembleNet; _last_conv.png for a
baseline) and, with several layers, <name>_fused.png. <name> is the file name (with its extension, so that
a.png and a.jpg stay apart), plus _sliceK for volumes. The maps explain the predicted class, or class K with
--target-class=K; asemble_jax/gradcam.py defines them. Files are written atomically. A file that cannot be used
gets one line on stderr naming it and the reason; the others are still processed, and the exit status is 1
(2 when the workdir, the input path or an option is unusable). Nothing from DICOM headers is printed or written.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from collections.abc import Iterator

import cv2
import jax
import numpy as np

from asemble_jax import atomic_io, gradcam
from asemble_jax.data.errors import InputError
from asemble_jax.data.pipeline import to_model_input
from asemble_jax.data.preprocess import preprocess
from asemble_jax.data.readers import read_image, read_nifti_volume
from asemble_jax.train.trainer import TrainingError, load_trained_model

NIFTI_SUFFIXES = (".nii.gz", ".nii")
EXIT_SOME_INPUTS_FAILED = 1
EXIT_UNUSABLE_SETUP = 2


@dataclasses.dataclass(frozen=True)
class Slice:
    label: str  # the file, and the slice for volumes, as report lines name it
    out_prefix: pathlib.Path  # <out>/<folders>/<name>; files are <out_prefix>_<what>.png
    image: np.ndarray  # (size, size, 1) float32 in [0, 1], the model's input


def input_files(root: pathlib.Path) -> list[pathlib.Path]:
    if root.is_dir():
        return sorted(path for path in root.rglob("*")
                      if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts))
    if root.exists():
        return [root]
    raise InputError(root, "no such file or folder")


def _raw_slices(path: pathlib.Path, slice_index: int | None) -> list[tuple[int | None, np.ndarray]]:
    """(slice number, or None for a 2-D image; raw 2-D values) for each slice of `path` that is asked for."""
    is_nifti = path.name.lower().endswith(NIFTI_SUFFIXES)
    raw = read_nifti_volume(path) if is_nifti else read_image(path)
    if raw.ndim == 2:
        return [(None, raw)]
    if slice_index is None:
        return list(enumerate(raw))
    if slice_index >= raw.shape[0]:
        raise InputError(path, f"has {raw.shape[0]} slices, so no slice {slice_index} (slices count from 0)")
    return [(slice_index, raw[slice_index])]


def load_slices(path: pathlib.Path, root: pathlib.Path, out: pathlib.Path, *, image_size: int,
                slice_index: int | None) -> list[Slice]:
    """Every requested slice of one file, preprocessed as in training; InputError if the file cannot be used."""
    relative = path.relative_to(root) if root.is_dir() else pathlib.Path(path.name)
    slices = []
    for index, raw in _raw_slices(path, slice_index):
        image = preprocess(raw, path=str(path)).image
        label, suffix = (str(path), "") if index is None else (f"{path} slice {index}", f"_slice{index}")
        slices.append(Slice(label, out / relative.parent / f"{path.name}{suffix}",
                            to_model_input(image, image_size)))
    return slices


def _batches(slices: Iterator[Slice], batch_size: int) -> Iterator[list[Slice]]:
    batch = []
    for item in slices:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _output(prefix: pathlib.Path, what: str) -> pathlib.Path:
    return prefix.with_name(f"{prefix.name}_{what}.png")


def _write_png(path: pathlib.Path, rgb_or_grey: np.ndarray) -> None:
    image = rgb_or_grey if rgb_or_grey.ndim == 2 else cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2BGR)
    encoded, data = cv2.imencode(".png", image)
    if not encoded:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    with atomic_io.atomic_open(path, "wb") as handle:
        handle.write(data.tobytes())


def write_overlays(model, layers: dict[str, gradcam.CamLayer], batch: list[Slice], *, batch_size: int,
                   target_class: int | None) -> list[str]:
    """Grad-CAM of one batch of slices, written next to each slice's out_prefix; one report line per slice.
    The batch is padded to batch_size so that every batch reuses one compiled computation."""
    images = np.zeros((batch_size, *batch[0].image.shape), np.float32)
    images[:len(batch)] = np.stack([item.image for item in batch])
    result = gradcam.grad_cam(model, images, layers, target_class=target_class)
    maps = {name: np.asarray(heatmaps) for name, heatmaps in result.maps.items()}
    probabilities = np.asarray(jax.nn.softmax(result.logits, axis=-1))
    explained = np.asarray(result.target_class)
    lines = []
    for index, item in enumerate(batch):
        grey = np.uint8(np.round(item.image[..., 0] * 255))
        _write_png(_output(item.out_prefix, "input"), grey)
        for name, heatmaps in maps.items():
            _write_png(_output(item.out_prefix, name), gradcam.overlay(grey, heatmaps[index]))
        predicted = int(np.argmax(probabilities[index]))
        lines.append(f"{item.label}: predicted class {predicted} (p={probabilities[index, predicted]:.3f}), map of "
                     f"class {explained[index]} -> {item.out_prefix}_*.png")
    return lines


def run(model, *, image_size: int, input_path: pathlib.Path, out: pathlib.Path, slice_index: int | None,
        target_class: int | None, batch_size: int) -> int:
    """Overlays for every file under input_path; the exit status (0, or EXIT_SOME_INPUTS_FAILED)."""
    layers = gradcam.model_layers(model)
    failed = 0

    def readable_slices() -> Iterator[Slice]:
        nonlocal failed
        for path in input_files(input_path):
            try:
                yield from load_slices(path, input_path, out, image_size=image_size, slice_index=slice_index)
            except InputError as error:
                print(f"error: {error}", file=sys.stderr)
                failed += 1

    for batch in _batches(readable_slices(), batch_size):
        for line in write_overlays(model, layers, batch, batch_size=batch_size, target_class=target_class):
            print(line)
    return EXIT_SOME_INPUTS_FAILED if failed else 0


def _slice_argument(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"--slice must be 'all' or a slice number >= 0, got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=pathlib.Path, help="a training workdir")
    parser.add_argument("--input", required=True, type=pathlib.Path, help="an image file or a folder of them")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="where the PNGs go")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="which checkpoint")
    parser.add_argument("--slice", type=_slice_argument, default=None, dest="slice_index",
                        help="'all' (default) or the 0-based slice of volumes to explain")
    parser.add_argument("--target-class", type=int, default=None, help="explain this class instead of the "
                        "predicted one")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        model, config, _ = load_trained_model(str(args.workdir), which=args.which)
        if args.target_class is not None and not 0 <= args.target_class < config.model.num_classes:
            raise ValueError(f"--target-class must be in 0..{config.model.num_classes - 1}, the classes of the "
                             f"model in {args.workdir}, got {args.target_class}")
        return run(model, image_size=config.data.image_size, input_path=args.input, out=args.out,
                   slice_index=args.slice_index, target_class=args.target_class, batch_size=args.batch_size)
    except (TrainingError, InputError, OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE_SETUP


if __name__ == "__main__":
    sys.exit(main())
