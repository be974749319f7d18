"""Our CPU training step against PyTorch's on the same machine (scripts/benchmark_cpu_vs_torch.py; issue 15).

Whole step. ResNet50, our Keras-architecture port through the project's own training program
(asemble_jax/benchmark.py:measure, one device, AdamW with clipping and label smoothing as ablations/base.py sets
them), against torchvision's ResNet50 with the same change to a 1-channel stem and a 2-class head, the same
optimiser settings, `threads` intra-op threads, in PyTorch's default (NCHW) layout and in channels_last. Ours runs
twice: with the project's XLA CPU defaults (asemble_jax/cpu_flags.py, "after") and without them ("before"); so
does ASembleNet, whose baseline is its own step before. Every run is a fresh process, the variants alternate
round by round (so drifting load hits all of them alike), and each run reports the median of `steps` steps,
each waited for, after the first (compiling) step and one more; compile time, model-building time and the
process's peak resident memory are reported apart. Inputs are fixed random images held in memory.

Per part. The same convolutions on both sides, exactly those of our ResNet50's forward pass at this size and
batch (read from its jaxpr): each distinct one's forward, input gradient and weight gradient, timed alone
(median of `repeats`) and summed with its multiplicity; and the optimiser update over our model's parameter
shapes. What the parts leave of the whole step is BatchNorm, activations, pooling, the loss and the layout work
between them.

Under load. `background_load` busy processes (one core each, at normal priority) run beside the whole comparison,
so that the step and the project's XLA CPU flag are judged on a shared machine as well as an idle one by one
committed command.

The "before" runs start from `cpu_flags.opted_out_environment()`, and every run's XLA_FLAGS are checked against its
label and listed in the report: a child inherits the XLA_FLAGS this process's import extended, and for two days
every "before" row silently ran with the flag.

PyTorch runs in another Python (the `oracle` extra: torch and torchvision) given as `torch_python`; this
module imports torch only inside the functions that run there.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

from asemble_jax import atomic_io, benchmark, cpu_flags, provenance
from asemble_jax.errors import UserError

LABEL_SMOOTHING, GRAD_CLIP_NORM, LEARNING_RATE, WEIGHT_DECAY = 0.1, 1.0, 1e-3, 0.05  # ablations/base.py's


# --- PyTorch (runs in the oracle Python) -------------------------------------------------------------------------
def torch_resnet50(channels_last: bool):
    import torch
    import torchvision

    model = torchvision.models.resnet50(num_classes=2)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def measure_torch(*, size: int, batch: int, steps: int, channels_last: bool, threads: int, seed: int = 0) -> dict:
    """torchvision's ResNet50 training step in this process (the whole-step measurement, PyTorch side)."""
    import numpy as np
    import torch
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = torch_resnet50(channels_last).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    data = benchmark.random_batch(batch, size, seed)
    images = torch.from_numpy(np.ascontiguousarray(data["image"].transpose(0, 3, 1, 2)))
    images = images.contiguous(memory_format=torch.channels_last) if channels_last else images
    labels = torch.from_numpy(data["label"].astype(np.int64))
    setup_s = time.perf_counter() - start

    def step():
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimiser.step()
        return loss.item()

    first_s, times = benchmark.call_times(step, steps, warmup=1)
    return {"variant": "PyTorch channels_last" if channels_last else "PyTorch default", "model": "resnet50",
            "size": size, "batch": batch, "setup_s": setup_s, "compile_and_first_step_s": first_s,
            "step_s": statistics.median(times), "step_times_s": times, "peak_rss_mb": benchmark.peak_rss_mb(),
            "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad), "threads": threads,
            "load_average_1min": round(os.getloadavg()[0], 1), "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def torch_parts(*, convolutions: list[dict], parameter_shapes: list[list[int]], repeats: int, channels_last: bool,
                threads: int) -> dict:
    """The per-part measurement, PyTorch side: each convolution's forward, input and weight gradient (the
    backward kernel autograd runs, asked for one gradient), then AdamW with clipping over tensors of
    `parameter_shapes`."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    rows = []
    for conv in convolutions:
        n, h, w, c = conv["input"]
        kh, kw, _, k = conv["kernel"]
        (top, bottom), (left, right) = conv["padding"]
        x = torch.randn(n, c, h, w, generator=generator)
        x = F.pad(x, (left, right, top, bottom)).contiguous(memory_format=layout)  # explicit: XLA's may be uneven
        weight = torch.randn(k, c, kh, kw, generator=generator).contiguous(memory_format=layout)
        dy = torch.randn_like(F.conv2d(x, weight, stride=conv["strides"])).contiguous(memory_format=layout)

        def forward():
            with torch.no_grad():
                F.conv2d(x, weight, stride=conv["strides"])

        def backward(mask):
            # What autograd calls for a convolution's backward, here without the forward pass around it.
            return lambda: torch.ops.aten.convolution_backward(dy, x, weight, None, conv["strides"], [0, 0], [1, 1],
                                                               False, [0, 0], 1, mask)

        input_grad, weight_grad = backward([True, False, False]), backward([False, True, False])
        rows.append({part: 1e3 * statistics.median(benchmark.call_times(call, repeats, warmup=1)[1])
                     for part, call in (("forward", forward), ("input_grad", input_grad),
                                        ("weight_grad", weight_grad))})
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in parameter_shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    optimiser = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def update():
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM)
        optimiser.step()

    optimiser_ms = 1e3 * statistics.median(benchmark.call_times(update, repeats, warmup=1)[1])
    return {"convolutions": rows, "optimizer_ms": optimiser_ms, "load_average_1min": round(os.getloadavg()[0], 1)}


# --- ours ------------------------------------------------------------------------------------------------------
def resnet50_convolutions(size: int, batch: int) -> list[dict]:
    """Every distinct convolution layer of our ResNet50's forward pass on (batch, size, size, 1) images, with how
    many times it occurs: input and kernel shapes (NHWC, HWIO), strides and explicit padding, from the jaxpr
    traced with lax's convolutions (so the 1x1 layers, which the CPU computes as matrix products, are listed too,
    and jax_parts times them as the models compute them)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from asemble_jax.models import cpu_convolution, create_model

    model = create_model("resnet50", "small", rngs=nnx.Rngs(0), num_classes=2, in_channels=1)
    with cpu_convolution.lax_convolutions():
        jaxpr = jax.make_jaxpr(lambda x: model(x, train=False)[0])(jnp.zeros((batch, size, size, 1), jnp.float32))
    counts: collections.Counter = collections.Counter()

    def visit(inner):
        for eqn in inner.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                lhs, rhs = (v.aval.shape for v in eqn.invars)
                counts[(tuple(lhs), tuple(rhs), tuple(eqn.params["window_strides"]),
                        tuple(tuple(p) for p in eqn.params["padding"]))] += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else [value]:
                    if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                        visit(getattr(sub, "jaxpr", sub))

    visit(jaxpr.jaxpr)
    return [{"input": list(lhs), "kernel": list(rhs), "strides": list(strides), "padding": [list(p) for p in pad],
             "count": count} for (lhs, rhs, strides, pad), count in counts.items()]


