"""Speed of the real training program (asemble_jax/train/trainer.py:training_program, what scripts/train.py runs:
the same config, model, optimiser and data-parallel wrapper) and of its prediction step, per model, preset and
input size: step time, images/s, compile time with an empty and with a warm persistent compilation cache, and,
where the device's peak is known, model FLOPs utilisation.

Every measurement runs in a fresh process (the number of simulated CPU devices is fixed when JAX starts, and a
fresh process is what a compilation cache is for), twice: first with an empty cache directory, then with the
cache that run filled. Inputs are random images held on the device, so the input pipeline is not timed
(asemble_jax/data/pipeline_benchmark.py times it). Steps are dispatched asynchronously, as in training, and the
clock stops when the last one has finished. The forward pass is the evaluation's prediction step (evaluation
mode, class probabilities) on the same batch with the trained weights, timed the same way.

MFU = model FLOPs per second / the device's dense bfloat16 peak (PEAK_TFLOPS below, from the vendors' data
sheets, or an explicit peak), with model FLOPs per image = 3 x the forward pass's FLOPs counted by XLA (forward +
backward ~ 3 forwards, the usual convention; the optimiser update is not counted). A float32 run is also reported
against the bfloat16 peak, so it shows what the switch to bfloat16 could gain. CPUs have no entry (no meaningful
peak), so no MFU unless a peak is given.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

from asemble_jax import atomic_io
from asemble_jax.errors import UserError

PEAK_TFLOPS = {  # dense bfloat16 per device (a TPU device is one chip; v2/v3 chips show as two cores)
    "NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H100": 989.4, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.4,
    "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA L4": 121.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5": 459.0, "TPU v6 lite": 918.0,
}
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(_PACKAGE_PARENT, "ablations", "base.py")


class BenchmarkError(UserError):
    """A measurement that could not be made (its process failed)."""


def peak_tflops(device_kind: str, override: float | None) -> float | None:
    if override:
        return override
    # The longest known name that starts the device's name: "NVIDIA H100 80GB HBM3" before "NVIDIA H100".
    matches = [kind for kind in PEAK_TFLOPS if device_kind.startswith(kind)]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


def benchmark_config(model: str, preset: str, *, size: int = 0, batch: int = 32, dtype: str = "float32"):
    """ablations/base.py's config of `model` and `preset` at global batch `batch` (input size: the preset's where
    `size` is 0)."""
    from asemble_jax.config import apply_overrides, load_config

    config = load_config(f"{CONFIG}:model={model},preset={preset}")
    return apply_overrides(config, {"global_batch_size": batch, "model.dtype": dtype,
                                    "data.image_size": size or config.data.image_size})


def random_batch(batch: int, size: int, seed: int = 0) -> dict:
    """A fixed batch of random single-channel images and binary labels, on the host."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(batch, size, size, 1)).astype(np.float32),
            "label": rng.integers(0, 2, batch).astype(np.int32)}


def _timed(call: Callable, carry, steps: int):
    """(seconds of the first, compiling call; mean seconds of the next `steps` calls, dispatched asynchronously;
    the last carry and output). `call(carry) -> (carry, output)`."""
    import jax

    start = time.perf_counter()
    carry, output = call(carry)
    jax.block_until_ready(output)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        carry, output = call(carry)
    jax.block_until_ready(output)
    return first_s, (time.perf_counter() - start) / steps, carry, output


