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


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict[str, object]:
    return {"git_commit": git_commit(), "versions": package_versions(), "date": now(),
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPU cores)"}


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reruns a script from the repository root: `python scripts/NAME.py ARGS`."""
    import shlex
    import sys

    arguments = argv if argv is not None else sys.argv[1:]
    return " ".join(["python", os.path.relpath(os.path.abspath(script), REPO), *map(shlex.quote, arguments)])