def resnet50_parameter_shapes() -> list[list[int]]:
    import jax
    from flax import nnx

    from asemble_jax.models import create_model

    abstract = nnx.eval_shape(lambda: create_model("resnet50", "small", rngs=nnx.Rngs(0), num_classes=2,
                                                   in_channels=1))
    return [list(leaf.shape) for leaf in jax.tree.leaves(nnx.state(abstract, nnx.Param))]


def jax_parts(*, convolutions: list[dict], parameter_shapes: list[list[int]], repeats: int) -> dict:
    """The per-part measurement, our side (in this process, with whatever XLA flags it started with): each
    convolution's forward, input and weight gradient as the models compute them (through
    asemble_jax/models/cpu_convolution.py, so a 1x1 one as a matrix product) and XLA compiles them inside a
    training step's backward pass (jax.vjp), then the project's optimiser update (asemble_jax/train/optim.py)
    over `parameter_shapes`."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from asemble_jax.config import load_config
    from asemble_jax.models import cpu_convolution
    from asemble_jax.train import optim

    rng = np.random.default_rng(0)
    rows = []
    for conv in convolutions:
        x = jnp.asarray(rng.normal(size=conv["input"]), jnp.float32)
        weight = jnp.asarray(rng.normal(size=conv["kernel"]), jnp.float32)

        def convolve(x, weight, conv=conv):
            return cpu_convolution.conv_general_dilated(x, weight, conv["strides"],
                                                        [tuple(p) for p in conv["padding"]],
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

        dy = jnp.asarray(rng.normal(size=convolve(x, weight).shape), jnp.float32)
        calls = {"forward": jax.jit(convolve),
                 "input_grad": jax.jit(lambda x, w, dy: jax.vjp(lambda x: convolve(x, w), x)[1](dy)[0]),
                 "weight_grad": jax.jit(lambda x, w, dy: jax.vjp(lambda w: convolve(x, w), w)[1](dy)[0])}
        arguments = {"forward": (x, weight), "input_grad": (x, weight, dy), "weight_grad": (x, weight, dy)}
        rows.append({part: 1e3 * statistics.median(benchmark.call_times(
            lambda: jax.block_until_ready(call(*arguments[part])), repeats, warmup=1)[1])
            for part, call in calls.items()})
    config = load_config(f"{benchmark.CONFIG}:model=resnet50,preset=small")
    params = [jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in parameter_shapes]
    grads = [jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in parameter_shapes]
    tx, _ = optim.make_optimizer(config, params)

    @jax.jit
    def update(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    carry = [params, tx.init(params)]

    def step():
        carry[:] = update(*carry)
        jax.block_until_ready(carry)

    optimiser_ms = 1e3 * statistics.median(benchmark.call_times(step, repeats, warmup=1)[1])
    return {"convolutions": rows, "optimizer_ms": optimiser_ms, "load_average_1min": round(os.getloadavg()[0], 1),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


# --- the comparison --------------------------------------------------------------------------------------------
def variants(size: int, batch: int, steps: int, threads: int, asemblenet_preset: str | None) -> list[dict]:
    ours = dict(size=size, batch=batch, steps=steps, each_step=True, forward=False)
    before = cpu_flags.opted_out_environment()  # our step with the jaxlib's own behaviour
    chosen = [
        {"label": "ours, jaxlib defaults", "kind": "jax", "env": before, "arguments": dict(
            model="resnet50", preset="small", **ours)},
        {"label": "ours, project XLA CPU flags", "kind": "jax", "env": {}, "arguments": dict(
            model="resnet50", preset="small", **ours)},
        {"label": "PyTorch default", "kind": "torch", "arguments": dict(
            size=size, batch=batch, steps=steps, channels_last=False, threads=threads)},
        {"label": "PyTorch channels_last", "kind": "torch", "arguments": dict(
            size=size, batch=batch, steps=steps, channels_last=True, threads=threads)},
    ]
    if asemblenet_preset:
        # The preset's own input size: the step that training at this preset runs.
        own = dict(ours, size=0)
        chosen += [{"label": f"ASembleNet-{asemblenet_preset}, jaxlib defaults", "kind": "jax", "env": before,
                    "arguments": dict(model="asemblenet", preset=asemblenet_preset, **own)},
                   {"label": f"ASembleNet-{asemblenet_preset}, project XLA CPU flags", "kind": "jax", "env": {},
                    "arguments": dict(model="asemblenet", preset=asemblenet_preset, **own)}]
    return chosen


@contextlib.contextmanager
def _holding(lock: str | None):
    """Holds an exclusive flock on `lock` (if given) meanwhile: on a shared machine, other benchmarks taking the
    same lock never overlap a timed process, and they get their turn between this comparison's processes."""
    if not lock:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def busy_processes(count: int):
    """`count` processes spinning on the CPU meanwhile, stopped (and reaped) however the block ends."""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield spinning
    finally:
        for process in spinning:
            process.kill()
        for process in spinning:
            process.wait()


