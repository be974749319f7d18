"""Shared pytest setup. Eight simulated devices are requested before anything imports JAX, so every parallel code
path is tested the way it runs on an 8-chip host."""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent
SHARED_DATA = pathlib.Path(os.environ.get("ASEMBLE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data (or $ASEMBLE_SHARED_DATA): real public SIJ MRI that must never be committed."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MRI folder {SHARED_DATA} is absent (set ASEMBLE_SHARED_DATA to point at it)")
    return SHARED_DATA
