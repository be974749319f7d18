"""Classifying and explaining user files with a trained model: per-slice class, probability and Grad-CAM, batched
at one fixed shape so one compiled program serves every batch.

One core serves every tool: `Classifier.explain_files` reads each file's slices (asemble_jax.user_inputs.iter_slices:
the training preprocessing and evaluation input conversion, within the readers' limits max_side, max_slices and
max_pixels), hands each file that cannot be used, and each slice that cannot be (no usable contrast, no finite
value), to `on_error` as one InputError (a `FileErrors` counts them and prints their lines) and goes on with the
others, pads every batch to `batch_size`, runs gradcam.grad_cam once per batch and yields one `SliceResult` per
slice: probabilities, the class its maps explain, and the maps. It writes and prints nothing, so that a server
can use it as it is. On top of it, `write_predictions` (scripts/predict.py) and `write_explanations`
(scripts/gradcam.py) write the PNGs and print one line per slice. Slices are named by the path given, never by
anything from DICOM headers.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import jax
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx

from asemble_jax import gradcam, storage
from asemble_jax.errors import InputError, UserError
from asemble_jax.data.readers import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DEFAULT_MAX_SLICES
from asemble_jax.user_inputs import Slice, batches, input_files, iter_slices, write_png
from asemble_jax.workdir import load_trained_model

EXIT_SOME_FILES_FAILED = 1
DEFAULT_BATCH_SIZE = 16


@dataclasses.dataclass(frozen=True)
class UserFile:
    """A file to read; its outputs go under `out`, mirroring the folders between `root` (a folder, or the file
    itself) and `path`."""

    path: pathlib.Path
    root: pathlib.Path
    out: pathlib.Path


@dataclasses.dataclass(frozen=True)
class SliceResult:
    slice: Slice
    probabilities: np.ndarray  # (classes,) float32, softmax of the logits
    explained_class: int  # the class the maps explain: the predicted one unless a target class was given
    maps: dict[str, np.ndarray]  # layer name (and gradcam.FUSED for several layers) -> (H, W) float32 in [0, 1]

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.predicted])

    @property
    def map(self) -> np.ndarray:
        """The one map that sums the model up: the fused one, or the only layer of a single-branch model."""
        return self.maps.get(gradcam.FUSED, next(iter(self.maps.values())))

    @property
    def grey(self) -> np.ndarray:
        """What the model saw, as an (H, W) uint8 image."""
        return np.uint8(np.round(self.slice.image[..., 0] * 255))


class FileErrors:
    """An `on_error` that counts the inputs (files, or slices of a volume) that could not be used and, if `echo`,
    prints each one's line on stderr as it comes."""

    def __init__(self, *, echo: bool = True):
        self.errors: list[InputError] = []
        self.echo = echo

    def __call__(self, error: InputError) -> None:
        self.errors.append(error)
        if self.echo:
            print(f"error: {error}", file=sys.stderr, flush=True)

    def exit_status(self) -> int:
        return EXIT_SOME_FILES_FAILED if self.errors else 0


def class_names(config) -> list[str]:
    """The label names of the dataset the model was trained on when its prepared copy can be read, else
    "class K"."""
    num_classes, dataset, names = config.model.num_classes, config.data.get("dataset"), []
    try:
        if dataset:
            names = list(tfds.builder(dataset, data_dir=config.data.get("data_dir")).info.features["label"].names)
    except (tfds.core.DatasetNotFoundError, FileNotFoundError, KeyError, ValueError, AttributeError):
        pass
    return names if len(names) == num_classes else [f"class {k}" for k in range(num_classes)]


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return batch_size


