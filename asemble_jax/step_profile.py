"""Where the training step's time goes, per kind of XLA operation.

The real training program (asemble_jax/train/trainer.py:training_program) runs a few steps on a fixed random batch
under the JAX profiler; XLA's runtime records one trace event per executed operation (a thunk), named after the
instruction in the compiled module. The profiled steps run the ahead-of-time compilation whose text says what
each instruction is, so the events are summed per kind: convolutions (grouped ones apart: those are what
asemble_jax/models/cpu_convolution.py replaces on the CPU), matrix products, reductions, pooling, elementwise loops
and copies, each whether XLA fused it or handed it to a library (YNNPACK fusions on the CPU are classified by what
they contain).

Times are summed over the runtime's threads, so the total exceeds the step's wall time where operations ran in
parallel; the shares are what to read. One blind spot, seen on ResNet50 with the project's XLA CPU flag: an
operation that XLA's CPU runtime runs asynchronously (Eigen's convolutions, once YNNPACK's are off) is timed only
for its launch, and its work shows up nowhere. Compare the table's total with the wall time before reading a
small share as small. scripts/profile_step.py writes the table.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def _convolution_kind(attributes: str) -> str:
    groups = re.search(r"feature_group_count=(\d+)", attributes)
    if groups and int(groups.group(1)) > 1:
        return "grouped convolution"
    if re.search(r"batch_group_count=(\d+)", attributes):
        return "batch-grouped convolution (a grouped convolution's weight gradient)"
    return "convolution"


def _content_kind(instructions: list[tuple[str, str]]) -> str:
    """The kind of a fused computation, by the costliest kind of operation inside it."""
    opcodes = {opcode for opcode, _ in instructions}
    for opcode, attributes in instructions:
        if opcode == "convolution":
            return _convolution_kind(attributes)
    if "dot" in opcodes:
        return "matrix product"
    if "reduce-window" in opcodes or "select-and-scatter" in opcodes:
        return "pooling (reduce-window)"
    if "reduce" in opcodes:
        return "reduction"
    if opcodes <= {"parameter", "copy", "transpose", "bitcast", "constant", "tuple", "get-tuple-element"}:
        return "copy or transpose"
    return "elementwise loop"


def instruction_kinds(hlo_text: str) -> dict[str, str]:
    """Each instruction of a compiled module's text -> its kind (fusions and library calls by their contents)."""
    computations: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    instructions: list[tuple[str, str, str]] = []  # (name, opcode, attributes), every computation
    current = None
    for line in hlo_text.splitlines():
        started = _COMPUTATION.match(line)  # computations start unindented, instructions are indented
        if started:
            current = started.group(1)
            continue
        found = _INSTRUCTION.match(line)
        if found:
            name, _, opcode, attributes = found.groups()
            instructions.append((name, opcode, attributes))
            if current is not None:
                computations[current].append((opcode, attributes))
    kinds = {}
    for name, opcode, attributes in instructions:
        if opcode == "convolution":
            kinds[name] = _convolution_kind(attributes)
        elif opcode in ("fusion", "custom-call", "call"):
            called = _CALLS.search(attributes)
            kinds[name] = _content_kind(computations.get(called.group(1), [])) if called else opcode
        elif opcode == "dot":
            kinds[name] = "matrix product"
        elif opcode in ("reduce-window", "select-and-scatter"):
            kinds[name] = "pooling (reduce-window)"
        elif opcode == "reduce":
            kinds[name] = "reduction"
        elif opcode in ("copy", "transpose"):
            kinds[name] = "copy or transpose"
        else:
            kinds[name] = opcode
    return kinds


def operation_times(trace_events: list[dict], kinds: dict[str, str]) -> tuple[dict[str, float], dict[str, int]]:
    """Microseconds and event counts per kind, over the trace's complete events named after an instruction."""
    seconds: dict[str, float] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    for event in trace_events:
        kind = kinds.get(event.get("name", "")) if event.get("ph") == "X" else None
        if kind is not None:
            seconds[kind] += event.get("dur", 0)
            counts[kind] += 1
    return dict(seconds), dict(counts)


def profile(config, *, steps: int = 3) -> dict:
    """Profiles `steps` training steps of `config` (after two unprofiled ones) on a fixed random batch: the steps'
    median wall time and, per kind of operation, the thunk time per step (summed over threads)."""
    import jax

    from asemble_jax.benchmark import random_batch
    from asemble_jax.train.trainer import training_program

    program = training_program(config)
    state = program.dp.put_state(program.state)
    batch = program.dp.put_batch(random_batch(config.global_batch_size, config.data.image_size))
    # The profiled steps run this compilation, so the instruction names are the trace's, and nothing compiles twice.
    step = program.train_step.lower(state, batch).compile()
    kinds = instruction_kinds(step.as_text())
    for _ in range(2):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    walls = []
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                start = time.perf_counter()
                state, metrics = step(state, batch)
                jax.block_until_ready(metrics)
                walls.append(time.perf_counter() - start)
        traces = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz"))
        if not traces:
            raise RuntimeError(f"the JAX profiler wrote no trace under {trace_dir}")
        with gzip.open(traces[0]) as stream:
            events = json.load(stream)["traceEvents"]
    microseconds, counts = operation_times(events, kinds)
    return {"steps": steps, "step_s": sorted(walls)[len(walls) // 2], "platform": jax.devices()[0].platform,
            "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "per_step_ms": {kind: us / steps / 1e3 for kind, us in microseconds.items()},
            "per_step_count": {kind: count // steps for kind, count in counts.items()},
            "load_average_1min": round(os.getloadavg()[0], 1)}


def render(result: dict, title: str, command: str) -> str:
    total = sum(result["per_step_ms"].values())
    lines = [f"# Where the training step's time goes: {title}", "", f"`{command}`", "",
             f"{result['platform']}, {os.cpu_count()} CPU cores visible, JAX {result['jax']}, "
             f"{time.strftime('%Y-%m-%d')}, XLA_FLAGS `{result['xla_flags']}`, 1-minute load average "
             f"{result['load_average_1min']}. Median step {result['step_s']:.3f} s over {result['steps']} profiled "
             f"steps on a fixed random batch. Operation time is summed over XLA's threads ({total:.0f} ms per step "
             "in all), so it can exceed the wall time; asemble_jax/step_profile.py says how operations are "
             "classified.", "",
             "| kind of operation | ms per step | share | operations per step |", "|---|---:|---:|---:|"]
    for kind, ms in sorted(result["per_step_ms"].items(), key=lambda item: -item[1]):
        lines.append(f"| {kind} | {ms:.1f} | {100 * ms / total:.1f}% | {result['per_step_count'][kind]} |")
    return "\n".join(lines) + "\n"
