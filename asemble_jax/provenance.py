"""Where a result came from: the code's git commit, the package versions, the machine and the date."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets", "numpy", "scipy",
            "scikit-learn")


def git_commit() -> str:
    """Short commit of the working tree, with "+changes" when tracked files differ from it; "unknown" outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if changed else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cpu_description() -> str:
    """The CPU's model and widest vector instruction set, e.g. "AMD EPYC, AVX-512": XLA compiles for the host's
    instructions, so float results and step times are comparable only between hosts that agree on this."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", fields.get("Features", "")).split())  # x86's flags, ARM's Features
    widest = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("asimd", "NEON"))
                   if flag in flags), None)
    return f"{model}, {widest}" if widest else model


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict[str, object]:
    return {"git_commit": git_commit(), "versions": package_versions(), "date": now(),
            "machine": f"{platform.node()} ({platform.machine()}, {cpu_description()}, {os.cpu_count()} CPU cores)"}


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reruns a script from the repository root: `python scripts/NAME.py ARGS`."""
    import shlex
    import sys

    arguments = argv if argv is not None else sys.argv[1:]
    return " ".join(["python", os.path.relpath(os.path.abspath(script), REPO), *map(shlex.quote, arguments)])
