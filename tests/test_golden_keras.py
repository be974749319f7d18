"""ResNet50, Xception and InceptionV3 against Keras 3 applications (JAX backend), whole models, inference mode.

Fixtures come from scripts/golden/keras_apps.py (tests/golden/, or $ASEMBLE_GOLDEN_DIR when set). They hold no
weights: both sides draw them from the fixture's seed with asemble_jax.models.keras_port, and the fixture's
checksum tells a changed weight rule apart from a wrong model. Any seed's fixtures must pass.
"""
import os
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from asemble_jax.models import count_parameters, keras_port
from asemble_jax.models.inception_v3 import InceptionV3
from asemble_jax.models.resnet50 import ResNet50
from asemble_jax.models.xception import Xception

GOLDEN_DIR = pathlib.Path(os.environ.get("ASEMBLE_GOLDEN_DIR", pathlib.Path(__file__).parent / "golden"))
MODELS = {"resnet50": ResNet50, "xception": Xception, "inception_v3": InceptionV3}
MAX_RELATIVE_ERROR = 1e-5
# Porting ~22M weights and compiling each whole model takes a few seconds per model.
pytestmark = pytest.mark.slow


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module", params=list(MODELS))
def compared(request):
    """(fixture arrays, our model with the fixture's weights, our logits and features on the fixture's images)."""
    name = request.param
    path = GOLDEN_DIR / f"keras_{name}.npz"
    if not path.is_file():
        pytest.fail(f"golden fixture {path} is missing: run .venv-oracle/bin/python scripts/make_golden_fixtures.py "
                    f"--out {GOLDEN_DIR} --only keras_apps")
    with np.load(path) as arrays:
        reference = {key: arrays[key] for key in arrays.files}
    model = nnx.eval_shape(lambda: MODELS[name](num_classes=reference["logits"].shape[-1],
                                                in_channels=reference["images"].shape[-1], rngs=nnx.Rngs(0)))
    weights = keras_port.keras_weights(model, int(reference["seed"]))
    checksum = keras_port.weights_checksum(weights)
    keras_port.load_keras_weights(model, weights)
    with jax.default_matmul_precision("highest"):
        logits, aux = nnx.jit(lambda m, images: m(images, train=False))(model, reference["images"])
    return reference, checksum, model, np.asarray(logits), jax.tree.map(np.asarray, aux["features"])


def test_weight_rule_reproduces_the_fixture_weights(compared):
    reference, checksum, *_ = compared
    assert checksum == str(reference["weights_sha256"]), (
        "keras_port.keras_weights no longer draws the weights the fixture was made with (changed rule or numpy "
        "stream): regenerate the fixtures")


def test_parameter_count_equals_keras(compared):
    reference, _, model, *_ = compared
    assert count_parameters(model) == int(reference["keras_param_count"])


def test_logits_match_keras(compared):
    reference, _, _, logits, _ = compared
    assert logits.shape == reference["logits"].shape
    assert _relative_error(logits, reference["logits"]) <= MAX_RELATIVE_ERROR


def test_intermediate_feature_maps_match_keras(compared):
    reference, _, _, _, features = compared
    taps = [key.removeprefix("feature/") for key in reference if key.startswith("feature/")]
    assert taps, "the fixture holds no intermediate maps"
    errors = {}
    for tap in taps:
        ours = features[tap]
        assert ours.shape == tuple(reference[f"shape/{tap}"]), tap
        errors[tap] = _relative_error(ours[..., reference[f"channels/{tap}"]], reference[f"feature/{tap}"])
    assert max(errors.values()) <= MAX_RELATIVE_ERROR, errors


def test_reference_logits_depend_on_the_image(compared):
    """A fixture whose logits barely depend on the input would let through errors that only shift them."""
    logits = compared[0]["logits"]
    spread = np.max(np.abs(logits[0] - logits[1])) / np.max(np.abs(logits))
    assert spread > 1000 * MAX_RELATIVE_ERROR
