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
import pathlib
import sys
from collections.abc import Iterator

import jax
import numpy as np

from asemble_jax import gradcam
from asemble_jax.errors import InputError, UserError
from asemble_jax.workdir import load_trained_model
from asemble_jax.user_inputs import Slice, batches, input_files, load_slices, slice_argument, write_png

EXIT_SOME_INPUTS_FAILED = 1
EXIT_UNUSABLE_SETUP = 2


def _output(prefix: pathlib.Path, what: str) -> pathlib.Path:
    return prefix.with_name(f"{prefix.name}_{what}.png")


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
        write_png(_output(item.out_prefix, "input"), grey)
        for name, heatmaps in maps.items():
            write_png(_output(item.out_prefix, name), gradcam.overlay(grey, heatmaps[index]))
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

    for batch in batches(readable_slices(), batch_size):
        for line in write_overlays(model, layers, batch, batch_size=batch_size, target_class=target_class):
            print(line)
    return EXIT_SOME_INPUTS_FAILED if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=pathlib.Path, help="a training workdir")
    parser.add_argument("--input", required=True, type=pathlib.Path, help="an image file or a folder of them")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="where the PNGs go")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="which checkpoint")
    parser.add_argument("--slice", type=slice_argument, default=None, dest="slice_index",
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
    except (UserError, OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE_SETUP


if __name__ == "__main__":
    sys.exit(main())
