"""Times the forward pass and the training step of every ASembleNet preset (or other registered models) on this
machine's default backend, and writes results/models/benchmark.md (and .json).

    python scripts/benchmark_models.py [--sizes 64 128 256] [--batch 16] [--steps 3] [--dtype float32]
                                       [--models asemblenet] [--presets tiny small paper]

Each measurement is the median wall time of --steps calls after one compiling call (reported separately).
Forward: evaluation mode, logits only. Training step: cross-entropy, nnx.value_and_grad,
optax.adamw update, BatchNorm statistics updated, all under one nnx.jit. Inputs are random
and fixed; the model is built at each input size (image_size = size, which the ViT position embedding needs).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from asemble_jax import atomic_io, provenance
from asemble_jax.models import count_parameters, create_model, model_arguments


def build(name: str, preset: str, size: int, dtype) -> nnx.Module:
    overrides = {"dtype": dtype}
    if "image_size" in model_arguments(name, preset):
        overrides["image_size"] = size
    # One compiled program with a counter-free PRNG: eager construction compiles each initializer per shape.
    return nnx.jit(lambda: create_model(name, preset, rngs=nnx.Rngs(jax.random.key(0, impl="unsafe_rbg")),
                                        **overrides))()


@nnx.jit
def forward(model, images):
    return model(images)[0]


@nnx.jit
def train_step(model, optimizer, images, labels):
    def loss_fn(model):
        logits, _ = model(images, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, gradients = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, gradients)
    return loss


def timed(call, steps: int) -> tuple[float, float]:
    """(seconds of the first, compiling call; median seconds of the next `steps` calls)."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def measure(name: str, preset: str, size: int, batch: int, steps: int, dtype) -> dict:
    model = build(name, preset, size, dtype)
    images = jax.random.normal(jax.random.key(1), (batch, size, size, 1), jnp.float32)
    labels = jax.random.randint(jax.random.key(2), (batch,), 0, 2)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    forward_compile, forward_s = timed(lambda: forward(model, images), steps)
    train_compile, train_s = timed(lambda: train_step(model, optimizer, images, labels), steps)
    return {"model": name, "preset": preset, "size": size, "batch": batch, "steps": steps,
            "load_average_1min": round(os.getloadavg()[0], 1),
            "dtype": jnp.dtype(dtype).name, "parameters": count_parameters(model), "forward_s": forward_s,
            "forward_first_call_s": forward_compile, "train_step_s": train_s, "train_first_call_s": train_compile}


def render(results: list[dict], command: str) -> str:
    device = jax.devices()[0]
    lines = [
        "# Model speed",
        "",
        f"`{command}` on {device.platform} ({device.device_kind}; {os.cpu_count()} CPU cores visible, "
        f"{platform.processor() or platform.machine()}), JAX {jax.__version__}. Median of `steps` calls after the "
        "first (compiling) call; the first call's time is shown too. The machine's 1-minute load average at the end "
        "of each measurement is shown: on a CPU shared with other work, treat the times as upper bounds.",
        "",
        "| model | preset | input | batch | dtype | params | forward (s) | train step (s) | images/s (train) "
        "| first forward / train call (s) | load |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(f"| {r['model']} | {r['preset']} | {r['size']}x{r['size']} | {r['batch']} | {r['dtype']} | "
                     f"{r['parameters']:,} | {r['forward_s']:.3f} | {r['train_step_s']:.3f} | "
                     f"{r['batch'] / r['train_step_s']:.1f} | {r['forward_first_call_s']:.1f} / "
                     f"{r['train_first_call_s']:.1f} | {r['load_average_1min']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["asemblenet"])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/models/benchmark.md"))
    args = parser.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    results = []
    measured = set()
    for name in args.models:
        for preset in args.presets:
            for size in args.sizes:
                # A baseline's presets are one architecture (only the config's input size differs): time it once.
                key = (name, repr(sorted(model_arguments(name, preset).items())), size)
                if key in measured:
                    continue
                measured.add(key)
                result = measure(name, preset, size, args.batch, args.steps, dtype)
                print(json.dumps(result), flush=True)
                results.append(result)
    atomic_io.write_text(args.out, render(results, provenance.command_line(__file__, argv)))
    atomic_io.write_text(args.out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
