"""The web app's API (asemble_jax/web) in process, on a tiny trained workdir: every input type classified as the
command-line tools classify it, every limit, the token, the headers, no upload left on disk, nothing from DICOM
headers or file names in logs or answers, and every nasty input a clean 4xx with the server healthy afterwards."""
import base64
import importlib.util
import json
import logging
import pathlib
import re
import struct
import sys
import zlib

import cv2
import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient

from asemble_jax import user_inputs
from asemble_jax.errors import run_main
from asemble_jax.web.app import create_app
from asemble_jax.web.uploads import MIB, Limits

HERE = pathlib.Path(__file__).resolve().parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


support = _load("tests.web_support", HERE / "web_support.py")
LIMITS = Limits(request_bytes=2 * MIB, files=8, side=300, slices=12, file_pixels=12 * 150 * 150, seconds=120)
SECRETS = (support.PATIENT_NAME, "Secretname", support.PATIENT_ID, support.BIRTH_DATE, support.SECRET_FILE_NAME,
           "Doe_Jane")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return support.trained_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def app(workdir, upload_dir):
    app = create_app(workdir, limits=LIMITS, upload_dir=upload_dir, batch_size=4, max_queued_slices=64)
    with TestClient(app) as client:
        yield app, client


@pytest.fixture(autouse=True)
def nothing_left_behind(request, upload_dir):
    """After every test, whatever it sent: no upload, folder or file, remains."""
    yield
    assert list(upload_dir.iterdir()) == [], f"{request.node.name} left uploads behind"


def _files(*named):
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


def _post(client, *named, **options):
    return client.post("/api/classify", files=_files(*named), **options)


def _refused(response, status, fragment):
    assert response.status_code == status, response.text
    payload = response.json()
    assert "\n" not in payload["error"] and fragment in payload["error"], payload
    return payload


def _expected(app, tmp_path, name, data):
    """What the Classifier gives for the file read by user_inputs directly: (positive probabilities, images)."""
    path = tmp_path / name
    if name.endswith("/"):
        path.mkdir()
        for index, part in enumerate(data):
            (path / f"{index}.dcm").write_bytes(part)
    else:
        path.write_bytes(data)
    classifier = app.state.worker.classifier
    slices = list(user_inputs.iter_slices(path, path, tmp_path, image_size=classifier.image_size, slice_index=None))
    results = list(classifier.explain(slices))
    return [float(r.probabilities[1]) for r in results], [r.grey for r in results]


def _decoded(base64_png):
    return cv2.imdecode(np.frombuffer(base64.b64decode(base64_png), np.uint8), cv2.IMREAD_UNCHANGED)


