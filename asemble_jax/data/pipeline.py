"""Input pipeline: grain over TFDS random-access sources, for training (infinite, shuffled, mixed, augmented)
and evaluation (finite, padded, every example exactly once across processes).

Training stream, in order:
1. each source is shuffled (a different permutation every epoch) and repeated forever;
2. the sources are interleaved deterministically in proportion to their weights (grain's `MapDataset.mix`);
3. every element is decoded, resized to the model's input size like preprocessing resizes (area down, cubic up;
   masks nearest) and augmented with a generator seeded by (seed, its position in this global stream): each
   epoch of each source draws fresh augmentations, and none depends on the worker or process count;
4. process p keeps global positions p, p + P, p + 2P, ... and batches them by global_batch_size / P, so local
   batch k of every process is a disjoint part of the same global batch k;
5. batching happens before grain's worker slicing, so a batch's content does not depend on `worker_count`
   either, and the iterator state (`get_state()`, a small JSON-serialisable dict) is a batch counter.

Batches are dicts of NumPy arrays: "image" float32 (B, S, S, 1) in [0, 1] with S = image_size (default 256),
"label" int32 (B,), and "lesion_mask" uint8 (B, S, S, 1) with values 0/1 when the records carry a mask (in
training, only when every mixed source does). Evaluation batches add "valid" bool, "index" int64 (position in
the source, -1 for padding) and "patient_id" (NumPy str).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import cv2
import grain
import numpy as np
from absl import flags
import tensorflow_datasets as tfds

from asemble_jax.data import augment as augmentation
from asemble_jax.data.augment import AugmentConfig
from asemble_jax.errors import InputError, first_line
from asemble_jax.data.examples import IMAGE_SIZE, decode_png
from asemble_jax.data.preprocess import resize_to

Record = Mapping[str, Any]
Batch = dict[str, np.ndarray]

# Seed domains, so that the shuffle of source 1 and the augmentation of stream position 1 never share a seed.
_SHUFFLE_DOMAIN = 0
_AUGMENT_DOMAIN = 1

# Batches are large (a 32-image batch is 8 MiB): a few per reading thread keep the accelerator fed.
_BATCHES_PREFETCHED_PER_THREAD = 2

# worker_count=AUTO_WORKERS: default_worker_count() of this host.
AUTO_WORKERS = -1
# One H100-class GPU at the paper preset needs ~16-23 workers at 40% MFU (an estimate from FLOPs,
# results/performance/pipeline.md); each worker is a process of a few hundred MB, so a many-core host does not
# start one per core.
MAX_DEFAULT_WORKERS = 32


def default_worker_count(cpu_count: int | None = None) -> int:
    """Grain worker processes for a host with `cpu_count` usable cores (default: this process's): one per core
    but one, which the training loop keeps; none on two cores or fewer, where decoding in the training process's
    own reading threads were as fast or faster than worker processes, which also take seconds to start and
    compete with XLA for the cores (0, 1 and 2 workers on 2 cores: results/performance/pipeline.md)."""
    if cpu_count is None:
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cpu_count <= 2 else min(cpu_count - 1, MAX_DEFAULT_WORKERS)


def open_source(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Sequence[Record]:
    """Random-access source of one prepared split, e.g. `open_source("synthetic_sij/coronal", "train", data_dir)`.

    Never builds or downloads anything: a dataset that is not prepared (as array_record) under `data_dir` is an
    InputError naming where it was looked for.
    """
    where = os.path.join(os.fspath(data_dir) if data_dir is not None else "<default TFDS data_dir>", name)
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (tfds.core.DatasetNotFoundError, NotImplementedError, FileNotFoundError, AssertionError) as error:
        raise InputError(where, f"no prepared array_record dataset here, build it first ({first_line(error)})") \
            from None
    except ValueError as error:
        raise InputError(where, f"cannot read split {split!r}: {first_line(error)}") from None


def _has_mask(source: Sequence[Record]) -> bool:
    return "mask" in source[0]


def _image(record: Record, size: int) -> np.ndarray:
    """(size, size) uint8 image of a record, resized the way preprocessing resizes (area down, cubic up)."""
    return resize_to(decode_png(record["image"])[..., 0], size)


def _mask(record: Record, size: int) -> np.ndarray:
    return resize_to(decode_png(record["mask"])[..., 0], size, interpolation=cv2.INTER_NEAREST_EXACT)


def _unit_interval(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / np.float32(255))[..., None]


def to_model_input(image: np.ndarray, size: int) -> np.ndarray:
    """A preprocessed (H, W) uint8 slice as a model sees it in evaluation: resized the way preprocessing resizes
    (area down, cubic up) and scaled to [0, 1], (size, size, 1) float32. Tools that feed a model files (Grad-CAM,
    prediction) use this, so that they give it exactly what evaluation gave it."""
    return _unit_interval(resize_to(image, size))


@dataclasses.dataclass(frozen=True)
class _TrainExample:
    """Decodes, resizes and augments the record at one position of the global training stream."""

    seed: int
    augment: AugmentConfig | None
    with_mask: bool
    image_size: int

    def __call__(self, position: int, record: Record) -> Batch:
        image = _image(record, self.image_size)
        mask = _mask(record, self.image_size) if self.with_mask else None
        if self.augment is None:
            image = _unit_interval(image)
            mask = None if mask is None else mask[..., None]
        else:
            rng = np.random.default_rng([self.seed, _AUGMENT_DOMAIN, position])
            image, mask = augmentation.augment(image, self.augment, rng, mask=mask)
        example = {"image": image, "label": np.int32(record["label"])}
        if self.with_mask:
            example["lesion_mask"] = mask
        return example


def _check_image_size(image_size: int) -> None:
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")


def _check_sharding(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, process_count), got {process_index} of {process_count}")


def _read_options(read_threads: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=read_threads,
                             prefetch_buffer_size=max(1, read_threads) * _BATCHES_PREFETCHED_PER_THREAD)


def train_iterator(
    sources: Sequence[tuple[Sequence[Record], float]],
    *,
    global_batch_size: int,
    seed: int,
    augment: AugmentConfig | None = AugmentConfig(),
    image_size: int = IMAGE_SIZE,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    read_threads: int = 2,
) -> grain.DatasetIterator:
    """Infinite iterator of this process's training batches of global_batch_size / process_count examples.

    `sources` are (source, weight) pairs: e.g. [(elazig_train, 0.9), (radiopaedia_train, 0.1)] draws 9 elazig
    examples for every radiopaedia one. `worker_count` > 0 decodes and augments in that many grain processes
    (sources must then be picklable, as TFDS sources are), AUTO_WORKERS in `default_worker_count()`;
    `read_threads` are threads within each process.
    Save `iterator.get_state()` with a checkpoint and call `set_state` on a fresh iterator built with the same
    arguments to continue with exactly the same batches.
    """
    _check_sharding(process_index, process_count)
    if not sources:
        raise ValueError("train_iterator needs at least one (source, weight) pair")
    if any(weight <= 0 for _, weight in sources):
        raise ValueError(f"mixture weights must be positive, got {[weight for _, weight in sources]}")
    if any(len(source) == 0 for source, _ in sources):
        raise ValueError("every training source must hold at least one example")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} must be a positive multiple of process_count {process_count}")
    _check_image_size(image_size)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if worker_count == AUTO_WORKERS:
        worker_count = default_worker_count()
    elif worker_count < 0:
        raise ValueError(f"worker_count must be >= 0 or {AUTO_WORKERS} (this host's default), got {worker_count}")

    streams = [
        grain.MapDataset.source(source).shuffle(seed=_derived_seed(seed, _SHUFFLE_DOMAIN, i)).repeat()
        for i, (source, _) in enumerate(sources)
    ]
    mixed = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, [weight for _, weight in sources])
    with_mask = all(_has_mask(source) for source, _ in sources)
    examples = mixed.map_with_index(
        _TrainExample(seed=seed, augment=augment, with_mask=with_mask, image_size=image_size))
    local = examples.slice(slice(process_index, None, process_count))
    batches = local.batch(global_batch_size // process_count, drop_remainder=True)
    dataset = batches.to_iter_dataset(_read_options(read_threads))
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():
            # grain 0.2.18 reads an absl flag when starting workers and fails in programs that never parsed flags
            # (google/grain#1355, fixed upstream); the flags' defaults are what such a program wants.
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(dataset)


def _derived_seed(seed: int, domain: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, domain, stream]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class _EvalExample:
    """The j-th slot of one process's padded evaluation shard: source record process_index + j * process_count."""

    source: Sequence[Record]
    process_index: int
    process_count: int
    with_mask: bool
    image_size: int

    def __call__(self, slot: int) -> Batch:
        index = self.process_index + slot * self.process_count
        if index >= len(self.source):
            return self._padding()
        record = self.source[index]
        example = {
            "image": to_model_input(decode_png(record["image"])[..., 0], self.image_size),
            "label": np.int32(record["label"]),
            "valid": np.bool_(True),
            "index": np.int64(index),
            "patient_id": np.str_(text(record["patient_id"])),
        }
        if self.with_mask:
            example["lesion_mask"] = _mask(record, self.image_size)[..., None]
        return example

    def _padding(self) -> Batch:
        example = {
            "image": np.zeros((self.image_size, self.image_size, 1), np.float32),
            "label": np.int32(0),
            "valid": np.bool_(False),
            "index": np.int64(-1),
            "patient_id": np.str_(""),
        }
        if self.with_mask:
            example["lesion_mask"] = np.zeros((self.image_size, self.image_size, 1), np.uint8)
        return example


def text(value: bytes | str) -> str:
    """A stored Text feature as str (data sources return bytes)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def eval_batches(
    source: Sequence[Record],
    *,
    batch_size: int,
    image_size: int = IMAGE_SIZE,
    process_index: int = 0,
    process_count: int = 1,
    read_threads: int = 2,
) -> Iterator[Batch]:
    """Finite iterator over this process's share of `source`, in source order, padded to full batches.

    `batch_size` is per process. Process p gets records p, p + P, p + 2P, ...; every process yields the same number of batches (so that
    collective steps stay in lockstep) and padded slots have valid=False, so summing over valid entries of all
    processes counts every example exactly once.
    """
    _check_sharding(process_index, process_count)
    _check_image_size(image_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    largest_shard = math.ceil(len(source) / process_count)
    slots = math.ceil(largest_shard / batch_size) * batch_size
    with_mask = len(source) > 0 and _has_mask(source)
    examples = grain.MapDataset.range(slots).map(
        _EvalExample(source=source, process_index=process_index, process_count=process_count, with_mask=with_mask,
                     image_size=image_size))
    return iter(examples.batch(batch_size).to_iter_dataset(_read_options(read_threads)))
