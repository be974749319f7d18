"""The Keras-application baselines: parameter counts, shapes and aux, input limits, dtypes, train/eval plumbing.

Numerical equivalence with Keras is tests/test_golden_keras.py. The big models here are built and traced
abstractly (nnx.eval_shape), never run; BatchNorm's Keras semantics are checked on one conv-BN unit.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asemble_jax import gradcam
from asemble_jax.models import available_models, count_parameters, create_model, keras_port, presets
from asemble_jax.models.baseline_blocks import ConvBN
from asemble_jax.models.inception_v3 import InceptionV3
from asemble_jax.models.resnet50 import ResNet50
from asemble_jax.models.xception import Xception

# Keras 3 applications' own totals (include_top, weights=None, 1 input channel, 2 classes), BatchNorm moving
# statistics included, as model.count_params() reports them.
KERAS_TOTALS = {ResNet50: 23_585_538, Xception: 20_865_002, InceptionV3: 21_806_306}
# Keras's minimum input side per application (min_size in keras.applications).
KERAS_MIN_SIZES = {ResNet50: 32, Xception: 71, InceptionV3: 75}
# First convolution (kernel height x width x output channels), the only layer whose size depends on the input
# channels: ResNet50 7x7x64, Xception 3x3x32, InceptionV3 3x3x32.
STEM_KERNEL_SIZES = {ResNet50: 7 * 7 * 64, Xception: 3 * 3 * 32, InceptionV3: 3 * 3 * 32}
FINAL_FEATURES = 2048
REGISTRY_NAMES = {ResNet50: "resnet50", Xception: "xception", InceptionV3: "inception_v3"}
BASELINES = list(KERAS_TOTALS)


@functools.cache
def _abstract(model_class, **kwargs):
    """Built once per class and arguments; eval_shape of a call works on a copy, so sharing it is safe."""
    return nnx.eval_shape(lambda: model_class(rngs=nnx.Rngs(0), **kwargs))


def _output_shapes(model, images_shape, dtype=jnp.float32, train=False):
    images = jax.ShapeDtypeStruct(images_shape, dtype)
    return nnx.eval_shape(lambda m, x: m(x, train=train), model, images)


def _valid(size: int, kernel: int, stride: int = 1) -> int:
    return (size - kernel) // stride + 1


def _same(size: int, stride: int) -> int:
    return -(-size // stride)


def _last_conv_side(model_class, side: int) -> int:
    """The side of the final feature map, from each architecture's published layer arithmetic."""
    if model_class is ResNet50:
        # 7x7/2 on a 3-pixel zero pad, 3x3/2 max pool on a 1-pixel pad, then three stride-2 stages.
        side = _valid(_valid(side + 6, 7, 2) + 2, 3, 2)
        for _ in range(3):
            side = _same(side, 2)
        return side
    if model_class is Xception:
        # Two "valid" 3x3 convolutions (the first /2), then four blocks ending in a "same" 3x3/2 max pool.
        side = _valid(_valid(side, 3, 2), 3)
        for _ in range(4):
            side = _same(side, 2)
        return side
    # InceptionV3: 3x3/2, 3x3, 3x3 same, max pool 3x3/2, 1x1, 3x3, max pool 3x3/2, then mixed3 and mixed8 reduce
    # with "valid" 3x3/2.
    side = _valid(_valid(_valid(side, 3, 2), 3), 3, 2)
    side = _valid(_valid(side, 3), 3, 2)
    return _valid(_valid(side, 3, 2), 3, 2)


@pytest.mark.parametrize("model_class", BASELINES)
def test_parameter_count_equals_keras_application(model_class):
    assert count_parameters(_abstract(model_class)) == KERAS_TOTALS[model_class]


@pytest.mark.parametrize("model_class", BASELINES)
def test_input_channels_and_classes_change_only_stem_and_classifier(model_class):
    grown = count_parameters(_abstract(model_class, in_channels=3, num_classes=5))
    expected = KERAS_TOTALS[model_class] + 2 * STEM_KERNEL_SIZES[model_class] + 3 * (FINAL_FEATURES + 1)
    assert grown == expected