def _run(variant: dict, torch_python: str) -> dict:
    if variant["kind"] == "torch":
        result = benchmark.in_fresh_process("asemble_jax.cpu_vs_torch:measure_torch", variant["arguments"],
                                            python=torch_python, what=variant["label"])
    else:
        result = benchmark.measure_in_fresh_process(None, env=variant["env"], **variant["arguments"])
        _check_flags(variant["label"], variant["env"], result["xla_flags"])
    return {"label": variant["label"], **result}


def _check_flags(label: str, env: dict[str, str], xla_flags: str) -> None:
    """A run labelled with the jaxlib defaults ran without the project's flags, and one labelled with them ran
    with them: else its row would compare a configuration with itself."""
    project = set(cpu_flags.project_flags(importlib.metadata.version("jaxlib")))
    present = project & set(xla_flags.split())
    opted_out = env.get(cpu_flags.OPT_OUT) == "0"
    if (opted_out and present) or (not opted_out and present != project):
        raise benchmark.BenchmarkError(f"{label}: ran with XLA_FLAGS={xla_flags!r}, not what its label says "
                                       "(unset the project's flags in your own XLA_FLAGS to compare)")


def compare(*, size: int = 128, batch: int = 16, steps: int = 10, rounds: int = 2, threads: int = 2,
            asemblenet_preset: str | None = "small", parts: bool = True, repeats: int = 5,
            torch_python: str = sys.executable, lock: str | None = None, background_load: int = 0,
            report: Callable[[str], None] = print, save: Callable[[dict], None] = lambda result: None) -> dict:
    """Every variant once per round, alternating, each in a fresh process (holding `lock` while it runs); then,
    if `parts`, the per-part measurement for ours (before, after) and PyTorch (both layouts). `save` gets the
    result so far after every process, so that an interrupted comparison keeps what it measured. `background_load`
    busy processes run throughout."""
    if steps < 10 or rounds < 1:
        raise UserError(f"need at least 10 steps and 1 round (got {steps} steps, {rounds} rounds)")
    with busy_processes(background_load):
        runs = []
        result = {"size": size, "batch": batch, "steps": steps, "rounds": rounds, "threads": threads, "runs": runs,
                  "cpu": f"{platform.machine()}, {provenance.cpu_description()}", "cpu_count": os.cpu_count(),
                  "parts": None, "complete": False, "background_load": background_load}
        chosen = variants(size, batch, steps, threads, asemblenet_preset)
        for round_index in range(rounds):
            for variant in chosen:
                with _holding(lock):
                    run = {"round": round_index, **_run(variant, torch_python)}
                report(f"round {round_index}: {run['label']} {run['model']}: step {run['step_s']:.3f} s "
                       f"(load {run['load_average_1min']})")
                runs.append(run)
                save(result)
        if parts:
            convolutions = resnet50_convolutions(size, batch)
            arguments = dict(convolutions=convolutions, parameter_shapes=resnet50_parameter_shapes(),
                             repeats=repeats)
            measured = {}
            for label, env in (("ours, jaxlib defaults", cpu_flags.opted_out_environment()),
                               ("ours, project XLA CPU flags", {})):
                with _holding(lock):
                    measured[label] = benchmark.in_fresh_process("asemble_jax.cpu_vs_torch:jax_parts", arguments,
                                                                 env=env, what=f"parts, {label}")
                _check_flags(f"parts, {label}", env, measured[label]["xla_flags"])
            for label, channels_last in (("PyTorch default", False), ("PyTorch channels_last", True)):
                with _holding(lock):
                    measured[label] = benchmark.in_fresh_process(
                        "asemble_jax.cpu_vs_torch:torch_parts", dict(arguments, channels_last=channels_last,
                                                                     threads=threads),
                        python=torch_python, what=f"parts, {label}")
            for label, row in measured.items():
                report(f"parts: {label}: {json.dumps(part_totals(convolutions, row))}")
            result["parts"] = {"convolutions": convolutions, "measured": measured, "repeats": repeats}
        result["complete"] = True
        save(result)
        return result


