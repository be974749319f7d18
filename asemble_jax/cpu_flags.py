"""The XLA CPU compiler flags this project runs with by default, and the one place that sets them.

XLA reads XLA_FLAGS once, when JAX creates its first backend, so they are set when `asemble_jax` is imported
(asemble_jax/__init__.py), before any entry point, test or benchmark can run a JAX computation. They are
appended to the user's XLA_FLAGS, never replacing them: a flag the user already set (any value) is left alone,
and ASEMBLE_XLA_CPU_DEFAULTS=0 turns the project's defaults off altogether. A child process inherits the XLA_FLAGS
that apply() extended, so the opt-out alone would leave the defaults on in it: `opted_out_environment()` is how a
process starts a child without them (the benchmark's "before" rows). XLA aborts the process on a flag its jaxlib
does not know, so every default names the oldest jaxlib it was measured on and is skipped before that.

Each flag stays only while scripts/benchmark_cpu_vs_torch.py shows that it still helps on the current jaxlib
(results/performance/cpu_vs_torch.md has the before/after rows).
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from typing import NamedTuple

log = logging.getLogger(__name__)

OPT_OUT = "ASEMBLE_XLA_CPU_DEFAULTS"
_added: list[str] = []  # the flags apply() appended to this process's XLA_FLAGS


class Default(NamedTuple):
    flag: str  # --name=value
    min_jaxlib: tuple[int, ...]


DEFAULTS = (
    # YNNPACK's convolution kernels (default for convolutions since jaxlib 0.10) compute the weight gradient of a
    # ResNet50 step 4-10x slower than Eigen's on 2 cores; "-" removes only that fusion type from the jaxlib's
    # default set, so YNNPACK keeps the dots, reductions (BatchNorm) and elementwise fusions it does well.
    # Measured with the 1x1 convolutions as matrix products (models/cpu_convolution.py), idle, jaxlib 0.10.2: the
    # ResNet50 step 11% faster, ASembleNet-small's batch-16 step 5% slower, the demo no slower
    # (results/performance/README.md, "Correction").
    Default("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution", (0, 10)),
)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _name(flag: str) -> str:
    return flag.split("=", 1)[0]


def project_flags(jaxlib_version: str) -> list[str]:
    """The defaults that this jaxlib knows."""
    version = _version(jaxlib_version)
    return [default.flag for default in DEFAULTS if version >= default.min_jaxlib]


def merged(xla_flags: str, jaxlib_version: str) -> str:
    """`xla_flags` with every project default appended whose flag it does not already set."""
    own = xla_flags.split()
    names = {_name(flag) for flag in own}
    return " ".join(own + [flag for flag in project_flags(jaxlib_version) if _name(flag) not in names])


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def apply() -> None:
    """Adds the defaults to os.environ["XLA_FLAGS"] (unless ASEMBLE_XLA_CPU_DEFAULTS=0); too late, once a JAX
    backend exists, which it says in a warning."""
    if os.environ.get(OPT_OUT) == "0":
        return
    try:
        jaxlib_version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    current = os.environ.get("XLA_FLAGS", "")
    flags = merged(current, jaxlib_version)
    if flags == " ".join(current.split()):
        return
    if _backend_started():
        log.warning("JAX started before asemble_jax was imported: its XLA CPU defaults (%s) do not apply",
                    " ".join(project_flags(jaxlib_version)))
        return
    os.environ["XLA_FLAGS"] = flags
    _added[:] = flags.split()[len(current.split()):]


def opted_out_environment() -> dict[str, str]:
    """What to add to a child process's environment so that it runs with the jaxlib's own behaviour: the opt-out,
    and this process's XLA_FLAGS less the defaults apply() appended (the user's own flags stay)."""
    return {OPT_OUT: "0",
            "XLA_FLAGS": " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f not in _added)}
