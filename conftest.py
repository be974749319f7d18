"""Shared pytest setup. Eight simulated devices are requested before anything imports JAX, so every parallel code
path is tested the way it runs on an 8-chip host."""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many test files build and compile the same tiny models: a persistent cache shared by the pytest-xdist workers
# (and by reruns) compiles each program once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.environ.get("TMPDIR", "/tmp"), f"asemble_jax_test_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent
SHARED_DATA = pathlib.Path(os.environ.get("ASEMBLE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data (or $ASEMBLE_SHARED_DATA): real public SIJ MRI that must never be committed."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real MRI folder {SHARED_DATA} is absent (set ASEMBLE_SHARED_DATA to point at it)")
    return SHARED_DATA