@pytest.mark.parametrize("model_class", BASELINES)
def test_registry_builds_every_preset(model_class):
    name = REGISTRY_NAMES[model_class]
    assert name in available_models()
    assert set(presets(name)) >= {"tiny", "small", "paper"}
    model = nnx.eval_shape(lambda: create_model(name, "paper", rngs=nnx.Rngs(0)))
    assert type(model) is model_class
    assert count_parameters(model) == KERAS_TOTALS[model_class]


@pytest.mark.parametrize("model_class", BASELINES)
@pytest.mark.parametrize("side", ["minimum", 256])
def test_shapes_and_aux(model_class, side):
    side = KERAS_MIN_SIZES[model_class] if side == "minimum" else side
    logits, aux = _output_shapes(_abstract(model_class), (2, side, side + 5, 1))
    assert logits.shape == (2, 2) and logits.dtype == jnp.float32
    last_conv = aux["features"]["last_conv"]
    assert last_conv.shape == (2, _last_conv_side(model_class, side), _last_conv_side(model_class, side + 5),
                               FINAL_FEATURES)
    assert set(aux["features"]) == set(model_class.FEATURE_NAMES)
    assert len(model_class.FEATURE_NAMES) >= 4, "named stages besides last_conv localise errors and feed Grad-CAM"
    for name, feature_map in aux["features"].items():
        assert feature_map.ndim == 4 and feature_map.shape[0] == 2, name


@pytest.mark.parametrize("model_class", BASELINES)
def test_below_minimum_size_is_a_clear_error(model_class):
    minimum = KERAS_MIN_SIZES[model_class]
    model = _abstract(model_class)
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}.*got {minimum - 1}x{minimum}"):
        _output_shapes(model, (1, minimum - 1, minimum, 1))
    with pytest.raises(ValueError, match=f"got {minimum}x{minimum - 1}"):
        _output_shapes(model, (1, minimum, minimum - 1, 1))


@pytest.mark.parametrize("model_class", BASELINES)
def test_wrong_channels_or_rank_is_a_clear_error(model_class):
    model = _abstract(model_class)
    side = KERAS_MIN_SIZES[model_class]
    with pytest.raises(ValueError, match="built for 1 input channel.*got 3"):
        _output_shapes(model, (1, side, side, 3))
    with pytest.raises(ValueError, match="expects images shaped"):
        _output_shapes(model, (side, side, 1))


@pytest.mark.parametrize("model_class", BASELINES)
def test_unknown_feature_offset_is_a_clear_error(model_class):
    side = KERAS_MIN_SIZES[model_class]
    images = jax.ShapeDtypeStruct((1, side, side, 1), jnp.float32)
    with pytest.raises(ValueError, match="feature_offsets names wide_resnet.*takes offsets for .*last_conv"):
        nnx.eval_shape(lambda m, x: m(x, feature_offsets={"wide_resnet": jnp.zeros(())}), _abstract(model_class),
                       images)


@pytest.mark.parametrize("model_class", BASELINES)
def test_scalar_feature_offset_keeps_every_map_and_its_dtype(model_class):
    """Grad-CAM probes the maps' shapes with a Python 0.0 offset on each; bfloat16 maps must stay bfloat16."""
    side = KERAS_MIN_SIZES[model_class]
    images = jax.ShapeDtypeStruct((1, side, side, 1), jnp.bfloat16)
    offsets = {name: 0.0 for name in model_class.FEATURE_NAMES}
    _, aux = nnx.eval_shape(lambda m, x: m(x, feature_offsets=offsets), _abstract(model_class, dtype=jnp.bfloat16),
                            images)
    assert {name: m.dtype for name, m in aux["features"].items()} == {
        name: jnp.dtype(jnp.bfloat16) for name in model_class.FEATURE_NAMES}


@pytest.mark.parametrize("model_class", BASELINES)
def test_grad_cam_reads_the_last_convolution(model_class):
    assert set(gradcam.model_layers(_abstract(model_class))) == {"last_conv"}