def call_times(call: Callable[[], object], steps: int, warmup: int = 1) -> tuple[float, list[float]]:
    """(seconds of the first call, seconds of each of the `steps` calls after `warmup` more). `call` must wait
    for its own result; no JAX here, so the PyTorch side of scripts/benchmark_cpu_vs_torch.py times with it too."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, times


def _timed_each(call: Callable, carry, steps: int):
    """Like _timed, but every step is waited for: (first call's seconds, each of the `steps` steps' seconds after
    one more warm-up step, carry, output)."""
    import jax

    last = [carry, None]

    def step():
        last[:] = call(last[0])
        jax.block_until_ready(last[1])

    first_s, times = call_times(step, steps)
    return first_s, times, last[0], last[1]


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(model: str, preset: str, *, size: int = 0, batch: int = 32, steps: int = 10, dtype: str = "float32",
            cache_dir: str | None = None, peak_tflops_per_device: float | None = None, each_step: bool = False,
            forward: bool = True) -> dict:
    """One measurement in this process: the training step (first call, then `steps` timed steps), then, if
    `forward`, the prediction step with the weights that training left. `each_step`: after one more warm-up
    step, every step is waited for and step_s is the median of the `steps` (listed in step_times_s)."""
    import jax
    from flax import nnx

    from asemble_jax.models import count_parameters
    from asemble_jax.models.registry import forward_gflops
    from asemble_jax.train.trainer import enable_compilation_cache, training_program
    from asemble_jax.workdir import build_model

    if steps < 1:
        raise BenchmarkError(f"steps must be at least 1, got {steps}")
    config = benchmark_config(model, preset, size=size, batch=batch, dtype=dtype)
    size = config.data.image_size
    enable_compilation_cache(cache_dir)
    cache_entries_before = len(os.listdir(cache_dir)) if cache_dir else None

    start = time.perf_counter()
    program = training_program(config)
    state = program.dp.put_state(program.state)
    data = program.dp.put_batch(random_batch(batch, size))
    setup_s = time.perf_counter() - start
    step_times = None
    if each_step:
        first_step_s, step_times, state, metrics = _timed_each(lambda s: program.train_step(s, data), state, steps)
        step_s = statistics.median(step_times)
    else:
        first_step_s, step_s, state, metrics = _timed(lambda s: program.train_step(s, data), state, steps)
    loss = float(jax.device_get(metrics["loss"]))

    forward_first_s = forward_s = None
    if forward:
        weights, images = state.weights(use_ema=config.ema_decay > 0), {"image": data["image"]}
        forward_first_s, forward_s, _, _ = _timed(lambda c: (c, program.predict_fn(weights, images)), None, steps)

    device = jax.devices()[0]
    # An abstract model: counting needs shapes only, not a second copy of the weights on the device.
    abstract = nnx.eval_shape(lambda: build_model(config))
    gflops = forward_gflops(abstract, size)
    images_per_second = batch / step_s
    model_tflops_per_second = 3 * gflops * images_per_second / 1e3
    peak = peak_tflops(device.device_kind, peak_tflops_per_device)
    return {
        "model": model, "preset": preset, "size": size, "dtype": dtype, "batch": batch,
        "parameters": count_parameters(abstract), "devices": jax.device_count(), "platform": device.platform,
        "device_kind": device.device_kind, "parallel": config.parallel, "cache_entries_before": cache_entries_before,
        "setup_s": setup_s, "compile_and_first_step_s": first_step_s, "steps": steps, "step_s": step_s,
        "step_times_s": step_times, "images_per_second": images_per_second, "forward_first_call_s": forward_first_s,
        "forward_s": forward_s, "forward_images_per_second": batch / forward_s if forward_s else None,
        "forward_gflops_per_image": gflops, "peak_rss_mb": peak_rss_mb(),
        "model_tflops_per_second": model_tflops_per_second, "peak_tflops_per_device": peak,
        "mfu": model_tflops_per_second / (peak * jax.device_count()) if peak else None, "final_loss": loss,
        "load_average_1min": round(os.getloadavg()[0], 1), "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def measurements(models: Sequence[str], presets: Sequence[str], sizes: Sequence[int] = (0,)) -> list[tuple]:
    """(model, preset, size) to measure, in order (size 0: the preset's). A baseline's presets are one
    architecture, so at a given input size it is measured once."""
    from asemble_jax.models import model_arguments

    chosen, seen = [], set()
    for model in models:
        for preset in presets:
            for size in sizes:
                try:
                    arguments = model_arguments(model, preset)
                except ValueError as error:  # an unknown model or preset
                    raise BenchmarkError(str(error)) from None
                size = size or benchmark_config(model, preset).data.image_size
                key = (model, repr(sorted(arguments.items())), size)
                if key not in seen:
                    seen.add(key)
                    chosen.append((model, preset, size))
    return chosen


def in_fresh_process(function: str, arguments: dict, *, what: str, python: str = sys.executable,
                     env: dict[str, str] | None = None) -> dict:
    """`module:function`(**arguments) in a fresh `python` process with `env` added to its environment; its
    result is the JSON object it prints last."""
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))
    module, name = function.split(":")
    program = f"import json, sys; from {module} import {name}; " \
              f"print(json.dumps({name}(**json.loads(sys.argv[1]))), flush=True)"
    finished = subprocess.run([python, "-c", program, json.dumps(arguments)], env=env, capture_output=True,
                              text=True)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    if finished.returncode or not lines:
        last = (finished.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchmarkError(f"{what}: exit status {finished.returncode}: {last}")
    return json.loads(lines[-1])


def measure_in_fresh_process(devices: int | None, *, env: dict[str, str] | None = None, **arguments) -> dict:
    """measure(**arguments) in a fresh process with `devices` simulated CPU devices (None: the real devices) and
    `env` added to its environment."""
    env = dict(env or {})
    if devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", os.environ.get("XLA_FLAGS", "")).split()
                 if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    return in_fresh_process("asemble_jax.benchmark:measure", arguments, env=env,
                            what=f"{arguments['model']} {arguments['preset']} on {devices or 'all'} device(s)")


def benchmark(models: Sequence[str], presets: Sequence[str], sizes: Sequence[int] = (0,), *, batch: int = 32,
              steps: int = 10, dtype: str = "float32", simulated_devices: Sequence[int] | None = None,
              peak_tflops_per_device: float | None = None, report: Callable[[dict], None] = print) -> list[dict]:
    """One row per measurement and device count: the warm-cache run, with the cold run's compile and step time."""
    if steps < 1:
        raise BenchmarkError(f"steps must be at least 1, got {steps}")
    rows = []
    for model, preset, size in measurements(models, presets, sizes):
        for devices in simulated_devices or [None]:
            with tempfile.TemporaryDirectory(prefix="benchmark_training_cache_") as cache_dir:
                arguments = dict(model=model, preset=preset, size=size, batch=batch, steps=steps, dtype=dtype,
                                 cache_dir=cache_dir, peak_tflops_per_device=peak_tflops_per_device)
                cold = measure_in_fresh_process(devices, **arguments)
                warm = measure_in_fresh_process(devices, **arguments)
            row = {**warm, "cold_compile_s": cold["compile_and_first_step_s"], "cold_step_s": cold["step_s"]}
            report(json.dumps(row))
            rows.append(row)
    return rows


def render(rows: list[dict], command: str) -> str:
    first = rows[0]
    lines = [
        "# Training and inference speed",
        "",
        f"`{command}`",
        "",
        f"{first['platform']} ({first['device_kind']}; {os.cpu_count()} CPU cores visible, "
        f"{platform.processor() or platform.machine()}), JAX {first['jax']}, {time.strftime('%Y-%m-%d')}. "
        "scripts/train.py's training step (AdamW, clipping, label smoothing, no weight decay on norms, biases and "
        f"embeddings, BatchNorm synchronised over devices, `{first['parallel']}` wrapper) on random images held on the "
        "device; the global batch is split over the devices. Step time: mean over the timed steps after the first. "
        "Compile: the first step's wall time, in a fresh process with an empty persistent compilation cache (cold) "
        "and again with the cache it filled (warm). Forward: the evaluation's prediction step on the same batch, "
        "timed the same way. Model FLOPs = 3 x the forward pass (XLA's count); MFU against the device's dense "
        "bfloat16 peak. The 1-minute load average is shown: on a shared machine treat times as upper bounds.",
        "",
        "| model | preset | input | dtype | params | devices | global batch | step (s) | images/s "
        "| compile cold / warm (s) | forward (s) | images/s (forward) | model TFLOP/s | MFU | load |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['model']} | {r['preset']} | {r['size']}x{r['size']} | {r['dtype']} | "
                     f"{r['parameters']:,} | {r['devices']} | {r['batch']} | {r['step_s']:.3f} | "
                     f"{r['images_per_second']:.1f} | {r['cold_compile_s']:.1f} / "
                     f"{r['compile_and_first_step_s']:.1f} | {r['forward_s']:.3f} | "
                     f"{r['forward_images_per_second']:.1f} | {r['model_tflops_per_second']:.3f} | {mfu} | "
                     f"{r['load_average_1min']} |")
    return "\n".join(lines) + "\n"


def write(out: str | os.PathLike, rows: list[dict], command: str) -> None:
    """The Markdown table at `out` and every row's numbers beside it (.json)."""
    if not rows:
        raise BenchmarkError("nothing was measured")
    out = os.fspath(out)
    atomic_io.write_text(out, render(rows, command))
    atomic_io.write_text(os.path.splitext(out)[0] + ".json", json.dumps(rows, indent=1) + "\n")


def depthwise_conv_rows(shapes: Sequence[tuple[int, int, int, int]], kernel: int = 7, steps: int = 20) -> list[dict]:
    """For each NHWC input shape, a stride-1 `kernel` x `kernel` depthwise convolution ("SAME") through lax's
    grouped convolution and through asemble_jax.models.cpu_convolution: compile seconds of forward + both
    gradients, and median milliseconds of the forward, the input gradient, the weight gradient and all three."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    from asemble_jax.models import cpu_convolution

    def grouped(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])

    def shifted(x, k):
        return cpu_convolution.depthwise(x, k, "SAME")

    rows = []
    for shape in shapes:
        rng = np.random.default_rng(0)
        x, g = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))
        k = jnp.asarray(rng.normal(size=(kernel, kernel, 1, shape[-1])), jnp.float32)
        for name, conv in (("lax grouped convolution", grouped), ("shifted multiply-adds", shifted)):
            parts = {"forward": lambda x, k, g, conv=conv: conv(x, k),
                     "input gradient": lambda x, k, g, conv=conv: jax.vjp(lambda a: conv(a, k), x)[1](g),
                     "weight gradient": lambda x, k, g, conv=conv: jax.vjp(lambda b: conv(x, b), k)[1](g),
                     "all three": lambda x, k, g, conv=conv: _value_and_pullback(conv, x, k, g)}
            row = {"shape": list(shape), "kernel": kernel, "implementation": name}
            for part, function in parts.items():
                start = time.perf_counter()
                compiled = jax.jit(function).lower(x, k, g).compile()
                compile_s = time.perf_counter() - start
                _, times = call_times(lambda: jax.block_until_ready(compiled(x, k, g)), steps)
                row[part + " ms"] = 1e3 * statistics.median(times)
                if part == "all three":
                    row["compile s"] = compile_s
            rows.append(row)
    return rows


def _value_and_pullback(function, x, k, g):
    """The forward value and both gradients, so that neither is left out of the compiled program."""
    import jax

    value, pullback = jax.vjp(function, x, k)
    return value, pullback(g)


def render_depthwise(rows: list[dict], command: str) -> str:
    import jax

    parts = ("forward ms", "input gradient ms", "weight gradient ms", "all three ms", "compile s")
    lines = ["# Depthwise convolution on the CPU: lax's grouped convolution against shifted multiply-adds", "",
             f"`{command}`", "",
             f"{jax.devices()[0].platform}, {os.cpu_count()} CPU cores visible, JAX {jax.__version__}, "
             f"{time.strftime('%Y-%m-%d')}, 1-minute load average {os.getloadavg()[0]:.1f} at the end. Float32, "
             "stride 1, SAME padding; median of the timed calls after one warm-up, each call waited for; compile: "
             "forward and both gradients in one program.", "",
             "| input (NHWC) | kernel | implementation | " + " | ".join(parts) + " |",
             "|---|---:|---|" + "---:|" * len(parts)]
    for r in rows:
        lines.append(f"| {'x'.join(map(str, r['shape']))} | {r['kernel']}x{r['kernel']} | {r['implementation']} | "
                     + " | ".join(f"{r[part]:.2f}" for part in parts) + " |")
    return "\n".join(lines) + "\n"
