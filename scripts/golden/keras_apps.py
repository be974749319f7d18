"""Golden fixtures for the baselines: Keras 3 applications ResNet50, Xception and InceptionV3 (JAX backend),
forward pass in inference mode, with weights drawn by asemble_jax.models.keras_port's deterministic rule.

Each keras_<model>.npz holds the seed, the input batch, the reference logits, a few named intermediate maps (our
aux["features"] names; both images, 16 channels spread over all channels, to localise an error), and the sha256
of the weights, which are not stored: the test draws them again from the seed.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from asemble_jax.models import keras_port  # noqa: E402
from asemble_jax.models.inception_v3 import InceptionV3  # noqa: E402
from asemble_jax.models.resnet50 import ResNet50  # noqa: E402
from asemble_jax.models.xception import Xception  # noqa: E402

NUM_CLASSES = 2
IN_CHANNELS = 1
BATCH = 2  # fixture_images draws one image per pattern
STORED_CHANNELS = 16

# Non-square inputs catch swapped axes; these sizes make stride-2 "same" layers see both even sizes (where the
# extra padding goes bottom/right only) and odd ones, and leave InceptionV3's last blocks a 2x2 grid, not 1x1.
# Each entry: (our class, Keras constructor, input height and width, our feature name -> Keras tensor), where a
# Keras tensor is ("output", layer name) or ("input", layer name) of the next named layer where Keras leaves the
# producing layer unnamed; auto-names ("max_pooling2d_1") count from keras.backend.clear_session().
MODELS = {
    "resnet50": (ResNet50, keras.applications.ResNet50, (96, 128), {
        "stem": ("output", "pool1_pool"),
        "conv2": ("output", "conv2_block3_out"),
        "conv3": ("output", "conv3_block4_out"),
        "conv4": ("output", "conv4_block6_out"),
        "conv5": ("output", "conv5_block3_out"),
    }),
    "xception": (Xception, keras.applications.Xception, (96, 128), {
        "stem": ("output", "block1_conv2_act"),
        "entry_flow": ("input", "block5_sepconv1_act"),
        "middle_flow": ("input", "block13_sepconv1_act"),
        "exit_flow": ("output", "block14_sepconv2_act"),
    }),
    "inception_v3": (InceptionV3, keras.applications.InceptionV3, (107, 128), {
        "stem": ("output", "max_pooling2d_1"),
        **{f"mixed{index}": ("output", f"mixed{index}") for index in (0, 2, 3, 7, 8, 10)},
    }),
}


def keras_tensor(model: keras.Model, where: str, layer: str):
    found = model.get_layer(layer)
    return found.output if where == "output" else found.input


def fixture_images(seed: int, height: int, width: int) -> np.ndarray:
    """Two noise images under different patterns (a left-to-right ramp; a bright centred disc): after global
    pooling, two plain noise images would give nearly the same logits and hide errors that shift both."""
    rng = np.random.default_rng([seed, height, width])
    noise = rng.uniform(0.0, 1.0, (BATCH, height, width, IN_CHANNELS))
    y, x = np.mgrid[0:height, 0:width]
    ramp = x / (width - 1)
    disc = (y - height / 2) ** 2 + (x - width / 2) ** 2 < (min(height, width) / 3) ** 2
    return (noise * np.stack([ramp, 0.2 + 0.8 * disc])[..., None]).astype(np.float32)


def make_one(name: str, seed: int, out: pathlib.Path) -> pathlib.Path:
    ours_class, keras_class, (height, width), taps = MODELS[name]
    keras.backend.clear_session()
    reference = keras_class(include_top=True, weights=None, input_shape=(height, width, IN_CHANNELS),
                            classes=NUM_CLASSES, classifier_activation=None)
    ours = nnx.eval_shape(lambda: ours_class(num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, rngs=nnx.Rngs(0)))
    weights = keras_port.keras_weights(ours, seed)

    weighted = {layer.name for layer in reference.layers if layer.weights}
    if weighted != set(weights):
        raise RuntimeError(f"{name}: Keras layers {sorted(weighted - set(weights))[:5]} have no counterpart, "
                           f"ours {sorted(set(weights) - weighted)[:5]} no Keras layer")
    for layer_name, arrays in weights.items():
        reference.get_layer(layer_name).set_weights(arrays)
    keras_total = sum(int(np.prod(w.shape)) for w in reference.weights)

    images = fixture_images(seed, height, width)
    tap_names = list(taps)
    probe = keras.Model(reference.input, [reference.output] + [keras_tensor(reference, *taps[t]) for t in tap_names])
    with jax.default_matmul_precision("highest"):
        logits, *maps = (np.asarray(a) for a in probe(images, training=False))

    arrays = {
        "seed": np.int64(seed),
        "weights_sha256": np.str_(keras_port.weights_checksum(weights)),
        "keras_version": np.str_(keras.__version__),
        "keras_param_count": np.int64(keras_total),
        "images": images,
        "logits": logits.astype(np.float32),
    }
    for tap, feature_map in zip(tap_names, maps):
        channels = np.linspace(0, feature_map.shape[-1] - 1, STORED_CHANNELS).round().astype(np.int64)
        arrays[f"feature/{tap}"] = feature_map[..., channels].astype(np.float32)
        arrays[f"channels/{tap}"] = channels
        arrays[f"shape/{tap}"] = np.asarray(feature_map.shape, np.int64)
    target = out / f"keras_{name}.npz"
    with tempfile.NamedTemporaryFile(dir=out, suffix=".npz", delete=False) as handle:
        np.savez_compressed(handle, **arrays)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, target)
    return target


def make(seed: int, out: pathlib.Path) -> list[pathlib.Path]:
    return [make_one(name, seed, out) for name in MODELS]
