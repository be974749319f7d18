"""scripts/predict.py (asemble_jax/classify.py's write_predictions) on a tiny trained workdir: good files next to
corrupt, truncated, zero-byte and non-image ones, volumes, same-name files, no DICOM header data in anything printed
or written, and one line with status 2 for an unusable workdir, --out or --batch_size."""
import importlib.util
import io
import os
import pathlib
import re
import sys

import cv2
import jax
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from asemble_jax import classify
from asemble_jax import workdir as workdir_lib
from asemble_jax.data.pipeline import to_model_input
from asemble_jax.data.preprocess import preprocess
from asemble_jax.data.readers import read_image
from asemble_jax.errors import run_main

ROOT = pathlib.Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "predict.py"
# The persistent cache that conftest.py sets up; the training config matches tests/test_train.py's, so a run
# after it compiles nothing.
# The toy dataset and its tiny trained workdir are the web tests' too.
_spec = importlib.util.spec_from_file_location("tests.web_support", ROOT / "tests" / "web_support.py")
support = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("tests.web_support", support)
_spec.loader.exec_module(support)
PATIENT_NAME, PATIENT_ID, BIRTH_DATE = support.PATIENT_NAME, support.PATIENT_ID, support.BIRTH_DATE
LINE = re.compile(r"^(?P<label>.+): (?P<name>\S+) \(p=(?P<p>[0-9.]+)\), Grad-CAM: (?P<overlay>.+\.png)$")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return support.trained_workdir(tmp_path_factory, evaluate=False)


@pytest.fixture(scope="module")
def trained(workdir):
    model, config, _ = workdir_lib.load_trained_model(str(workdir))
    return model, config


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("predict_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _png_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:120, :100]
    image = np.uint8(np.clip(60 + 120 * ((y - 60) ** 2 + (x - 50) ** 2 < 35 ** 2) + rng.normal(0, 10, y.shape),
                             0, 255))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "good.png"
    good.write_bytes(_png_bytes(0))
    (folder / "scan.dcm").write_bytes(support.dicom_bytes(np.random.default_rng(3).uniform(0, 255, (96, 80))))
    bad = {
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(3000),
        "truncated.png": _png_bytes(2)[:400],
        "zero.jpg": b"",
        "notes.txt": b"this is a radiology report, not an image\n" * 20,
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return folder, good, folder / "scan.dcm", [folder / name for name in bad]


def _parse(stdout: str) -> list[dict]:
    lines = stdout.strip().splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), f"unexpected output lines: {lines}"
    return [m.groupdict() for m in matches]


def test_bad_files_get_one_line_each_and_the_good_ones_are_still_predicted(script, workdir, trained, files,
                                                                            tmp_path, capsys):
    folder, good, dicom, bad = files
    out = tmp_path / "out"
    arguments = [good, bad[0], dicom, *bad[1:]]
    status = run_main(script.main, [f"--workdir={workdir}", f"--out={out}", *map(str, arguments)])
    captured = capsys.readouterr()
    assert status == 1, "some files failed: the exit status must say so"

    errors = captured.err.strip().splitlines()
    assert len(errors) == len(bad)
    for path, line in zip(bad, errors):
        assert line.startswith(f"error: {path}: ") and len(line) > len(f"error: {path}: ") + 5, line
    assert "empty" in errors[2] and "not a recognised image" in errors[3]
    assert "Traceback" not in captured.err

    predictions = _parse(captured.out)
    assert [p["label"] for p in predictions] == [str(good), str(dicom)]
    model, config = trained
    for path, prediction in zip((good, dicom), predictions):
        # The probability a user sees is the model's on the training preprocessing of the file.
        image = to_model_input(preprocess(read_image(path)).image, config.data.image_size)
        logits, _ = model(image[None], train=False)
        probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))[0]
        predicted = int(np.argmax(probabilities))
        assert prediction["name"] == ("healthy", "AS")[predicted]
        assert float(prediction["p"]) == pytest.approx(probabilities[predicted], abs=1.5e-3)
        overlay = cv2.imread(prediction["overlay"], cv2.IMREAD_UNCHANGED)
        assert overlay is not None and overlay.shape == (config.data.image_size, config.data.image_size, 3)
        assert pathlib.Path(prediction["overlay"]).parent == out