def test_every_input_type_is_classified_as_the_tools_classify_it(app, tmp_path):
    app_, client = app
    series = [support.dicom_bytes(support.body(seed=10 + k, shape=(96, 80)), instance=number)
              for k, number in enumerate((3, 1, 2))]
    volume = [support.body(seed=20 + k, shape=(40, 48)) for k in range(2)]
    uploads = [  # names that lie about the type: the content decides
        ("scan.dcm", support.raster_bytes(support.body(seed=1))),
        ("photo.png", support.raster_bytes(support.body(seed=2), "JPEG", quality=95)),
        ("pages.tif", support.tiff_pages([support.body(seed=3), support.body(seed=4)])),
        *((f"IM{k}", part) for k, part in enumerate(series)),
        ("volume.png", support.nifti_bytes(volume, compressed=False)),
        ("volume", support.nifti_bytes(volume, compressed=True)),
    ]
    response = _post(client, *uploads)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["errors"] == []
    by_source = {}
    for item in answer["slices"]:
        by_source.setdefault(item["source"], []).append(item)
    assert list(by_source) == ["file 1", "file 2", "file 3", "DICOM series of files 4-6", "file 7", "file 8"]
    assert [by_source[name][0]["kind"] for name in by_source] == ["PNG", "JPEG", "TIFF", "DICOM series", "NIfTI",
                                                                  "NIfTI"]
    local = {"file 1": ("a.png", uploads[0][1]), "file 2": ("b.jpg", uploads[1][1]), "file 3": ("c.tif", uploads[2][1]),
             "DICOM series of files 4-6": ("series/", series), "file 7": ("d.nii", uploads[6][1]),
             "file 8": ("e.nii.gz", uploads[7][1])}
    for name, (local_name, data) in local.items():
        probabilities, images = _expected(app_, tmp_path, local_name, data)
        items = by_source[name]
        assert [item["slice"] for item in items] == ([None] if len(items) == 1 and name in ("file 1", "file 2")
                                                     else list(range(len(items))))
        assert [item["probability"] for item in items] == pytest.approx(probabilities, abs=2e-4)
        for item, image in zip(items, images):
            np.testing.assert_array_equal(_decoded(item["image"]), image)  # the slice the model saw
            assert set(item["maps"]) == {"wide_resnet", "convnext", "vit", "fused"}
            heat = _decoded(item["maps"]["fused"])
            assert heat.shape == image.shape and heat.dtype == np.uint8
    # The series is in InstanceNumber order (uploaded 3, 1, 2): slice 0 is the file with InstanceNumber 1.
    series_images = [_decoded(item["image"]) for item in by_source["DICOM series of files 4-6"]]
    _, second_alone = _expected(app_, tmp_path, "one.dcm", series[1])
    np.testing.assert_array_equal(series_images[0], second_alone[0])
    # The threshold is the one chosen on validation, and the class and the maps follow it.
    threshold = answer["threshold"]
    assert threshold["chosen_on_validation"] and "Youden" in threshold["how"]
    for item in answer["slices"]:
        assert item["class_index"] == int(item["probability"] >= threshold["value"])
        assert item["explained_class"] == item["class"] == answer["classes"][item["class_index"]]
    probabilities = [item["probability"] for item in answer["slices"]]
    assert answer["study"]["mean_probability"] == pytest.approx(np.mean(probabilities))
    assert answer["study"]["n_slices"] == len(probabilities) == 11 and "aggregate" in answer["study"]["how"]


def test_a_single_dicom_file_is_read_alone(app, tmp_path):
    _, client = app
    response = _post(client, ("x", support.dicom_bytes(support.body(seed=5, shape=(96, 80)))))
    assert response.status_code == 200 and response.json()["slices"][0]["kind"] == "DICOM"


def test_the_model_card_states_the_threshold_chosen_on_validation(app, workdir):
    _, client = app
    info = client.get("/api/model").json()
    (report_path,) = (workdir / "eval").glob("*_val.json")
    report = json.loads(report_path.read_text())
    assert info["threshold"]["value"] == report["thresholds"]["youden"]["threshold"]
    assert info["threshold"]["chosen_on_validation"] and report_path.name in info["threshold"]["how"]
    card = info["card"]
    assert card["architecture"]["preset"] == "tiny" and card["architecture"]["parameters"] > 1000
    (evaluation,) = card["evaluations"]
    assert evaluation["role"] == "test" and evaluation["same_checkpoint"]
    assert evaluation["slice_level"]["youden"]["auc"] == {k: report["thresholds"]["youden"]["auc"][k]
                                                          for k in ("estimate", "ci_low", "ci_high")}
    assert card["training_data"]["synthetic_phantom"] is False and card["localization"] == []
    assert info["limits"] == LIMITS.public() and info["token_required"] is False


@pytest.mark.parametrize("case", ["bytes", "files", "side", "volume_slices", "request_slices", "file_pixels"])
def test_every_limit_is_a_413_with_one_line(app, case):
    _, client = app
    png = support.raster_bytes(support.body())
    uploads, fragment = {
        "bytes": ([("big", np.random.default_rng(0).bytes(3 * MIB))], "larger than the limit of 2 MiB"),
        "files": ([(f"f{k}", png) for k in range(9)], "more than the limit of 8 files"),
        "side": ([("wide", support.raster_bytes(support.body(shape=(120, 400))))],
                 "exceeds the limit of 300 pixels a side"),
        "volume_slices": ([("v", support.nifti_bytes([support.body(shape=(20, 20), seed=k) for k in range(13)],
                                                     compressed=True))], "volume of 13 slices exceeds the limit of 12"),
        "request_slices": ([*((f"p{k}", png) for k in range(5)),
                            ("v", support.nifti_bytes([support.body(shape=(20, 20), seed=k) for k in range(8)],
                                                      compressed=True))],
                           "more than the limit of 12 slices per request"),
        "file_pixels": ([("v", support.nifti_bytes([support.body(shape=(160, 160), seed=k) for k in range(12)],
                                                   compressed=True))], "exceeds the limit of 270000"),
    }[case]
    _refused(_post(client, *uploads), 413, fragment)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(app):
    _, client = app
    response = client.post("/api/classify", content=b"x" * 10,
                           headers={"content-type": "multipart/form-data; boundary=b",
                                    "content-length": str(3 * MIB)})
    _refused(response, 413, "larger than the limit of 2 MiB")