def test_gradient_through_a_zero_feature_offset_is_the_gradient_at_the_map():
    """Grad-CAM's hook: d logit / d offset at last_conv is the classifier's column spread evenly over the
    positions (global average pooling, then a dense layer)."""
    # Seeded weights set from numpy: much faster than a random initialisation op by op.
    model = nnx.eval_shape(lambda: ResNet50(rngs=nnx.Rngs(0)))
    keras_port.load_keras_weights(model, keras_port.keras_weights(model, seed=0))
    images = np.random.default_rng(0).uniform(0.0, 1.0, (2, 32, 48, 1)).astype(np.float32)
    graphdef, state = nnx.split(model)
    offset = jnp.zeros((2, 1, 2, FINAL_FEATURES))  # 32x48 -> 1x2 positions
    target_class = 1

    def logit_sum(offset, state):
        logits, _ = nnx.merge(graphdef, state)(images, feature_offsets={"last_conv": offset})
        return logits[:, target_class].sum()

    gradient = np.asarray(jax.jit(jax.grad(logit_sum))(offset, state))
    column = np.asarray(model.head.kernel[...])[:, target_class]
    np.testing.assert_allclose(gradient, np.broadcast_to(column / 2, gradient.shape), rtol=1e-6)


@pytest.mark.parametrize("model_class", BASELINES)
def test_bfloat16_compute_keeps_float32_parameters_and_logits(model_class):
    model = _abstract(model_class, dtype=jnp.bfloat16)
    side = KERAS_MIN_SIZES[model_class]
    logits, aux = _output_shapes(model, (2, side, side, 1), dtype=jnp.bfloat16)
    assert logits.dtype == jnp.float32
    assert aux["features"]["last_conv"].dtype == jnp.bfloat16
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat))}
    assert dtypes == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("model_class", BASELINES)
@pytest.mark.parametrize("train", [False, True])
def test_every_batch_norm_follows_the_train_flag(model_class, train, monkeypatch):
    """Each BatchNorm is called exactly once per forward pass, with running averages in eval and batch
    statistics in training: a block that forgets to pass `train` on shows up here."""
    calls = []
    original = nnx.BatchNorm.__call__

    def spy(self, x, use_running_average=None, **kwargs):
        calls.append((id(self), use_running_average))
        return original(self, x, use_running_average=use_running_average, **kwargs)

    monkeypatch.setattr(nnx.BatchNorm, "__call__", spy)
    model = _abstract(model_class)
    batch_norms = sum(isinstance(node, nnx.BatchNorm) for _, node in nnx.iter_graph(model))
    side = KERAS_MIN_SIZES[model_class]
    _output_shapes(model, (2, side, side, 1), train=train)
    # eval_shape works on a copy of the model, so count distinct modules rather than match identities.
    assert len(calls) == len({module for module, _ in calls}) == batch_norms
    assert {mode for _, mode in calls} == {not train}


def test_conv_bn_normalises_and_updates_statistics_as_keras_does():
    """Train mode normalises with the batch's (biased) statistics and moves the moving statistics 1% of the way
    towards them (Keras momentum 0.99); eval mode normalises with the moving statistics, epsilon inside the
    square root, and leaves them alone."""
    epsilon = 1.001e-5
    unit = ConvBN(2, 3, 1, use_bias=True, bn_epsilon=epsilon, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(1, 1, 2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    moving_mean, moving_var = rng.normal(size=3).astype(np.float32), rng.uniform(0.5, 1.5, 3).astype(np.float32)
    for variable, value in ((unit.conv.kernel, kernel), (unit.conv.bias, bias), (unit.bn.scale, gamma),
                            (unit.bn.bias, beta), (unit.bn.mean, moving_mean), (unit.bn.var, moving_var)):
        variable.set_value(jnp.asarray(value))
    x = rng.normal(size=(4, 5, 6, 2)).astype(np.float32)
    conv = np.einsum("bhwi,io->bhwo", x.astype(np.float64), kernel[0, 0]) + bias

    with jax.default_matmul_precision("highest"):
        eval_out = np.asarray(unit(jnp.asarray(x), train=False))
        np.testing.assert_allclose(eval_out, (conv - moving_mean) / np.sqrt(moving_var + epsilon) * gamma + beta,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(unit.bn.mean[...]), moving_mean)

        train_out = np.asarray(unit(jnp.asarray(x), train=True))
    batch_mean, batch_var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
    np.testing.assert_allclose(train_out, (conv - batch_mean) / np.sqrt(batch_var + epsilon) * gamma + beta,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(unit.bn.mean[...]), 0.99 * moving_mean + 0.01 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(unit.bn.var[...]), 0.99 * moving_var + 0.01 * batch_var, rtol=1e-5)
