"""Throughput of the training input path at 256x256, in images per second on one CPU core.

    python scripts/benchmark_pipeline.py                      # stand-in MRI-like images, under a minute
    python scripts/benchmark_pipeline.py --dataset synthetic_sij/coronal --data_dir data/tfds

Three numbers, each measured on one core (OpenCV's own threads off, grain's reading threads off):
- augment: `augment` on decoded uint8 images with their lesion masks (the issue's target: >= 1,000 images/s);
- decode+augment: PNG decoding of image and mask, then augment: one training example's whole CPU cost;
- pipeline: `train_iterator` batches of 32, i.e. decode+augment plus grain's shuffling, mixing and batching.
A pipeline with N worker processes scales these by at most N cores. Each number is the best of --repeats timed
runs, because other processes on a shared machine only ever slow a run down.
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from asemble_jax.data.augment import AugmentConfig, augment
from asemble_jax.data.examples import IMAGE_SIZE, decode_png, encode_png
from asemble_jax.data.pipeline import open_source, train_iterator

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


def best_rate(run, images: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="prepared TFDS dataset to read instead of stand-in images, e.g. "
                                          "synthetic_sij/coronal")
    parser.add_argument("--split", default="train")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--images", type=int, default=1024, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    records = open_source(args.dataset, args.split, args.data_dir) if args.dataset else stand_in_records(256)
    count = min(args.images, len(records))
    picked = [records[i % len(records)] for i in range(args.images)]
    has_mask = "mask" in picked[0]
    decoded = [(decode_png(r["image"]), decode_png(r["mask"]) if has_mask else None) for r in picked[:count]]
    config = AugmentConfig()

    def augment_only():
        for i in range(args.images):
            image, mask = decoded[i % count]
            augment(image, config, np.random.default_rng(i), mask=mask)

    def decode_and_augment():
        for i, record in enumerate(picked):
            mask = decode_png(record["mask"]) if has_mask else None
            augment(decode_png(record["image"]), config, np.random.default_rng(i), mask=mask)

    def pipeline():
        iterator = train_iterator([(records, 1.0)], global_batch_size=BATCH_SIZE, seed=0, read_threads=0)
        for _ in range(args.images // BATCH_SIZE):
            next(iterator)

    results = {
        "source": args.dataset or "stand-in",
        "image_size": IMAGE_SIZE,
        "with_mask": has_mask,
        "augment_images_per_s_per_core": round(best_rate(augment_only, args.images, args.repeats)),
        "decode_augment_images_per_s_per_core": round(best_rate(decode_and_augment, args.images, args.repeats)),
        "pipeline_images_per_s_per_core": round(
            best_rate(pipeline, args.images // BATCH_SIZE * BATCH_SIZE, args.repeats)),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
