"""The page in a real browser: Debian's chromium driven by Playwright (never Playwright's own browser download),
against the real server (scripts/serve.py) on a free loopback port with a tiny trained workdir. It uploads a PNG,
a NIfTI volume and a DICOM series the test generates, checks the label, the probability, the overlay, that the
opacity, branch and slice controls change what is shown (the slice slider from the keyboard), that oversized
uploads show their error, and saves a screenshot.

CI installs the browser with `apt-get install -y chromium`; without it on PATH this test is skipped."""
import importlib.util
import pathlib
import re
import shutil
import sys

import httpx
import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("tests.web_support", HERE / "web_support.py")
support = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = support
spec.loader.exec_module(support)

CHROMIUM = shutil.which("chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)")]

# Canvas pixels as [r, g, b, ...]: enough to compare what is shown.
PIXELS = "() => Array.from(document.getElementById('view').getContext('2d').getImageData(0, 0, " \
         "document.getElementById('view').width, document.getElementById('view').height).data)" \
         ".filter((_, i) => i % 4 != 3)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = support.trained_workdir(tmp_path_factory)
    uploads = tmp_path_factory.mktemp("server_tmp")
    with support.running_server(workdir, uploads, tmp_path_factory.mktemp("log") / "serve.log") as (url, _):
        yield url
    assert list(uploads.iterdir()) == []


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server + "/")
        page.wait_for_selector("#card-body dl")
        yield page
        browser.close()


def _shown(page, drawn_suffix=None):
    """The canvas pixels once the latest drawing is done."""
    page.wait_for_function("() => document.getElementById('view').dataset.drawn !== undefined")
    if drawn_suffix is not None:
        page.wait_for_function(f"() => document.getElementById('view').dataset.drawn.endsWith({drawn_suffix!r})")
    return np.array(page.evaluate(PIXELS), np.int16).reshape(-1, 3)


def _colourful(pixels) -> float:
    return float(np.abs(pixels[:, 0] - pixels[:, 2]).mean())


def _set_range(page, selector, value):
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value))


def _upload(page, *paths):
    page.eval_on_selector("#view", "el => { delete el.dataset.drawn; }")
    page.set_input_files("#file-input", [str(path) for path in paths])


def test_the_page_classifies_uploads_and_its_controls_change_what_is_shown(server, page, tmp_path):
    assert page.is_visible("#banner-research") and "Not a medical device" in page.inner_text("#banner-research")
    assert not page.is_visible("#banner-phantom")  # the toy is not the phantom
    assert "1024x1024" in page.inner_text("#limits") and "64 files" in page.inner_text("#limits")

    png = tmp_path / "slice one.png"
    png.write_bytes(support.raster_bytes(support.body(seed=1)))
    _upload(page, png)
    page.wait_for_selector("#result:not([hidden])")
    grey_and_heat = _shown(page, ":0.5")
    answer = httpx.post(server + "/api/classify", files=[("files", ("x", png.read_bytes(), "image/png"))]).json()
    expected, positive = answer["slices"][0], answer["positive_class"]
    verdict = page.inner_text("#verdict")
    assert verdict == f"{expected['class']}: probability of {positive} {expected['probability']:.3f}"
    assert f"{expected['probability']:.3f}" in page.inner_text("#sentence") and "threshold" in page.inner_text("#sentence")
    assert "slice one.png" in page.inner_text("#view-caption")  # the name, known to the page only
    assert page.is_hidden("#slice-box")
    assert _colourful(grey_and_heat) > 1, "no Grad-CAM overlay on the slice"

    _set_range(page, "#opacity", 0)
    grey = _shown(page, ":0")
    assert _colourful(grey) == 0, "at opacity 0 the slice must be shown alone, in grey"
    _set_range(page, "#opacity", 1)
    assert np.abs(_shown(page, ":1") - grey_and_heat).sum() > 0
    _set_range(page, "#opacity", 0.5)
    fused = _shown(page, ":0.5")
    branches = page.eval_on_selector_all("#branch option", "options => options.map(o => o.value)")
    assert branches[0] == "fused" and set(branches) == {"fused", "wide_resnet", "convnext", "vit"}
    changed = []
    for branch in branches[1:]:
        page.select_option("#branch", branch)
        changed.append(np.abs(_shown(page, f":{branch}:0.5") - fused).sum() > 0)
    assert any(changed), "choosing another branch's map changed nothing"
    page.select_option("#branch", "fused")

    volume = tmp_path / "volume.nii.gz"
    volume.write_bytes(support.nifti_bytes([support.body(shape=(60, 70), seed=30 + k) for k in range(5)],
                                           compressed=True))
    _upload(page, volume)
    page.wait_for_selector("#slice-box:not([hidden])")
    first = _shown(page, "0:fused:0.5")
    assert page.inner_text("#slice-value") == "1 of 5" and page.locator("#strip .bar").count() == 5
    page.focus("#slice")
    page.keyboard.press("ArrowRight")  # keyboard usable
    second = _shown(page, "1:fused:0.5")
    assert page.inner_text("#slice-value") == "2 of 5" and np.abs(second - first).sum() > 0
    assert "volume.nii.gz, slice 2" in page.inner_text("#view-caption")
    assert f"mean probability of {positive} over 5 slices" in page.inner_text("#study")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    series = []
    for k, number in enumerate((2, 3, 1)):
        series.append(tmp_path / f"IM{k}")
        series[-1].write_bytes(support.dicom_bytes(support.body(seed=40 + k, shape=(96, 80)), instance=number))
    _upload(page, *series)
    page.wait_for_function("() => document.getElementById('slice-value').textContent === '1 of 3'")
    assert "DICOM series (3 files), slice 1" in page.inner_text("#view-caption")
    assert support.PATIENT_NAME not in page.content()


def test_oversized_uploads_show_their_error(page, tmp_path):
    big = tmp_path / "huge.png"
    big.write_bytes(np.random.default_rng(0).bytes(65 * 2 ** 20))  # past the 64 MiB limit: refused before sending
    page.set_input_files("#file-input", str(big))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('larger than the limit')")
    assert re.search(r"65\.0 MiB, larger than the limit of 64\.0 MiB", page.inner_text("#message"))
    wide = tmp_path / "wide.png"  # small in bytes, over the pixel limit: only the server can tell
    wide.write_bytes(support.raster_bytes(support.body(shape=(100, 1100))))
    page.set_input_files("#file-input", str(wide))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('413')")
    message = page.inner_text("#message")
    assert "file 1 (wide.png)" in message and "exceeds the limit of 1024 pixels a side" in message, message
