"""scripts/benchmark_web.py: the web app's speed, measured from outside as a client sees it, with batching on
and then off in one run, and a screenshot of the page with a result.

For each mode the real server (scripts/serve.py) is started on a free loopback port and timed from launch to
its first healthy answer (loading and compiling included), then: latency of one PNG slice with Grad-CAM, one
request at a time; latency of a 25-slice NIfTI volume, one at a time; and throughput of single-slice PNG
requests from 8 concurrent clients. Inputs are phantom slices (asemble_jax.data.phantom), so nothing is
downloaded. Needs httpx (test extra), and Playwright with Debian's chromium for the screenshot."""
from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import io
import os
import pathlib
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from asemble_jax import atomic_io
from asemble_jax.data import phantom
from asemble_jax.provenance import git_commit

REPO = pathlib.Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(workdir: str | os.PathLike, upload_tmp: str | os.PathLike, log: str | os.PathLike,
                   *arguments: str, ready_within: float = 600):
    """scripts/serve.py on a free loopback port, uploads under upload_tmp (its TMPDIR), its output in `log`;
    yields (base URL, seconds from launch to a healthy answer); stopped with SIGINT, as a user stops it."""
    import httpx

    port = free_port()
    start = time.perf_counter()
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "serve.py"), f"--workdir={workdir}",
                                    f"--port={port}", *arguments], stdout=output, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, TMPDIR=os.fspath(upload_tmp)), cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"serve.py exited with {process.returncode}: "
                                       f"{pathlib.Path(log).read_text()[-3000:]}")
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - start > ready_within:
                    raise RuntimeError(f"serve.py was not healthy within {ready_within} s")
                time.sleep(0.25)
            yield url, time.perf_counter() - start
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def phantom_inputs(image_size: int = 256) -> tuple[bytes, bytes]:
    """(one PNG slice, a 25-slice gzip NIfTI volume) of a phantom patient with lesions."""
    config = phantom.PhantomConfig(size=image_size, slices_per_patient=25)
    slices = [s.image for s in phantom.generate_patient(0, 1, True, config).slices]
    grey = np.uint8(np.clip(255 * slices[12] / np.percentile(slices[12], 99.5), 0, 255))
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    volume = np.stack([np.flipud(s).T for s in slices], axis=-1).astype(np.float32)
    return buffer.getvalue(), gzip.compress(nib.Nifti1Image(volume, np.eye(4)).to_bytes())


def _post(client, url: str, data: bytes) -> float:
    start = time.perf_counter()
    response = client.post(url + "/api/classify", files=[("files", ("upload", data, "application/octet-stream"))])
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"the server answered {response.status_code}: {response.text[:200]}")
    return elapsed


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"n": len(times), "p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(float(np.percentile(ordered, 95)), 3)}


def measure(url: str, png: bytes, volume: bytes, *, png_requests: int, volume_requests: int,
            concurrent_requests: int, clients: int) -> dict[str, Any]:
    import httpx

    with httpx.Client(timeout=600) as client:
        _post(client, url, png)  # one request first: connection set up, caches warm
        png_times = [_post(client, url, png) for _ in range(png_requests)]
        volume_times = [_post(client, url, volume) for _ in range(volume_requests)]

    def client_loop(index: int) -> int:
        with httpx.Client(timeout=600) as own:
            return sum(1 for _ in (_post(own, url, png) for _ in range(index, concurrent_requests, clients)))

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(client_loop, range(clients)))
    elapsed = time.perf_counter() - start
    health = httpx.get(url + "/healthz").json()
    return {"png_slice": _percentiles(png_times), "nifti_25_slices": _percentiles(volume_times),
            "concurrent": {"clients": clients, "requests": done, "seconds": round(elapsed, 2),
                           "requests_per_second": round(done / elapsed, 2)},
            "server": {k: health[k] for k in ("batch_size", "batches", "slices", "compiles_since_ready")}}


def screenshot(url: str, volume: bytes, path: pathlib.Path) -> None:
    """The page at 1280 wide after uploading the volume, slice 13 shown."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("no chromium on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        upload = pathlib.Path(folder) / "phantom_volume.nii.gz"
        upload.write_bytes(volume)
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + "/")
        page.wait_for_selector("#card-body dl")
        page.set_input_files("#file-input", str(upload))
        page.wait_for_selector("#slice-box:not([hidden])")
        page.eval_on_selector("#slice", "el => { el.value = 12; el.dispatchEvent(new Event('input')); }")
        page.wait_for_function("() => (document.getElementById('view').dataset.drawn || '').startsWith('12:')")
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        browser.close()


def run(workdir: str, eval_dir: str | None, *, out: pathlib.Path, command: str, png_requests: int = 30,
        volume_requests: int = 10, concurrent_requests: int = 96, clients: int = 8,
        screenshot_path: pathlib.Path | None = None) -> dict[str, Any]:
    png, volume = phantom_inputs()
    extra = [f"--eval_dir={eval_dir}"] if eval_dir else []
    modes = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("on", "off"):
            log = pathlib.Path(folder) / f"serve_{mode}.log"
            with running_server(workdir, folder, log, *extra, f"--batching={mode}") as (url, startup):
                modes[mode] = {"startup_s": round(startup, 1),
                               **measure(url, png, volume, png_requests=png_requests,
                                         volume_requests=volume_requests, concurrent_requests=concurrent_requests,
                                         clients=clients)}
                if mode == "on" and screenshot_path is not None:
                    screenshot(url, volume, screenshot_path)
    on, off = modes["on"]["concurrent"], modes["off"]["concurrent"]
    result = {"command": command, "git_commit": git_commit(), "workdir": workdir,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, load average "
                         f"{os.getloadavg()[0]:.1f} at the end",
              "batching": modes,
              "throughput_ratio_on_over_off": round(on["requests_per_second"] / off["requests_per_second"], 2)}
    atomic_io.write_json(out / "benchmark.json", result)
    atomic_io.write_text(out / "benchmark.md", markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Web page speed ({result['workdir']})", "", f"Made with `{result['command']}` at commit "
             f"{result['git_commit']} on {result['machine']}: times are upper bounds. Latency is one request at a "
             "time, measured by the client from sending to the whole answer (upload, reading, preprocessing, "
             "Grad-CAM of every branch, PNG encoding). Start-up: launch to the first healthy answer, loading and "
             "compiling included.", "",
             "| batching | start-up s | PNG slice p50 / p95 s | 25-slice NIfTI p50 / p95 s | 8 clients, requests/s | "
             "batches / slices | compiles after start-up |", "|---|---|---|---|---|---|---|"]
    for mode, block in result["batching"].items():
        server = block["server"]
        lines.append(f"| {mode} | {block['startup_s']} | {block['png_slice']['p50_s']} / {block['png_slice']['p95_s']}"
                     f" | {block['nifti_25_slices']['p50_s']} / {block['nifti_25_slices']['p95_s']} | "
                     f"{block['concurrent']['requests_per_second']} | {server['batches']} / {server['slices']} | "
                     f"{server['compiles_since_ready']} |")
    lines += ["", f"Throughput with batching on / off: {result['throughput_ratio_on_over_off']}x."]
    return "\n".join(lines) + "\n"