def _run(script, trained, files, out, **options):
    model, config = trained
    classifier = classify.Classifier(model, image_size=config.data.image_size, num_classes=2, names=["healthy", "AS"])
    return classify.write_predictions(classifier, list(files), out=out, **options)


def test_a_run_of_readable_files_succeeds(script, trained, files, tmp_path, capsys):
    _, good, dicom, _ = files
    assert _run(script, trained, [good, dicom], tmp_path / "out") == 0
    assert len(_parse(capsys.readouterr().out)) == 2


def test_nothing_from_dicom_headers_is_printed_or_written(script, trained, files, tmp_path, capsys):
    _, _, dicom, _ = files
    out = tmp_path / "out"
    assert _run(script, trained, [dicom], out) == 0
    captured = capsys.readouterr()
    written = [path for path in out.rglob("*") if path.is_file()]
    assert written, "the overlay was not written"
    for secret in (PATIENT_NAME, "Secretname", PATIENT_ID, BIRTH_DATE):
        assert secret not in captured.out + captured.err
        assert not any(secret in str(path) for path in written)
        assert not any(secret.encode() in path.read_bytes() for path in written)


def test_volumes_give_one_line_per_slice_or_the_chosen_slice(script, trained, tmp_path, capsys):
    volume = np.random.default_rng(4).normal(500, 100, (40, 48, 3)).astype(np.float32)
    volume[10:30, 12:36, :] += 800
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)

    assert _run(script, trained, [path], tmp_path / "all") == 0
    assert [p["label"] for p in _parse(capsys.readouterr().out)] == [f"{path} slice {k}" for k in range(3)]

    assert _run(script, trained, [path], tmp_path / "one", slice_index=1) == 0
    (prediction,) = _parse(capsys.readouterr().out)
    assert prediction["label"] == f"{path} slice 1" and os.path.exists(prediction["overlay"])

    assert _run(script, trained, [path], tmp_path / "none", slice_index=7) == 1
    assert "has 3 slices" in capsys.readouterr().err


def test_files_with_the_same_name_do_not_overwrite_each_other(script, trained, tmp_path, capsys):
    first, second = tmp_path / "a" / "image.png", tmp_path / "b" / "image.png"
    for seed, path in enumerate((first, second)):
        path.parent.mkdir()
        path.write_bytes(_png_bytes(10 + seed))
    assert _run(script, trained, [first, second], tmp_path / "out") == 0
    overlays = [p["overlay"] for p in _parse(capsys.readouterr().out)]
    assert len(set(overlays)) == 2 and all(os.path.exists(path) for path in overlays)
    assert not np.array_equal(cv2.imread(overlays[0]), cv2.imread(overlays[1]))


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and not captured.out, captured
    return err[0]