def part_totals(convolutions: list[dict], measured: dict) -> dict[str, float]:
    """Milliseconds per step of each part: every convolution's time times its multiplicity, summed."""
    totals = {part: sum(conv["count"] * row[part] for conv, row in zip(convolutions, measured["convolutions"]))
              for part in ("forward", "input_grad", "weight_grad")}
    return {**totals, "optimizer": measured["optimizer_ms"]}


def summary(result: dict) -> list[dict]:
    """One row per variant: the median over its runs of each run's median step, the runs' range, and the rest."""
    by_label: dict[str, list[dict]] = collections.defaultdict(list)
    for run in result["runs"]:
        by_label[run["label"]].append(run)
    rows = []
    for label, runs in by_label.items():
        steps = [run["step_s"] for run in runs]
        rows.append({"label": label, "model": runs[0]["model"], "size": runs[0]["size"],
                     "parameters": runs[0]["parameters"], "step_s": statistics.median(steps),
                     "step_min_s": min(steps), "step_max_s": max(steps), "runs": len(runs),
                     "compile_s": statistics.median(run["compile_and_first_step_s"] for run in runs),
                     "setup_s": statistics.median(run["setup_s"] for run in runs),
                     "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in runs),
                     "loads": [run["load_average_1min"] for run in runs]})
    return rows


