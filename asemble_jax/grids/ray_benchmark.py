"""What the Ray engine costs against the local runner on the same grid, in one run (scripts/benchmark_ray_engine.py):
Ray's start-up, the wall time per cell of each engine, and the memory of Ray's own processes.

Both engines run the grid from an empty workdir of their own, one after the other, so that they share the machine
and the warm compilation cache alike (the first engine also pays any cold compilation: run it twice, or warm the
cache first, to compare like with like). The Ray engine runs one cell at a time as the local runner does (each cell
takes every CPU of the local Ray), so the difference per cell is the engine's overhead, not parallelism.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import ray

from asemble_jax.grids import ray_engine, runner
from asemble_jax.grids.grid import Grid


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # The command name, in parentheses, may hold spaces: the fields after it are fixed.
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _pss_mib(pid: int) -> float:
    """Proportional set size: shared pages divided among the processes that share them, so sums add up."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def ray_memory_mib() -> dict[str, float]:
    """PSS of the processes this driver's local Ray started (GCS, raylet, workers, monitors), by process name."""
    memory: dict[str, float] = {}
    for pid in _children(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        name = os.path.basename(argv[0].decode(errors="replace")) or "?"
        if name.startswith("python"):  # a worker or a Ray helper script: name it by what it runs
            name = next((os.path.basename(a.decode(errors="replace")) for a in argv[1:] if a.endswith(b".py")),
                        "python")
        memory[name] = memory.get(name, 0.0) + _pss_mib(pid)
    return memory


def compare(grid: Grid, workdir: str, *, only: str | None = None,
            report: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs the selected cells with each engine in WORKDIR/local and WORKDIR/ray; returns the figures."""
    cells = len(grid.select(only))
    quiet = lambda message: None  # noqa: E731 - the runs' own lines would bury the figures
    start = time.perf_counter()
    local = runner.run_grid(grid, os.path.join(workdir, "local"), only=only, report=quiet)
    local_s = time.perf_counter() - start
    report(f"local runner: {cells} cell(s) in {local_s:.1f} s ({local_s / cells:.1f} s per cell)")

    start = time.perf_counter()
    ray.init(address="local", include_dashboard=False)
    startup_s = time.perf_counter() - start
    idle = ray_memory_mib()
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        start = time.perf_counter()
        on_ray = ray_engine.run_grid(grid, os.path.join(workdir, "ray"), only=only, resources={"CPU": cpus},
                                     report=quiet)
        ray_s = time.perf_counter() - start
        busy = ray_memory_mib()
    finally:
        ray.shutdown()
    report(f"ray start-up (ray.init, local, no dashboard): {startup_s:.1f} s")
    report(f"ray engine: {cells} cell(s) in {ray_s:.1f} s ({ray_s / cells:.1f} s per cell, one at a time); "
           f"ratio to the local runner {ray_s / local_s:.2f}")
    for label, memory in (("after start-up", idle), ("after the grid", busy)):
        parts = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(memory.items(), key=lambda kv: -kv[1]))
        report(f"memory of Ray's processes {label}: {sum(memory.values()):.0f} MiB PSS ({parts})")
    return {"cells": cells, "local_s": local_s, "ray_startup_s": startup_s, "ray_s": ray_s,
            "ratio": ray_s / local_s, "ray_memory_idle_mib": idle, "ray_memory_after_mib": busy,
            "failed": {"local": local.failed, "ray": on_ray.failed}}
