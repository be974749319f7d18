"""The real server (scripts/serve.py under uvicorn) on loopback: a bounded load of 300 requests from 8 concurrent
clients with zero errors and no compile after start-up, batches shared between requests, the request-size limit
enforced while the body streams in, loopback Host names only, the access log's four fields, and no upload left."""
import concurrent.futures
import importlib.util
import pathlib
import re
import select
import socket
import sys
import time

import httpx
import pytest

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("tests.web_support", HERE / "web_support.py")
support = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = support
spec.loader.exec_module(support)

REQUESTS, CLIENTS = 300, 8
LIMIT_BYTES = 64 * 2 ** 20  # the served default (asemble_jax.web.uploads.Limits)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = support.trained_workdir(tmp_path_factory)
    uploads = tmp_path_factory.mktemp("server_tmp")
    log = tmp_path_factory.mktemp("log") / "serve.log"
    with support.running_server(workdir, uploads, log) as (url, _):
        yield url, log
    assert list(uploads.iterdir()) == [], "uploads left on disk after the server stopped"


def _classify(client, url, data):
    return client.post(url + "/api/classify", files=[("files", (support.SECRET_FILE_NAME, data, "image/png"))])


@pytest.mark.slow
def test_a_bounded_load_has_no_errors_and_no_compile_after_start_up(server):
    url, log = server
    images = [support.raster_bytes(support.body(seed=seed)) for seed in range(CLIENTS)]
    before = httpx.get(url + "/healthz").json()

    def client_loop(index):
        statuses = []
        with httpx.Client(timeout=120) as client:
            for request in range(index, REQUESTS, CLIENTS):
                statuses.append(_classify(client, url, images[request % CLIENTS]).status_code)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        statuses = [status for result in pool.map(client_loop, range(CLIENTS)) for status in result]
    assert len(statuses) == REQUESTS and set(statuses) == {200}, sorted(set(statuses))
    after = httpx.get(url + "/healthz").json()
    assert after["compiles_since_ready"] == 0, "a request waited for a compile"
    served = after["slices"] - before["slices"]
    assert served == REQUESTS
    assert after["batches"] - before["batches"] < served, "concurrent requests never shared a batch"
    text = log.read_text()
    access = [line.split("asemble_jax.web.access INFO: ", 1)[1] for line in text.splitlines()
              if "asemble_jax.web.access" in line]
    assert len(access) >= REQUESTS + 2
    assert all(re.fullmatch(r"(GET|POST) /\S* \d{3} \d+\.\d ms", line) for line in access), access[:5]
    assert support.SECRET_FILE_NAME not in text and "Doe_Jane" not in text


def _raw_request(url, head: bytes, body_chunks) -> tuple[bytes, int]:
    """Sends `head`, then chunks until the server answers or stops reading; (the answer's first bytes, body bytes
    sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent, answer = 0, b""
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head)
        for chunk in body_chunks:
            if select.select([connection], [], [], 0)[0]:
                break  # the server has answered (or closed) before the body ended
            try:
                connection.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            try:
                more = connection.recv(4096)
            except OSError:
                break
            if not more:
                break
            answer += more
    return answer, sent


@pytest.mark.slow
def test_the_size_limit_is_enforced_while_the_body_streams(server):
    url, _ = server
    boundary = b"b"
    start = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x\"\r\n\r\n"
    # A declared length over the limit is refused before any of the body is read.
    head = (b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" +
            boundary + b"\r\nContent-Length: " + str(2 ** 30).encode() + b"\r\n\r\n")
    answer, sent = _raw_request(url, head, iter([start]))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # A chunked body of no declared length is refused once it passes the limit, long before it ends (1 GiB).
    head = (b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=" +
            boundary + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 2 ** 16
    chunks = iter([b"%x\r\n%s\r\n" % (len(start), start)] + [b"%x\r\n%s\r\n" % (len(piece), piece)] * (2 ** 14))
    answer, sent = _raw_request(url, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than the limit of 64 MiB" in answer or sent < 2 * LIMIT_BYTES
    assert sent < LIMIT_BYTES + 32 * 2 ** 20, f"{sent} bytes were taken before the refusal"
    assert httpx.get(url + "/healthz").json()["status"] == "ok"


@pytest.mark.slow
def test_a_loopback_server_answers_only_loopback_host_names(server):
    url, _ = server
    assert httpx.get(url + "/api/model", headers={"host": "evil.example"}).status_code == 400
    assert httpx.get(url + "/api/model", headers={"host": "localhost"}).status_code == 200