def test_an_unusable_workdir_is_one_line_and_status_2(script, tmp_path, capsys):
    assert run_main(script.main, [f"--workdir={tmp_path}", str(tmp_path / "x.png")]) == 2
    assert "config.json" in _one_error_line(capsys)
    (tmp_path / "config.json").write_text('{"data": {"image_size": 6')  # cut short
    assert run_main(script.main, [f"--workdir={tmp_path}", str(tmp_path / "x.png")]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {tmp_path / 'config.json'}: ") and "not a readable config" in line


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_batch_size_below_one_is_one_line_and_status_2(script, workdir, files, value, capsys):
    assert run_main(script.main, [f"--workdir={workdir}", f"--batch_size={value}", str(files[1])]) == 2
    assert "batch_size must be a whole number >= 1" in _one_error_line(capsys)


def test_an_unwritable_out_folder_is_one_line_and_status_2(script, workdir, files, tmp_path, capsys):
    _, good, _, _ = files
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # so that no folder can be made below it, even by root
    assert run_main(script.main, [f"--workdir={workdir}", f"--out={blocker / 'out'}", str(good)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {blocker / 'out' / 'good.png_gradcam.png'}: cannot be written: "), line


def _error_lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in err, err
    return [line[len("error: "):] for line in lines]


def test_blank_constant_and_nearly_blank_inputs_are_refused_not_classified(script, trained, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "good.png"
    good.write_bytes(_png_bytes(0))
    Image.fromarray(np.zeros((120, 100), np.uint8)).save(folder / "black.png")
    Image.fromarray(np.full((120, 100), 77, np.uint8)).save(folder / "constant.png")
    # 8 x 20000: squared and padded by the crop, the model's input is almost empty.
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (8, 20000)).astype(np.uint8)).save(folder / "strip.png")
    # What a gzip bomb with a plausible header decompresses to.
    nib.save(nib.Nifti1Image(np.zeros((40, 48, 3), np.float32), np.eye(4)), folder / "zeros.nii.gz")
    names = ["black.png", "constant.png", "zeros.nii.gz"]
    status = _run(script, trained, [good, *(folder / name for name in names)], tmp_path / "out")
    captured = capsys.readouterr()
    assert status == 1, "refused slices must make the exit status say so"
    assert [p["label"] for p in _parse(captured.out)] == [str(good)]
    refused = [str(folder / "black.png"), str(folder / "constant.png"),
               *(f"{folder / 'zeros.nii.gz'} slice {k}" for k in range(3))]
    errors = _error_lines(captured.err)
    assert len(errors) == len(refused)
    for label, line in zip(refused, errors):
        assert line.startswith(f"{label}: no usable contrast"), line
    # The strip is over the default size limit; past it, the contrast check refuses it.
    assert _run(script, trained, [folder / "strip.png"], tmp_path / "out", max_side=20000) == 1
    captured = capsys.readouterr()
    assert not captured.out
    assert _error_lines(captured.err)[0].startswith(f"{folder / 'strip.png'}: no usable contrast after windowing")


def test_a_volume_with_non_finite_slices_classifies_the_others(script, trained, tmp_path, capsys):
    volume = np.random.default_rng(4).normal(500, 100, (40, 48, 5)).astype(np.float32)
    volume[10:30, 12:36, :] += 800
    volume[:, :, 1] = np.inf
    volume[:, :, 3] = np.nan
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    assert _run(script, trained, [path], tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert [p["label"] for p in _parse(captured.out)] == [f"{path} slice {k}" for k in (0, 2, 4)]
    assert _error_lines(captured.err) == [f"{path} slice {k}: no finite pixel values (all NaN or infinite)"
                                          for k in (1, 3)]


def test_size_limits_are_flags_stated_in_the_help(script, workdir, files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max_side" in help_text and "(default 4096)" in help_text
    assert "--max_slices" in help_text and "(default 1024)" in help_text
    _, good, dicom, _ = files  # good.png is 120x100
    out = tmp_path / "out"
    assert run_main(script.main, [f"--workdir={workdir}", f"--out={out}", "--max_side=110", str(good), str(dicom)]) == 1
    captured = capsys.readouterr()
    assert [p["label"] for p in _parse(captured.out)] == [str(dicom)]
    assert _error_lines(captured.err) == [
        f"{good}: 120x100 slice exceeds the limit of 110 pixels a side (max_side; refused before decoding)"]
    volume = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(6).normal(size=(16, 16, 3)).astype(np.float32), np.eye(4)), volume)
    assert run_main(script.main, [f"--workdir={workdir}", f"--out={out}", "--max_slices=2", str(volume)]) == 1
    assert "volume of 3 slices exceeds the limit of 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([f"--workdir={workdir}", "--max_side=3", str(good)])
    assert "--max_side: must be a whole number >= 8" in capsys.readouterr().err