@pytest.fixture(scope="module")
def guarded(workdir, upload_dir):
    """A second app: with a token, and a time limit no request can meet."""
    app = create_app(workdir, limits=Limits(seconds=0.001), token="s3cret-token", upload_dir=upload_dir,
                     batch_size=4)
    with TestClient(app) as client:
        yield client


def test_the_time_limit_is_a_503(guarded):
    response = guarded.post("/api/classify", files=_files(("a", support.raster_bytes(support.body()))),
                            headers={"authorization": "Bearer s3cret-token"})
    _refused(response, 503, "took longer than the limit of 0.001 s")


def test_the_token_is_checked_on_every_api_call(guarded):
    for path in ("/api/model", "/api/classify"):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
            _refused(guarded.request("GET" if path == "/api/model" else "POST", path, headers=headers), 401,
                     "needs its access token")
    assert guarded.get("/api/model", headers={"authorization": "Bearer s3cret-token"}).json()["token_required"]
    assert guarded.get("/healthz").status_code == 200 and guarded.get("/").status_code == 200


def test_security_headers_and_no_cors(app):
    _, client = app
    for path in ("/", "/static/app.js", "/static/style.css", "/api/model", "/healthz", "/nothing-here"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in response.headers
    assert client.get("/api/model").headers["cache-control"] == "no-store"
    answer = _post(client, ("a", support.raster_bytes(support.body())))
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    preflight = client.options("/api/classify", headers={"origin": "http://evil.example",
                                                         "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers and preflight.status_code >= 400
    _refused(_post(client, ("a", support.raster_bytes(support.body())), headers={"origin": "http://evil.example"}),
             403, "cross-origin")
    same_origin = _post(client, ("a", support.raster_bytes(support.body())), headers={"origin": "http://testserver"})
    assert same_origin.status_code == 200
    page = client.get("/").text
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page must load nothing from elsewhere"


def test_nothing_from_dicom_headers_or_file_names_reaches_logs_or_answers(app, caplog):
    _, client = app
    caplog.set_level(logging.DEBUG)
    dicom = support.dicom_bytes(support.body(seed=6, shape=(96, 80)))
    answers = [_post(client, (support.SECRET_FILE_NAME, support.raster_bytes(support.body()))),
               _post(client, (f"{support.PATIENT_NAME}.dcm", dicom)),
               _post(client, (support.SECRET_FILE_NAME, b"not an image at all")),
               _post(client, (support.SECRET_FILE_NAME, dicom), (f"{support.PATIENT_ID}.dcm", dicom))]
    assert [a.status_code for a in answers] == [200, 200, 422, 422]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in SECRETS:
        assert not any(secret in a.text for a in answers), secret
        assert secret not in logged, secret
    access = [record.getMessage() for record in caplog.records if record.name == "asemble_jax.web.access"]
    assert len(access) == len(answers)
    assert all(re.fullmatch(r"POST /api/classify \d{3} \d+\.\d ms", line) for line in access), access


def _nasty_uploads():
    png = support.raster_bytes(support.body())
    inf_volume = [support.body(shape=(40, 48), seed=k) for k in range(5)]
    inf_volume[1] = np.full((40, 48), np.inf)
    inf_volume[3] = np.full((40, 48), np.nan)
    header = struct.pack(">IIBBBBB", 50000, 50000, 8, 0, 0, 0, 0)  # a 50000 x 50000 8-bit grey PNG: a bomb
    bomb = b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(data)) + kind + data +
                                         struct.pack(">I", zlib.crc32(kind + data))
                                         for kind, data in ((b"IHDR", header), (b"IDAT", b""), (b"IEND", b"")))
    many_parts = b"".join(b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x\"\r\n\r\nx\r\n"
                          for _ in range(5000)) + b"--b--\r\n"
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    return [
        ("corrupt", _files(("corrupt.png", b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(3000))), 422,
         "not a recognised image"),
        ("truncated", _files(("truncated.png", png[:400])), 422, "truncated or corrupt"),
        ("zero bytes", _files(("zero.jpg", b"")), 422, "empty (0 bytes)"),
        ("text", _files(("notes.txt", b"a radiology report, not an image\n" * 20)), 422, "not a PNG, JPEG"),
        ("black", _files(("black.png", support.raster_bytes(np.zeros((120, 100))))), 422, "no usable contrast"),
        ("constant", _files(("constant.png", support.raster_bytes(np.full((120, 100), 77)))), 422,
         "no usable contrast"),
        ("zeros volume", _files(("zeros.nii.gz", support.nifti_bytes(np.zeros((3, 40, 48)), compressed=True))), 422,
         "nothing in the upload could be classified (3 problems)"),
        ("strip", _files(("strip.png", support.raster_bytes(np.random.default_rng(5).integers(0, 256, (8, 20000)))
                          )), 413, "exceeds the limit of 300 pixels a side"),
        ("bomb", _files(("bomb.png", bytes(bomb))), 413, "exceeds the limit"),
        ("gzip, not NIfTI", _files(("x.nii.gz", __import__("gzip").compress(b"hello" * 100))), 422, "not a PNG"),
        ("non-finite slices", _files(("scan.nii", support.nifti_bytes(inf_volume, compressed=False))), 200, None),
        ("malformed", {"content": b"--b\r\nContent-Disposition: form-data\r\n\r\nabc", "headers": multipart}, 422,
         "ended before its last part"),
        ("garbage", {"content": np.random.default_rng(2).bytes(5000), "headers": multipart}, 422,
         "not well-formed multipart"),
        ("no boundary", {"content": b"abc", "headers": {"content-type": "multipart/form-data"}}, 415,
         "must be multipart/form-data"),
        ("wrong content type", {"content": b"{}", "headers": {"content-type": "application/json"}}, 415,
         "must be multipart/form-data"),
        ("empty body", {"content": b"", "headers": multipart}, 422, "ended before"),
        ("no file", {"content": b"--b--\r\n", "headers": multipart}, 422, "holds no file"),
        ("thousands of tiny parts", {"content": many_parts, "headers": multipart}, 413,
         "more than the limit of 8 files"),
    ]


def test_nasty_inputs_are_clean_4xx_and_the_server_stays_healthy_with_bounded_memory(app):
    _, client = app
    process = psutil.Process()
    good = support.raster_bytes(support.body(seed=9))
    assert _post(client, ("good", good)).status_code == 200
    before = process.memory_info().rss
    for _ in range(3):
        for name, upload, status, fragment in _nasty_uploads():
            options = {"files": upload} if isinstance(upload, list) else upload
            response = client.post("/api/classify", **options)
            if fragment is None:
                assert response.status_code == status, (name, response.text)
                answer = response.json()
                assert [item["slice"] for item in answer["slices"]] == [0, 2, 4], name
                assert answer["errors"] == [f"file 1 slice {k}: no finite pixel values (all NaN or infinite)"
                                            for k in (1, 3)]
            else:
                _refused(response, status, fragment)
            assert "Traceback" not in response.text
    grown = process.memory_info().rss - before
    assert grown < 300 * MIB, f"RSS grew by {grown / MIB:.0f} MiB over three rounds of nasty uploads"
    assert client.get("/healthz").json()["status"] == "ok"
    assert _post(client, ("good", good)).status_code == 200


def test_serve_refuses_a_public_bind_without_a_token(workdir, capsys, monkeypatch):
    monkeypatch.delenv("ASEMBLE_WEB_TOKEN", raising=False)
    serve = _load("serve_script", HERE.parent / "scripts" / "serve.py")
    assert run_main(serve.main, [f"--workdir={workdir}", "--host=0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --host=0.0.0.0 serves beyond this machine"), err