class Classifier:
    """A model ready to classify and explain slices, `batch_size` at a time."""

    def __init__(self, model: nnx.Module, *, image_size: int, num_classes: int, names: Sequence[str] | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        self.model, self.image_size, self.num_classes = model, image_size, num_classes
        self.names = list(names) if names is not None else [f"class {k}" for k in range(num_classes)]
        self.batch_size = _check_batch_size(batch_size)
        self.layers = gradcam.model_layers(model)

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike, *, which: str = "best",
                     batch_size: int = DEFAULT_BATCH_SIZE) -> Classifier:
        _check_batch_size(batch_size)  # before the model is loaded
        model, config, _ = load_trained_model(os.fspath(workdir), which=which)
        return cls(model, image_size=config.data.image_size, num_classes=config.model.num_classes,
                   names=class_names(config), batch_size=batch_size)

    def check_target_class(self, target_class: int | None) -> int | None:
        if target_class is not None and not 0 <= target_class < self.num_classes:
            raise UserError(f"target_class must be in 0..{self.num_classes - 1}, the classes of the model, "
                            f"got {target_class}")
        return target_class

    def explain(self, slices: Iterable[Slice], *, target_class: int | None = None) -> Iterator[SliceResult]:
        """One result per slice, in order; the maps explain `target_class`, or each slice's predicted class."""
        return self._explain(slices, self.check_target_class(target_class))

    def _explain(self, slices: Iterable[Slice], target_class: int | None) -> Iterator[SliceResult]:
        for batch in batches(slices, self.batch_size):
            # Padded to batch_size: every batch runs the one program compiled for that shape.
            images = np.zeros((self.batch_size, *batch[0].image.shape), np.float32)
            images[:len(batch)] = np.stack([item.image for item in batch])
            result = gradcam.grad_cam(self.model, images, self.layers, target_class=target_class)
            maps = {name: np.asarray(heatmaps) for name, heatmaps in result.maps.items()}
            probabilities = np.asarray(jax.nn.softmax(result.logits, axis=-1))
            explained = np.asarray(result.target_class)
            for index, item in enumerate(batch):
                yield SliceResult(item, probabilities[index], int(explained[index]),
                                  {name: heatmaps[index] for name, heatmaps in maps.items()})

    def explain_files(self, files: Iterable[UserFile], *, on_error: Callable[[InputError], None],
                      slice_index: int | None = None, target_class: int | None = None,
                      max_side: int = DEFAULT_MAX_SIDE, max_slices: int = DEFAULT_MAX_SLICES,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[SliceResult]:
        """explain() of every slice of every file (only slice `slice_index` of volumes, if given); each file that
        cannot be used (over a limit, unreadable) goes to on_error once, as does each slice that cannot be (no
        usable contrast, no finite value), and the others are still explained. The limits are the readers'
        (asemble_jax.data.readers), checked from each file's header before its pixels are decoded."""
        target_class = self.check_target_class(target_class)
        limits = {"max_side": max_side, "max_slices": max_slices, "max_pixels": max_pixels}

        def readable_slices() -> Iterator[Slice]:
            for file in files:
                try:
                    yield from iter_slices(file.path, file.root, file.out, image_size=self.image_size,
                                           slice_index=slice_index, on_slice_error=on_error, **limits)
                except InputError as error:
                    on_error(error)

        return self._explain(readable_slices(), target_class)


def given_files(paths: Iterable[pathlib.Path], out: pathlib.Path) -> list[UserFile]:
    """The files named, each once, with their outputs in `out`, except that a later file with the name of an
    earlier one gets a subfolder of its own (same-name-2, -3, ...), so that no output overwrites another."""
    seen: collections.Counter[str] = collections.Counter()
    files = []
    for path in dict.fromkeys(map(pathlib.Path, paths)):
        seen[path.name] += 1
        files.append(UserFile(path, path, out if seen[path.name] == 1 else out / f"same-name-{seen[path.name]}"))
    return files


def files_under(root: pathlib.Path, out: pathlib.Path) -> list[UserFile]:
    """`root` itself, or every file below the folder `root` (user_inputs.input_files), outputs mirrored in `out`."""
    root = pathlib.Path(root)
    return [UserFile(path, root, storage.as_path(out)) for path in input_files(root)]


def _png(prefix: pathlib.Path, what: str) -> pathlib.Path:
    return prefix.with_name(f"{prefix.name}_{what}.png")


def write_predictions(classifier: Classifier, paths: Iterable[pathlib.Path], *, out: pathlib.Path,
                      slice_index: int | None = None, max_side: int = DEFAULT_MAX_SIDE,
                      max_slices: int = DEFAULT_MAX_SLICES, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """scripts/predict.py: per slice, the overlay of result.map at <prefix>_gradcam.png and the line
    '<label>: <class name> (p=P), Grad-CAM: <overlay>'; the exit status (0, or EXIT_SOME_FILES_FAILED if a file or
    slice could not be used); the limits are explain_files'."""
    errors = FileErrors()
    for result in classifier.explain_files(given_files(paths, out), on_error=errors, slice_index=slice_index,
                                           max_side=max_side, max_slices=max_slices, max_pixels=max_pixels):
        overlay_path = _png(result.slice.out_prefix, "gradcam")
        write_png(overlay_path, gradcam.overlay(result.grey, result.map))
        print(f"{result.slice.label}: {classifier.names[result.predicted]} (p={result.probability:.3f}), "
              f"Grad-CAM: {overlay_path}", flush=True)
    return errors.exit_status()


def write_explanations(classifier: Classifier, input_path: pathlib.Path, *, out: pathlib.Path,
                       slice_index: int | None = None, target_class: int | None = None,
                       max_side: int = DEFAULT_MAX_SIDE, max_slices: int = DEFAULT_MAX_SLICES,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """scripts/gradcam.py: per slice, <prefix>_input.png and one overlay per map, <prefix>_<map>.png, and the line
    '<label>: predicted class K (p=P), map of class C -> <prefix>_*.png'; the exit status (0, or
    EXIT_SOME_FILES_FAILED if a file or slice could not be used); the limits are explain_files'."""
    classifier.check_target_class(target_class)
    errors = FileErrors()
    for result in classifier.explain_files(files_under(input_path, out), on_error=errors, slice_index=slice_index,
                                           target_class=target_class, max_side=max_side, max_slices=max_slices,
                                           max_pixels=max_pixels):
        prefix, grey = result.slice.out_prefix, result.grey
        write_png(_png(prefix, "input"), grey)
        for name, heatmap in result.maps.items():
            write_png(_png(prefix, name), gradcam.overlay(grey, heatmap))
        print(f"{result.slice.label}: predicted class {result.predicted} (p={result.probability:.3f}), map of "
              f"class {result.explained_class} -> {prefix}_*.png", flush=True)
    return errors.exit_status()
