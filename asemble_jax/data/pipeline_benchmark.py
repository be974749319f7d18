"""Throughput of the training input path, in images per second on one CPU core (scripts/benchmark_pipeline.py).

Three measurements, each on one core (OpenCV's own threads off, grain's reading threads off), in images per
second of CPU time (what one dedicated core delivers) and of wall time (lower on a busy shared machine):
- augment: `augment` on decoded uint8 images with their lesion masks (the issue's target: >= 1,000 images/s);
- decode+augment: PNG decoding of image and mask, then augment: one training example's whole CPU cost;
- pipeline: `train_iterator` batches of 32, i.e. decode+augment plus grain's shuffling, mixing and batching.
A pipeline with N worker processes scales these by at most N cores. Each number is the best of `repeats` runs.

`worker_rates` measures that scaling: images per second of wall time of the whole pipeline at each grain worker
count (worker processes started and two batches drawn before the clock starts; their start-up time is reported
apart), with the default two reading threads per process, as training runs it.
"""
from __future__ import annotations

import time
from typing import Sequence

import cv2
import numpy as np

from asemble_jax.data.augment import AugmentConfig, augment
from asemble_jax.data.examples import IMAGE_SIZE, decode_png, encode_png
from asemble_jax.data.pipeline import train_iterator

BATCH_SIZE = 32


def stand_in_records(count: int, seed: int = 0) -> list[dict]:
    """Smooth body-like blobs with Rician-like noise: PNG decoding cost depends on noise, so plain shapes would
    flatter the decode+augment number."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    records = []
    for index in range(count):
        body = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
        for _ in range(6):
            y, x = rng.uniform(40, IMAGE_SIZE - 40, 2)
            radius = rng.uniform(15, 60)
            body += rng.uniform(60, 160) * np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * radius**2))
        noisy = np.hypot(body + rng.normal(0, 8, body.shape), rng.normal(0, 8, body.shape))
        image = np.clip(noisy, 0, 255).astype(np.uint8)
        mask = (body > np.percentile(body, 97)).astype(np.uint8)
        records.append({"image": encode_png(image), "mask": encode_png(mask, "mask"), "label": index % 2,
                        "patient_id": f"stand-in-{index}".encode()})
    return records


def long_stand_in_source() -> list[dict]:
    """A stand-in source as long as a real one: grain's index shuffle costs far more per element on tiny sources
    (about 250 us at 64 records, 30 us at 1,000), which would misstate the pipeline's overhead."""
    return stand_in_records(128) * 8


def best_rates(run, images: int, repeats: int) -> dict[str, int]:
    """Images per second of wall time and per second of this process's CPU time, best of `repeats` runs.

    The runs are single-threaded, so CPU time is the time of one core: on a shared machine it excludes the time
    that other processes held the core, which wall time counts.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {"per_cpu_second": round(images / best_cpu), "per_wall_second": round(images / best_wall)}


def pipeline_throughput(records: Sequence[dict], *, images: int = 1024, repeats: int = 5,
                        source: str = "stand-in") -> dict:
    """The three rates on `records` (each run handles `images` images), with what was measured."""
    cv2.setNumThreads(1)
    count = min(images, len(records))
    picked = [records[i % len(records)] for i in range(images)]
    has_mask = "mask" in picked[0]
    decoded = [(decode_png(r["image"]), decode_png(r["mask"]) if has_mask else None) for r in picked[:count]]
    config = AugmentConfig()

    def augment_only():
        for i in range(images):
            image, mask = decoded[i % count]
            augment(image, config, np.random.default_rng(i), mask=mask)

    def decode_and_augment():
        for i, record in enumerate(picked):
            mask = decode_png(record["mask"]) if has_mask else None
            augment(decode_png(record["image"]), config, np.random.default_rng(i), mask=mask)

    def pipeline():
        iterator = train_iterator([(records, 1.0)], global_batch_size=BATCH_SIZE, seed=0, read_threads=0)
        for _ in range(images // BATCH_SIZE):
            next(iterator)

    return {
        "source": source,
        "image_size": IMAGE_SIZE,
        "with_mask": has_mask,
        "augment": best_rates(augment_only, images, repeats),
        "decode_augment": best_rates(decode_and_augment, images, repeats),
        "pipeline": best_rates(pipeline, images // BATCH_SIZE * BATCH_SIZE, repeats),
    }


def worker_rates(records: Sequence[dict], worker_counts: Sequence[int], *, images: int = 1024,
                 image_size: int = IMAGE_SIZE) -> list[dict]:
    """Images per second of wall time of `train_iterator` batches at each of `worker_counts` grain workers, and
    the seconds until its first two batches (worker start-up)."""
    cv2.setNumThreads(1)
    rows = []
    for workers in worker_counts:
        start = time.perf_counter()
        iterator = train_iterator([(records, 1.0)], global_batch_size=BATCH_SIZE, seed=0, image_size=image_size,
                                  worker_count=workers)
        try:
            for _ in range(2):
                next(iterator)
            started = time.perf_counter()
            batches = images // BATCH_SIZE
            for _ in range(batches):
                next(iterator)
            elapsed = time.perf_counter() - started
        finally:
            iterator.close()  # stops its worker processes before the next count starts its own
        rows.append({"workers": workers, "image_size": image_size, "startup_s": round(started - start, 1),
                     "images_per_second": round(batches * BATCH_SIZE / elapsed)})
    return rows
