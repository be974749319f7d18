r"""Training throughput of the real training step (scripts/train.py's: the same config, model, optimiser and
data-parallel wrapper): step time, images/s, compile time with an empty and with a warm persistent compilation
cache, and, where the device's peak is known, model FLOPs utilisation.

    # this CPU: tiny and small presets on 1 device and on 8 simulated devices
    python scripts/benchmark_training.py --presets tiny small --simulated_devices 1 8 \
        --out results/training/benchmark_cpu.md
    # a GPU or TPU host: the paper preset in bfloat16 on every local device
    python scripts/benchmark_training.py --presets paper --dtype bfloat16 --batch 128 --steps 100 \
        --out results/training/benchmark_gpu.md

Every measurement runs in a fresh process (the number of simulated CPU devices is fixed when JAX starts, and a
fresh process is what a compilation cache is for), twice: first with an empty cache directory, then with the
cache that run filled. Inputs are random images held on the device, so the input pipeline is not timed
(scripts/benchmark_pipeline.py times it). Steps are dispatched asynchronously, as in training, and the clock
stops when the last one has finished.

MFU = model FLOPs per second / the device's dense bfloat16 peak (PEAK_TFLOPS below, from the vendors' data
sheets; --peak_tflops to override), with model FLOPs per image = 3 x the forward pass's FLOPs counted by XLA
(forward + backward ~ 3 forwards, the usual convention; the optimiser update is not counted). A float32 run is
also reported against the bfloat16 peak, so it shows what the switch to bfloat16 could gain. CPUs have no entry
(no meaningful peak), so no MFU unless --peak_tflops is given.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

PEAK_TFLOPS = {  # dense bfloat16 per device (a TPU device is one chip; v2/v3 chips show as two cores)
    "NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H100": 989.4, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.4,
    "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA L4": 121.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5": 459.0, "TPU v6 lite": 918.0,
}
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ablations", "base.py")


def peak_tflops(device_kind: str, override: float | None) -> float | None:
    if override:
        return override
    # The longest known name that starts the device's name: "NVIDIA H100 80GB HBM3" before "NVIDIA H100".
    matches = [kind for kind in PEAK_TFLOPS if device_kind.startswith(kind)]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


def measure(args) -> dict:
    """One measurement in this process: compile (timed), then args.steps timed steps."""
    import jax
    import numpy as np
    from flax import nnx

    from asemble_jax.models import registry
    from asemble_jax.config import load_config
    from asemble_jax.train.trainer import enable_compilation_cache, training_program
    from asemble_jax.workdir import build_model

    config = load_config(f"{CONFIG}:model={args.model},preset={args.preset}")
    config.global_batch_size, config.model.dtype = args.batch, args.dtype
    config.data.image_size = args.size or config.data.image_size
    enable_compilation_cache(args.cache_dir)
    cache_entries_before = len(os.listdir(args.cache_dir)) if args.cache_dir else None

    start = time.perf_counter()
    program = training_program(config)
    state = program.dp.put_state(program.state)
    size = config.data.image_size
    rng = np.random.default_rng(0)
    batch = program.dp.put_batch({"image": rng.normal(size=(args.batch, size, size, 1)).astype(np.float32),
                                  "label": rng.integers(0, 2, args.batch).astype(np.int32)})
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = program.train_step(state, batch)
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = program.train_step(state, batch)
    loss = float(jax.device_get(metrics["loss"]))
    step_s = (time.perf_counter() - start) / args.steps

    device = jax.devices()[0]
    # An abstract model: counting FLOPs needs shapes only, not a second copy of the weights on the device.
    forward_gflops = registry.forward_gflops(nnx.eval_shape(lambda: build_model(config)), size)
    images_per_second = args.batch / step_s
    model_tflops_per_second = 3 * forward_gflops * images_per_second / 1e3
    peak = peak_tflops(device.device_kind, args.peak_tflops)
    return {
        "model": args.model, "preset": args.preset, "size": size, "dtype": args.dtype, "batch": args.batch,
        "devices": jax.device_count(), "platform": device.platform, "device_kind": device.device_kind,
        "parallel": config.parallel, "cache_entries_before": cache_entries_before, "setup_s": setup_s,
        "compile_and_first_step_s": first_step_s, "steps": args.steps, "step_s": step_s,
        "images_per_second": images_per_second, "forward_gflops_per_image": forward_gflops,
        "model_tflops_per_second": model_tflops_per_second, "peak_tflops_per_device": peak,
        "mfu": model_tflops_per_second / (peak * jax.device_count()) if peak else None, "final_loss": loss,
        "load_average_1min": round(os.getloadavg()[0], 1), "jax": jax.__version__,
    }


def run_child(args, preset: str, devices: int | None, cache_dir: str) -> dict:
    """measure() in a fresh process with `devices` simulated CPU devices (None: the real devices)."""
    env = dict(os.environ)
    if devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, os.path.abspath(__file__), "--child", f"--model={args.model}", f"--preset={preset}",
               f"--size={args.size or 0}", f"--batch={args.batch}", f"--steps={args.steps}", f"--dtype={args.dtype}",
               f"--cache_dir={cache_dir}", f"--peak_tflops={args.peak_tflops or 0}"]
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    if finished.returncode or not lines:
        last = (finished.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{preset} on {devices or 'all'} device(s): exit status {finished.returncode}: {last}")
    return json.loads(lines[-1])


def render(rows: list[dict], command: str) -> str:
    first = rows[0]
    lines = [
        "# Training throughput",
        "",
        f"`{command}`",
        "",
        f"{first['platform']} ({first['device_kind']}; {os.cpu_count()} CPU cores visible, "
        f"{platform.processor() or platform.machine()}), JAX {first['jax']}, {time.strftime('%Y-%m-%d')}. "
        "scripts/train.py's training step (AdamW, label smoothing, BatchNorm synchronised over devices, "
        f"`{first['parallel']}` wrapper) on random images held on the device; the global batch is split over the "
        "devices. Step time: mean over the timed steps after the first. Compile: the first step's wall time, in "
        "a fresh process with an empty persistent compilation cache (cold) and again with the cache it filled "
        "(warm). Model FLOPs = 3 x the forward pass (XLA's count); MFU against the device's dense bfloat16 peak. "
        "The 1-minute load average is shown: on a shared machine treat times as upper bounds.",
        "",
        "| preset | input | dtype | devices | global batch | step (s) | images/s | compile cold / warm (s) "
        "| model TFLOP/s | MFU | load |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['preset']} | {r['size']}x{r['size']} | {r['dtype']} | {r['devices']} | {r['batch']} | "
                     f"{r['step_s']:.3f} | {r['images_per_second']:.1f} | {r['cold_compile_s']:.1f} / "
                     f"{r['compile_and_first_step_s']:.1f} | {r['model_tflops_per_second']:.3f} | {mfu} | "
                     f"{r['load_average_1min']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="asemblenet")
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--size", type=int, default=0, help="input size; default: the preset's")
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the compiling one")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--simulated_devices", nargs="+", type=int,
                        help="CPU only: run once per count of simulated devices; default: the real devices")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="per device; default: PEAK_TFLOPS")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/training/benchmark.md"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)), flush=True)
        return 0

    from asemble_jax import atomic_io, provenance

    rows = []
    for preset in args.presets:
        for devices in args.simulated_devices or [None]:
            with tempfile.TemporaryDirectory(prefix="benchmark_training_cache_") as cache_dir:
                try:
                    cold = run_child(args, preset, devices, cache_dir)
                    warm = run_child(args, preset, devices, cache_dir)
                except RuntimeError as error:
                    print(f"error: {error}", file=sys.stderr)
                    return 2
            row = {**warm, "cold_compile_s": cold["compile_and_first_step_s"], "cold_step_s": cold["step_s"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    atomic_io.write_text(args.out, render(rows, provenance.command_line(__file__, argv)))
    atomic_io.write_text(args.out.with_suffix(".json"), json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
