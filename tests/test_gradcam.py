"""Grad-CAM: against pytorch-grad-cam (golden fixtures from scripts/golden/gradcam.py, in tests/golden/ or
$ASEMBLE_GOLDEN_DIR; any seed's fixtures must pass), on a model whose answer is known by construction, on the
tiny ASembleNet (shapes, range, the weight-randomisation sanity check), the batching core of asemble_jax/classify.py,
and scripts/gradcam.py end to end."""
import importlib.util
import os
import pathlib
import sys

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import nibabel as nib
import numpy as np
import pydicom
import pytest
from flax import nnx

from asemble_jax import classify, gradcam
from asemble_jax.errors import InputError, UserError, run_main
from asemble_jax.models import create_model
from asemble_jax.models.vit import VisionTransformer
from asemble_jax.user_inputs import load_slices, write_png

GOLDEN_DIR = pathlib.Path(os.environ.get("ASEMBLE_GOLDEN_DIR", pathlib.Path(__file__).parent / "golden"))
MAX_HEATMAP_ERROR = 1e-5
SCRIPT = pathlib.Path(__file__).parent.parent / "scripts" / "gradcam.py"
TINY_SIZE = 64


# ---- against pytorch-grad-cam ----

class Twin(nnx.Module):
    """The Flax twin of the fixture models: three 3x3 convs (strides 1, 2, 2) + ReLU, pooled, and optionally our
    VisionTransformer beside them (its class token concatenated), then a linear head."""

    def __init__(self, config: dict, *, rngs: nnx.Rngs):
        widths = (1, *config["widths"])
        # Every weight comes from the fixture; zeros spare compiling the default random initialisers.
        zeros = dict(kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.convs = nnx.List([
            nnx.Conv(widths[i], widths[i + 1], (3, 3), strides=stride, padding=((1, 1), (1, 1)), **zeros)
            for i, stride in enumerate((1, 2, 2))])
        self.vit = VisionTransformer(
            in_channels=1, image_size=config["image_size"], patch_size=config["patch_size"], dim=config["vit_dim"],
            depth=config["vit_depth"], num_heads=config["vit_heads"], rngs=rngs) if "vit_dim" in config else None
        self.head = nnx.Linear(widths[-1] + (config.get("vit_dim") or 0), config["classes"], **zeros)

    def offset_features(self):
        return ("conv", "vit") if self.vit is not None else ("conv",)

    def __call__(self, images, *, train=False, feature_offsets=None):
        offsets = feature_offsets or {}
        x = images
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        if "conv" in offsets:
            x = x + offsets["conv"]
        features, embeddings = {"conv": x}, [x.mean(axis=(1, 2))]
        if self.vit is not None:
            _, class_embedding, features["vit"] = self.vit(images, attention_input_offset=offsets.get("vit"))
            embeddings.append(class_embedding)
        return self.head(jnp.concatenate(embeddings, axis=-1)), {"features": features}


TWIN_LAYERS = {"conv": gradcam.CamLayer("conv"), "vit": gradcam.CamLayer("vit", class_token_first=True)}


def _load_fixture(name: str) -> dict[str, np.ndarray]:
    path = GOLDEN_DIR / f"gradcam_{name}.npz"
    if not path.is_file():
        pytest.fail(f"golden fixture {path} is missing: run .venv-oracle/bin/python scripts/make_golden_fixtures.py "
                    f"--out {GOLDEN_DIR} --only gradcam")
    with np.load(path) as arrays:
        return dict(arrays)


def _twin(arrays: dict[str, np.ndarray]) -> Twin:
    config = {key.removeprefix("config/"): value.tolist() for key, value in arrays.items() if key.startswith("config/")}
    params = {key.removeprefix("param/"): value for key, value in arrays.items() if key.startswith("param/")}
    model = Twin(config, rngs=nnx.Rngs(0))
    ours = {"/".join(map(str, path)): variable.shape
            for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert set(ours) == set(params), f"our parameters {sorted(ours)} != ported {sorted(params)}"
    for path, shape in ours.items():
        assert shape == params[path].shape, f"{path}: ours {shape}, ported {params[path].shape}"
    nnx.update(model, nnx.from_flat_state(
        [(tuple(int(p) if p.isdigit() else p for p in path.split("/")), jnp.asarray(value))
         for path, value in params.items()]))
    return model


@pytest.mark.parametrize("name", ["cnn", "hybrid"])
def test_heatmaps_match_pytorch_grad_cam(name):
    arrays = _load_fixture(name)
    model = _twin(arrays)
    layers = {layer: spec for layer, spec in TWIN_LAYERS.items() if layer in model.offset_features()}
    for kind in ("predicted", "other"):
        references = {key.removeprefix(f"cam/{kind}/"): value for key, value in arrays.items()
                      if key.startswith(f"cam/{kind}/")}
        assert set(references) == set(layers) | ({gradcam.FUSED} if len(layers) > 1 else set())
        target = None if kind == "predicted" else arrays[f"target/{kind}"]
        result = gradcam.grad_cam(model, arrays["input"], layers, target_class=target)
        logits = np.asarray(result.logits)
        assert np.max(np.abs(logits - arrays["logits"])) <= 1e-5 * np.max(np.abs(arrays["logits"])), \
            "the twin does not reproduce the reference model: the weight port is wrong"
        np.testing.assert_array_equal(result.target_class, arrays[f"target/{kind}"])
        assert set(result.maps) == set(references)
        for layer, reference in references.items():
            assert reference.max() > 0.99, f"{name}/{kind}/{layer}: the reference map has no heat, nothing to compare"
            ours = np.asarray(result.maps[layer])
            assert ours.shape == reference.shape and ours.dtype == np.float32
            error = float(np.max(np.abs(ours - reference)))
            assert error <= MAX_HEATMAP_ERROR, f"{name}/{kind}/{layer}: max abs error {error:.2e} vs pytorch-grad-cam"


@pytest.mark.parametrize("low, high", [((4, 4), (64, 64)), ((5, 7), (18, 26)), ((3, 3), (10, 10)), ((4, 4), (4, 4))])
def test_upsampling_is_opencv_inter_linear(low, high):
    cams = np.random.default_rng(0).random((2, *low), dtype=np.float32)
    reference = np.stack([cv2.resize(cam, high[::-1], interpolation=cv2.INTER_LINEAR) for cam in cams])
    np.testing.assert_allclose(np.asarray(gradcam.upsample(jnp.asarray(cams), high)), reference, atol=1e-6)


# ---- known answer: each logit sees one quadrant only ----

class QuadrantModel(nnx.Module):
    """Logit q = mean brightness of quadrant q (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), seen
    through a 4x4-pooled map whose channel q is zero outside quadrant q. So the gradient of logit q reaches
    channel q only, and Grad-CAM must put all heat of class q in quadrant q."""

    CELL = 4

    def offset_features(self):
        return ("quadrants",)

    def __call__(self, images, *, train=False, feature_offsets=None):
        pooled = nnx.avg_pool(images, (self.CELL, self.CELL), strides=(self.CELL, self.CELL))
        rows, cols = pooled.shape[1:3]
        quadrant = (np.arange(rows)[:, None] >= rows // 2) * 2 + (np.arange(cols)[None, :] >= cols // 2)
        features = pooled * jax.nn.one_hot(quadrant, 4)
        if feature_offsets:
            features = features + feature_offsets["quadrants"]
        return features.sum(axis=(1, 2)) / (rows // 2 * cols // 2), {"features": {"quadrants": features}}


QUADRANT_LAYERS = {"quadrants": gradcam.CamLayer("quadrants")}
QUADRANT_SIDE = 32


def _quadrant_mask(quadrant: int, margin: int = 0) -> np.ndarray:
    half = QUADRANT_SIDE // 2
    top, left = (quadrant // 2) * half, (quadrant % 2) * half
    mask = np.zeros((QUADRANT_SIDE, QUADRANT_SIDE), bool)
    mask[max(0, top - margin):top + half + margin, max(0, left - margin):left + half + margin] = True
    return mask


def _quadrant_images(bright: list[int]) -> np.ndarray:
    rng = np.random.default_rng(1)
    images = rng.uniform(0.2, 0.6, (len(bright), QUADRANT_SIDE, QUADRANT_SIDE, 1)).astype(np.float32)
    for image, quadrant in zip(images, bright):
        image[_quadrant_mask(quadrant)] += 0.4
    return images


def _assert_heat_in_quadrant(heatmap: np.ndarray, quadrant: int) -> None:
    # Bilinear upsampling of 4-pixel cells carries heat at most half a cell past the quadrant's edge.
    assert np.all(heatmap[~_quadrant_mask(quadrant, margin=QuadrantModel.CELL // 2)] == 0), "heat far outside"
    assert heatmap[_quadrant_mask(quadrant)].sum() >= 0.9 * heatmap.sum()
    assert _quadrant_mask(quadrant)[np.unravel_index(np.argmax(heatmap), heatmap.shape)]


def test_known_answer_heat_falls_in_the_quadrant_the_logit_reads():
    images = _quadrant_images([0, 1, 2, 3])
    predicted = gradcam.grad_cam(QuadrantModel(), images, QUADRANT_LAYERS)
    np.testing.assert_array_equal(predicted.target_class, [0, 1, 2, 3])  # the bright quadrant wins
    for index, quadrant in enumerate([0, 1, 2, 3]):
        _assert_heat_in_quadrant(np.asarray(predicted.maps["quadrants"][index]), quadrant)
    targets = [3, 2, 0, 1]
    given = gradcam.grad_cam(QuadrantModel(), images, QUADRANT_LAYERS, target_class=targets)
    np.testing.assert_array_equal(given.target_class, targets)
    for index, quadrant in enumerate(targets):
        _assert_heat_in_quadrant(np.asarray(given.maps["quadrants"][index]), quadrant)


def test_a_map_without_heat_is_zero_not_nan():
    images = _quadrant_images([0])
    images[0][_quadrant_mask(3)] = 0.0  # class 3 reads a black quadrant: its weighted map is zero everywhere
    heatmap = np.asarray(gradcam.grad_cam(QuadrantModel(), images, QUADRANT_LAYERS, target_class=3).maps["quadrants"])
    assert np.all(heatmap == 0)


@pytest.mark.parametrize("target", [-1, 4, [0, 5]])
def test_target_classes_outside_the_model_are_refused(target):
    with pytest.raises(ValueError, match="target classes must be"):
        gradcam.grad_cam(QuadrantModel(), _quadrant_images([0, 1]), QUADRANT_LAYERS, target_class=target)


# ---- the tiny ASembleNet ----

@pytest.fixture(scope="module")
def tiny_model():
    return create_model("asemblenet", "tiny", rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tiny_images():
    return np.asarray(jax.random.uniform(jax.random.key(2), (4, TINY_SIZE, TINY_SIZE, 1)))


def test_every_branch_map_has_the_input_shape_and_lies_in_unit_range(tiny_model, tiny_images):
    layers = gradcam.model_layers(tiny_model)
    assert list(layers) == ["wide_resnet", "convnext", "vit"]
    maps = gradcam.grad_cam(tiny_model, tiny_images, layers).maps
    assert set(maps) == {"wide_resnet", "convnext", "vit", gradcam.FUSED}
    for name, heatmap in maps.items():
        heatmap = np.asarray(heatmap)
        assert heatmap.shape == (4, TINY_SIZE, TINY_SIZE) and heatmap.dtype == np.float32, name
        assert np.all(np.isfinite(heatmap)) and heatmap.min() >= 0 and heatmap.max() <= 1, name
        assert heatmap.max() > 0.99, f"{name}: no heat at all"


def test_maps_change_when_the_weights_are_randomised(tiny_model, tiny_images):
    """Adebayo et al. 2018: a saliency map that survives re-randomising the weights explains nothing."""
    layers = gradcam.model_layers(tiny_model)
    original = gradcam.grad_cam(tiny_model, tiny_images, layers).maps
    randomised = gradcam.grad_cam(create_model("asemblenet", "tiny", rngs=nnx.Rngs(1)), tiny_images, layers).maps
    for name in original:
        a, b = np.asarray(original[name]).ravel(), np.asarray(randomised[name]).ravel()
        assert np.mean(np.abs(a - b)) > 0.05 and np.corrcoef(a, b)[0, 1] < 0.9, name


@pytest.mark.parametrize("variant, expected", [("wide_resnet_only", ["wide_resnet"]),
                                               ("no_vit", ["wide_resnet", "convnext"]),
                                               ("vit_only", ["vit"])])
def test_layers_follow_the_branches_a_variant_has(variant, expected):
    from asemble_jax.models import ablation_variants
    model = nnx.eval_shape(lambda: create_model("asemblenet", "tiny", rngs=nnx.Rngs(0), **ablation_variants()[variant]))
    assert list(gradcam.model_layers(model)) == expected


@pytest.mark.parametrize("name", ["resnet50", "xception", "inception_v3"])
def test_baselines_are_read_at_their_last_conv(name):
    model = nnx.eval_shape(lambda: create_model(name, "tiny", rngs=nnx.Rngs(0)))
    assert list(gradcam.model_layers(model)) == ["last_conv"]


def test_feature_offsets_add_to_the_named_maps_and_nothing_else(tiny_model, tiny_images):
    names = tiny_model.offset_features()
    shapes = jax.eval_shape(lambda: tiny_model(tiny_images, feature_offsets={n: 0.0 for n in names}))[1]["features"]
    zeros = {n: jnp.zeros(shapes[n].shape) for n in names}
    offset = jax.random.normal(jax.random.key(3), shapes["convnext"].shape)

    @nnx.jit  # one compilation for the three calls
    def forwards(model, images, zeros, offset):
        return model(images), model(images, feature_offsets=zeros), model(images, feature_offsets={"convnext": offset})

    (logits, aux), (zero_logits, zero_aux), (shifted_logits, shifted) = forwards(tiny_model, tiny_images, zeros, offset)
    np.testing.assert_array_equal(zero_logits, logits)
    assert zero_aux["features"]["vit_attention_input"].shape == (4, (TINY_SIZE // 16) ** 2 + 1, 32)
    np.testing.assert_allclose(shifted["features"]["convnext"], aux["features"]["convnext"] + offset, atol=1e-6)
    np.testing.assert_array_equal(shifted["features"]["wide_resnet"], aux["features"]["wide_resnet"])
    assert not np.allclose(shifted_logits, logits)


def test_offsets_for_a_branch_the_model_lacks_are_refused():
    model = nnx.eval_shape(lambda: create_model("asemblenet", "tiny", rngs=nnx.Rngs(0), use_vit=False))
    with pytest.raises(ValueError, match="vit_attention_input"):
        nnx.eval_shape(lambda m: m(jnp.zeros((1, TINY_SIZE, TINY_SIZE, 1)),
                                   feature_offsets={"vit_attention_input": 0.0}), model)


def test_models_without_offsets_are_refused_by_name():
    with pytest.raises(TypeError, match="Linear does not support Grad-CAM"):
        gradcam.model_layers(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_overlay_is_hot_where_the_heatmap_is():
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[:, :4] = 1.0
    rgb = gradcam.overlay(np.full((8, 8), 128, np.uint8), heatmap).astype(int)
    assert rgb.shape == (8, 8, 3)
    assert rgb[0, 0, 0] > rgb[0, 7, 0] and rgb[0, 0, 2] < rgb[0, 7, 2], "jet: red where hot, blue where cold"


# ---- asemble_jax/classify.py's core ----

def _classifier(model, batch_size: int) -> classify.Classifier:
    return classify.Classifier(model, image_size=TINY_SIZE, num_classes=2, batch_size=batch_size)


def test_padding_a_batch_changes_no_result_and_an_unreadable_file_is_counted_once(tiny_model, tmp_path):
    y, x = np.mgrid[:90, :80]
    paths = [tmp_path / f"{name}.png" for name in ("a", "b", "bad", "c")]
    for seed, path in enumerate(paths):
        cv2.imwrite(str(path), np.uint8(40 + 50 * seed + 120 * ((y - 30 - 10 * seed) ** 2 + (x - 40) ** 2 < 400)))
    paths[2].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    files = classify.given_files(paths, tmp_path / "out")
    runs = {}
    for batch_size in (2, 4):  # 3 readable slices: a full batch and one padded by one; one batch padded by one
        errors = classify.FileErrors(echo=False)
        runs[batch_size] = list(_classifier(tiny_model, batch_size).explain_files(files, on_error=errors))
        assert [error.path for error in errors.errors] == [str(paths[2])] and errors.exit_status() == 1
        assert [result.slice.label for result in runs[batch_size]] == [str(paths[k]) for k in (0, 1, 3)]
    for two, four in zip(runs[2], runs[4]):
        np.testing.assert_allclose(two.probabilities, four.probabilities, atol=1e-5)
        assert two.explained_class == four.explained_class == two.predicted
        assert set(two.maps) == {"wide_resnet", "convnext", "vit", gradcam.FUSED}
        for name in two.maps:
            np.testing.assert_allclose(two.maps[name], four.maps[name], atol=1e-4, err_msg=name)
    alone = next(_classifier(tiny_model, 4).explain(load_slices(paths[3], paths[3], tmp_path, image_size=TINY_SIZE,
                                                                slice_index=None)))
    np.testing.assert_allclose(alone.probabilities, runs[4][2].probabilities, atol=1e-5)


def test_a_volume_s_unusable_slices_are_refused_one_by_one_and_the_others_explained(tiny_model, tmp_path):
    volume = np.random.default_rng(8).normal(500, 100, (40, 48, 5)).astype(np.float32)
    volume[10:30, 12:36, :] += 800
    volume[:, :, 1] = np.inf
    volume[:, :, 2] = 0.0
    volume[:, :, 4] = np.nan
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((90, 80), np.uint8))
    errors = classify.FileErrors(echo=False)
    results = list(_classifier(tiny_model, 4).explain_files(classify.given_files([path, black], tmp_path / "out"),
                                                            on_error=errors))
    assert [result.slice.label for result in results] == [f"{path} slice {k}" for k in (0, 3)]
    assert [error.path for error in errors.errors] == [f"{path} slice {k}" for k in (1, 2, 4)] + [str(black)]
    problems = [error.problem for error in errors.errors]
    assert problems[0] == problems[2] == "no finite pixel values (all NaN or infinite)"
    assert problems[1].startswith("no usable contrast") and problems[3].startswith("no usable contrast")
    assert errors.exit_status() == 1


def test_a_bad_batch_size_or_target_class_is_a_user_error(tiny_model):
    for batch_size in (0, -1, 2.5):
        with pytest.raises(UserError, match="batch_size must be a whole number >= 1"):
            _classifier(tiny_model, batch_size)
    for target in (-1, 2):
        with pytest.raises(UserError, match="target_class must be in 0..1"):
            _classifier(tiny_model, 4).explain([], target_class=target)


def test_an_unwritable_png_names_its_path(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "x.png"
    with pytest.raises(InputError, match="cannot be written") as raised:
        write_png(path, np.zeros((4, 4), np.uint8))
    assert raised.value.path == str(path)


# ---- scripts/gradcam.py ----

@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gradcam_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def inputs(tmp_path, shared_data):
    folder = tmp_path / "in"
    (folder / "series").mkdir(parents=True)
    dicom = next((shared_data / "iaxspa_demo" / "data").rglob("I*"))
    (folder / "series" / dicom.name).write_bytes(dicom.read_bytes())
    nifti = next((shared_data / "bone_mri" / "data" / "images_study" / "STIR").rglob("*_STIR.nii.gz"))
    (folder / nifti.name).write_bytes(nifti.read_bytes())
    y, x = np.mgrid[:200, :160]
    cv2.imwrite(str(folder / "phantom.png"), np.uint8(60 + 120 * ((y - 100) ** 2 + (x - 80) ** 2 < 50 ** 2)))
    (folder / "broken.dcm").write_bytes(dicom.read_bytes()[:1000])
    (folder / "empty.png").write_bytes(b"")
    return folder, dicom, nifti


def test_script_writes_overlays_and_names_each_unreadable_file(script, tiny_model, inputs, tmp_path, capsys):
    folder, dicom, nifti = inputs
    out = tmp_path / "out"
    status = classify.write_explanations(_classifier(tiny_model, 4), folder, out=out, slice_index=2)
    captured = capsys.readouterr()
    assert status == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert any("broken.dcm" in line for line in errors) and any("empty.png" in line for line in errors)
    prefixes = [out / "series" / dicom.name, out / f"{nifti.name}_slice2", out / "phantom.png"]
    for prefix in prefixes:
        for what in ("input", "wide_resnet", "convnext", "vit", "fused"):
            written = cv2.imread(str(prefix.with_name(f"{prefix.name}_{what}.png")), cv2.IMREAD_UNCHANGED)
            assert written is not None, f"{prefix}_{what}.png"
            assert written.shape == ((TINY_SIZE, TINY_SIZE) if what == "input" else (TINY_SIZE, TINY_SIZE, 3))
    assert len(captured.out.strip().splitlines()) == 3
    assert not list(out.rglob(".tmp-*")), "a temporary file was left behind"
    header = pydicom.dcmread(dicom, stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientAge", "StudyDate", "PatientBirthDate"):
        value = str(header.get(keyword, "") or "")
        if len(value) >= 3:
            assert value not in captured.out + captured.err, f"DICOM {keyword} was printed"


def test_script_refuses_a_slice_a_volume_does_not_have(script, tiny_model, inputs, tmp_path, capsys):
    _, _, nifti = inputs
    status = classify.write_explanations(_classifier(tiny_model, 4), inputs[0] / nifti.name, out=tmp_path / "out",
                                         slice_index=99)
    error = capsys.readouterr().err.strip()
    assert status == 1 and error.count("\n") == 0 and nifti.name in error and "no slice 99" in error


def test_script_main_loads_the_workdir_and_reports_setup_errors(script, tiny_model, inputs, tmp_path, capsys,
                                                               monkeypatch):
    folder = inputs[0]
    nothing = tmp_path / "nothing"
    assert run_main(script.main, [f"--workdir={nothing}", f"--input={folder}", f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "config.json" in err[0]
    config = ml_collections.ConfigDict({"data": {"image_size": TINY_SIZE}, "model": {"num_classes": 2}})
    monkeypatch.setattr(classify, "load_trained_model", lambda workdir, which: (tiny_model, config, 7))
    assert run_main(script.main, ["--workdir=w", f"--input={folder / 'missing.png'}", f"--out={tmp_path}"]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err
    assert run_main(script.main, ["--workdir=w", f"--input={folder}", f"--out={tmp_path}", "--target_class=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target_class must be in 0..1" in err[0]
    assert run_main(script.main, ["--workdir=w", f"--input={folder}", f"--out={tmp_path}", "--batch_size=0"]) == 2
    assert "batch_size must be a whole number >= 1" in capsys.readouterr().err
    out = tmp_path / "main_out"
    assert run_main(script.main, ["--workdir=w", f"--input={folder / 'phantom.png'}", f"--out={out}",
                                  "--target_class=1", "--batch_size=4"]) == 0
    assert "map of class 1" in capsys.readouterr().out
    assert (out / "phantom.png_fused.png").is_file()
    # The size limits are flags: phantom.png is 200x160.
    assert run_main(script.main, ["--workdir=w", f"--input={folder / 'phantom.png'}", f"--out={out}",
                                  "--max_side=150"]) == 1
    assert "200x160 slice exceeds the limit of 150 pixels a side" in capsys.readouterr().err
    nifti = next(folder.glob("*.nii.gz"))
    assert run_main(script.main, ["--workdir=w", f"--input={nifti}", f"--out={out}", "--max_slices=3"]) == 1
    assert "slices exceeds the limit of 3 (max_slices" in capsys.readouterr().err