def render(result: dict, command: str) -> str:
    rows = summary(result)
    torch_best = min((r["step_s"] for r in rows if r["label"].startswith("PyTorch")), default=None)
    before = {r["model"]: r["step_s"] for r in rows if r["label"].endswith("jaxlib defaults")}
    versions = next((r for r in result["runs"] if "torch" in r), {})
    jax_run = next(r for r in result["runs"] if "jax" in r)
    lines = [
        "# CPU training step: ours against PyTorch",
        "",
        f"`{command}`",
        "",
        f"{result['cpu_count']} CPU cores visible ({result['cpu']}), shared with other work: the 1-minute load "
        f"average of every run is listed, and on a loaded machine the times are upper bounds. "
        + (f"**{result['background_load']} busy process(es) ran beside every run** (`--background_load`). "
           if result.get("background_load") else "") + "JAX "
        f"{jax_run['jax']}; PyTorch {versions.get('torch', 'n/a')}, torchvision {versions.get('torchvision', 'n/a')} "
        f"with {result['threads']} threads; {time.strftime('%Y-%m-%d')}. Batch {result['batch']}, 1 input "
        "channel, 2 classes, float32, AdamW with global-norm clipping 1.0 and label smoothing 0.1 on both sides, "
        "fixed random images in memory. asemble_jax/cpu_vs_torch.py says how each number is measured: each run "
        f"is a fresh process, the variants alternate over {result['rounds']} round(s), a run's step time is the "
        f"median of {result['steps']} steps after the compiling step and one more; the table gives the median "
        "of the runs and their range. Compile: the first step's wall time (PyTorch: its first step); setup: "
        "building the model, optimiser state and device buffers. Ratio: step time / the faster PyTorch "
        "layout's (ResNet50) or / the same model's step with the jaxlib defaults (ASembleNet; < 1 is faster).",
        "",
        *([] if result.get("complete", True) else [
            f"**Partial: the command was interrupted after {len(result['runs'])} run(s); every run it finished is "
            "here.**", ""]),
        "| variant | model | input | params | step (s), median | range (s) | ratio | compile (s) | setup (s) "
        "| peak RSS (MB) | load per run |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["model"] == "resnet50":
            ratio = f"{r['step_s'] / torch_best:.2f}x PyTorch" if torch_best else "n/a"
        else:
            ratio = f"{r['step_s'] / before[r['model']]:.2f}x before" if r["model"] in before else "n/a"
        lines.append(f"| {r['label']} | {r['model']} | {r['size']}x{r['size']} | {r['parameters']:,} | "
                     f"{r['step_s']:.3f} | {r['step_min_s']:.3f}-{r['step_max_s']:.3f} | {ratio} | "
                     f"{r['compile_s']:.1f} | {r['setup_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{', '.join(str(load) for load in r['loads'])} |")
    flags = {}
    for run in result["runs"]:
        if "xla_flags" in run:
            flags.setdefault(run["label"], set()).add(run["xla_flags"] or "none")
    lines += ["", "XLA_FLAGS as each of our runs saw them: " + "; ".join(
        f"{label}: {', '.join(f'`{f}`' if f != 'none' else f for f in sorted(seen))}" for label, seen in flags.items())
        + "."]
    if result["parts"]:
        convolutions, measured = result["parts"]["convolutions"], result["parts"]["measured"]
        totals = {label: part_totals(convolutions, row) for label, row in measured.items()}
        labels = list(totals)
        lines += [
            "",
            f"## Where the time goes: ResNet50's {sum(c['count'] for c in convolutions)} convolutions "
            f"({len(convolutions)} distinct) and the optimiser, per step (ms)",
            "",
            "Each distinct convolution of our ResNet50 at this size and batch, timed alone (median of "
            f"{result['parts']['repeats']} after one warm-up call), times its "
            "multiplicity, summed; PyTorch times the same shapes (its own ResNet50 places strides differently). "
            "Optimiser: one AdamW update with clipping over our model's parameter shapes. Load at the end of "
            "each process: " + ", ".join(f"{label} {row['load_average_1min']}" for label, row in measured.items())
            + ".",
            "",
            "| part | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for part in ("forward", "input_grad", "weight_grad", "optimizer"):
            lines.append(f"| {part.replace('_', ' ')} | " + " | ".join(f"{totals[label][part]:.0f}"
                                                                    for label in labels) + " |")
        lines.append("| convolutions, all three | " + " | ".join(
            f"{sum(totals[label][p] for p in ('forward', 'input_grad', 'weight_grad')):.0f}" for label in labels)
            + " |")
    return "\n".join(lines) + "\n"


def write(out: str | os.PathLike, result: dict, command: str) -> None:
    """The Markdown report at `out` and every number beside it (.json)."""
    out = os.fspath(out)
    atomic_io.write_text(out, render(result, command))
    atomic_io.write_text(os.path.splitext(out)[0] + ".json", json.dumps(result, indent=1) + "\n")
