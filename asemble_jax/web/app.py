"""The clinician web app: one static page and three API calls, over one trained workdir.

    GET  /               the page (static/index.html, app.js, style.css: nothing is loaded from elsewhere)
    GET  /healthz        {"status": "ok", ...the inference worker's counters}
    GET  /api/model      the model card (model_card.py), the decision threshold and the service limits
    POST /api/classify   multipart/form-data files -> per slice: class, probability, the slice the model saw and
                         Grad-CAM per branch and fused; per upload: the mean probability (the evaluation's
                         patient-level aggregate)

The model is loaded and compiled before the app exists (create_app), so no request waits for a compile; one
inference worker (inference.py) runs every batch. An upload is streamed into a folder of its own request, read
through the training preprocessing (uploads.py) and removed when the request ends, answered or not. Refusals are
one line of JSON, {"error": "..."}: 413 over a size limit, 415 not multipart, 422 malformed or unreadable, 401
without the token, 403 cross-origin, 503 busy or over the time limit.

Privacy and security: file names and DICOM headers are never read into a log or a response (files are "file K");
the access log is method, path, status and duration. Every response carries a Content-Security-Policy of
default-src 'self' and frame-ancestors 'none', nosniff and no referrer; API answers are Cache-Control: no-store;
there is no CORS, and a cross-origin POST is refused. With a token, every /api/ call must carry it as
'Authorization: Bearer TOKEN' (scripts/serve.py requires one for any bind other than loopback)."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any

import anyio
import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware

from asemble_jax.classify import Classifier, class_names
from asemble_jax.web.inference import Busy, InferenceWorker
from asemble_jax.web.model_card import model_card
from asemble_jax.web.uploads import Limits, UploadError, read_slices, receive_files, sources
from asemble_jax.workdir import WorkdirError, Workdir, load_trained_model

STATIC = pathlib.Path(__file__).parent / "static"
ACCESS_LOG = logging.getLogger("asemble_jax.web.access")
POSITIVE_CLASS = 1  # the evaluation's positive class (workdir.predict_split reports probabilities[:, 1])
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
# Reading and preprocessing run in threads beside the inference worker; two at a time keeps a burst of large
# uploads from holding many decoded volumes in memory at once.
READER_THREADS = 2


class _Guard:
    """ASGI middleware around every request: the token and same-origin checks of /api/, the security headers,
    and the one access-log line (method, path, status, duration; never a query string, client or file name)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, path = time.perf_counter(), [500], scope["path"]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["cache-control"] = "no-store" if path.startswith("/api/") or path == "/healthz" else "no-cache"
            await send(message)

        try:
            refusal = self._refusal(scope) if path.startswith("/api/") else None
            if refusal:
                await JSONResponse({"error": refusal[1]}, refusal[0])(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            ACCESS_LOG.info("%s %s %d %.1f ms", scope["method"], path, status[0], 1000 * (time.perf_counter() - start))

    def _refusal(self, scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        if self.token is not None:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return 401, "this server needs its access token (sent as 'Authorization: Bearer TOKEN')"
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin is not None and \
                origin.split("://", 1)[-1] != headers.get("host"):
            return 403, "cross-origin requests are refused"
        return None


def _png(image: np.ndarray) -> str:
    encoded, data = cv2.imencode(".png", image)
    assert encoded, "OpenCV could not encode a PNG of a uint8 image"
    return base64.b64encode(data.tobytes()).decode("ascii")


def create_app(workdir: str | os.PathLike, *, eval_dir: str | os.PathLike | None = None, token: str | None = None,
               limits: Limits = Limits(), batch_size: int = 16, max_queued_slices: int = 256,
               batching: bool = True, upload_dir: str | os.PathLike | None = None,
               trusted_hosts: list[str] | None = None, which: str = "best") -> FastAPI:
    """The app over the model trained in `workdir`, loaded and compiled before this returns. Evaluation reports
    are read from eval_dir (default WORKDIR/eval); uploads live in upload_dir (default the system's temporary
    folder), each in a folder of its own request; trusted_hosts, where given, are the only Host headers answered
    (a loopback server names its own, against DNS rebinding)."""
    workdir = os.fspath(workdir)
    model, config, step = load_trained_model(workdir, which=which)
    if config.model.num_classes != 2:
        raise WorkdirError(f"{workdir}: the web page shows binary models; this one has {config.model.num_classes} "
                           "classes")
    if max_queued_slices < limits.slices:
        raise ValueError(f"max_queued_slices ({max_queued_slices}) must hold one upload of limits.slices "
                         f"({limits.slices})")
    names = class_names(config)
    classifier = Classifier(model, image_size=config.data.image_size, num_classes=2, names=names,
                            batch_size=batch_size)
    card = model_card(workdir, config, step, model=model, names=names,
                      eval_dir=pathlib.Path(eval_dir or Workdir(workdir).path("eval")))
    threshold = card["threshold"]
    worker = InferenceWorker(classifier, threshold["value"], positive_class=POSITIVE_CLASS,
                             max_queued_slices=max_queued_slices, batching=batching)
    readers = anyio.CapacityLimiter(READER_THREADS)
    # python-multipart warns about malformed bodies, which the client is told about in its 422; quote nothing.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        worker.close()

    app = FastAPI(title="asemble_jax", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.worker = worker
    public_card = {"card": card, "threshold": threshold, "limits": limits.public(),
                   "positive_class": names[POSITIVE_CLASS], "token_required": token is not None}

    @app.exception_handler(UploadError)
    async def refused(_request, error: UploadError):
        return JSONResponse({"error": error.message, **({"errors": error.errors} if error.errors else {})},
                            error.status)

    @app.exception_handler(Busy)
    async def busy(_request, error: Busy):
        return JSONResponse({"error": str(error)}, 503)

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def health():
        return {"status": "ok", **worker.stats()}

    @app.get("/api/model")
    async def model_info():
        return public_card

    def read(paths: list[pathlib.Path], folder: pathlib.Path, deadline: float):
        found, errors = sources(paths, folder)
        read_, read_errors = read_slices(found, image_size=classifier.image_size, limits=limits, deadline=deadline)
        return read_, errors + read_errors

    @app.post("/api/classify")
    async def classify_upload(request: Request):
        deadline = time.monotonic() + limits.seconds
        folder = pathlib.Path(tempfile.mkdtemp(prefix="upload-", dir=upload_dir))
        try:
            async with asyncio.timeout(limits.seconds):
                paths = await receive_files(request.headers, request.stream(), folder, limits)
                slices, errors = await anyio.to_thread.run_sync(functools.partial(read, paths, folder, deadline),
                                                                limiter=readers)
                if not slices:
                    raise UploadError(422, errors[0] if len(errors) == 1 else
                                      f"nothing in the upload could be classified ({len(errors)} problems)",
                                      errors=errors)
                results = await asyncio.wrap_future(worker.submit([item.slice for item in slices]))
        except TimeoutError:  # the wrapped future is cancelled with it, so the worker skips what is left
            raise UploadError(503, f"the request took longer than the limit of {limits.seconds:g} s") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return _answer(slices, results, errors)

    def _answer(slices, results, errors) -> dict[str, Any]:
        shown = []
        for item, result in zip(slices, results):
            decided = worker.decide(result)
            shown.append({
                "source": item.source.name, "kind": item.source.kind, "files": list(item.source.files),
                "slice": item.number, "probability": float(result.probabilities[POSITIVE_CLASS]),
                "class": names[decided], "class_index": decided, "explained_class": names[result.explained_class],
                "image": _png(result.grey),
                "maps": {name: _png(np.uint8(np.round(255 * np.clip(heat, 0, 1)))) for name, heat in
                         result.maps.items()},
            })
        mean = float(np.mean([item["probability"] for item in shown]))
        return {
            "threshold": threshold, "positive_class": names[POSITIVE_CLASS], "classes": names, "slices": shown,
            "errors": errors,
            "study": {"mean_probability": mean, "n_slices": len(shown),
                      "how": f"the mean of the slices' probabilities of {names[POSITIVE_CLASS]}: the aggregate the "
                             "evaluation uses for a patient (its patient-level figures in the model card are at "
                             "threshold 0.5)"},
        }

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)
    app.add_middleware(_Guard, token=token)  # added last, so outermost: every answer gets its headers and log line
    return app


TOKEN_ENVIRONMENT = "ASEMBLE_WEB_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Connections uvicorn serves at once; past it, it answers 503 itself.
MAX_CONNECTIONS = 64


def serve(workdir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          **options) -> None:
    """scripts/serve.py: loads and compiles, then serves until interrupted. A bind other than loopback needs a
    token (argument, or the environment variable ASEMBLE_WEB_TOKEN); a loopback server answers only Host headers
    that name loopback."""
    import uvicorn

    from asemble_jax.errors import UserError

    token = token or os.environ.get(TOKEN_ENVIRONMENT) or None
    loopback = host in LOOPBACK_HOSTS
    if not loopback and token is None:
        raise UserError(f"--host={host} serves beyond this machine: give an access token (--token or "
                        f"{TOKEN_ENVIRONMENT}), which every API call must then carry")
    # force: importing JAX and TFDS already gave the root logger a handler, at level WARNING.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    start = time.perf_counter()
    app = create_app(workdir, token=token, trusted_hosts=list(LOOPBACK_HOSTS) if loopback else None, **options)
    logging.getLogger("asemble_jax.web").info("model loaded and compiled in %.1f s; serving http://%s:%d/%s",
                                              time.perf_counter() - start, host, port,
                                              " (API calls need the token)" if token else "")
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None, limit_concurrency=MAX_CONNECTIONS,
                server_header=False)
