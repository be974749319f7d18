"""Keras applications <-> our baselines: which Keras layer each of our modules is, and a deterministic weight rule.

The golden fixtures for ResNet50, Xception and InceptionV3 cannot hold the weights (about 90 MB per model), so
both sides derive them from a seed instead: `keras_weights(model, seed)` draws every Keras layer's weights, in
Keras's own shapes and `get_weights()` order, from a numpy generator keyed by (seed, Keras layer name, weight
role). The fixture maker sets them into the Keras model with `set_weights`; the tests set the same arrays into ours
with `load_keras_weights`. Scales keep activations of order one through ~100 layers of random weights, so that
the comparison stays meaningful to the last logit (neither exploding nor dying ReLUs): fan-in scaled kernels,
BatchNorm statistics and affine terms near (but not at) the identity, and a smaller gamma where a residual branch
ends.

Keras names unnamed layers in creation order ("conv2d", "conv2d_1", ...; InceptionV3 names none of its
convolutions), counted from a fresh `keras.backend.clear_session()`; the listings below follow that order.
"""
from __future__ import annotations

import hashlib
import itertools
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from asemble_jax.models.baseline_blocks import ConvBN, SeparableConv
from asemble_jax.models.inception_v3 import Branch, InceptionV3, SplitBranch
from asemble_jax.models.resnet50 import ResNet50
from asemble_jax.models.xception import DownsamplingBlock, SeparableBN, Xception

Baseline = ResNet50 | Xception | InceptionV3
# Residual branches add onto their input, so with gamma ~ 1 the activations of ResNet50 and Xception would double
# in variance with every block; a small gamma on the BatchNorm that ends a branch keeps them of order one.
RESIDUAL_BRANCH_GAMMA = 0.2


class KerasLayer(NamedTuple):
    """One Keras layer that holds weights, with the module of ours that plays its part."""

    name: str
    module: nnx.Conv | nnx.BatchNorm | SeparableConv | nnx.Linear
    ends_residual_branch: bool = False


def keras_layers(model: Baseline) -> list[KerasLayer]:
    """Every weighted Keras layer of the model's Keras twin, by Keras name, in Keras's creation order."""
    if isinstance(model, ResNet50):
        return list(_resnet50_layers(model))
    if isinstance(model, Xception):
        return list(_xception_layers(model))
    if isinstance(model, InceptionV3):
        return list(_inception_v3_layers(model))
    raise TypeError(f"no Keras twin is known for {type(model).__name__}")


def _conv_bn(conv_bn: ConvBN, conv_name: str, bn_name: str, *, ends_residual_branch=False) -> Iterator[KerasLayer]:
    yield KerasLayer(conv_name, conv_bn.conv)
    yield KerasLayer(bn_name, conv_bn.bn, ends_residual_branch)


def _resnet50_layers(model: ResNet50) -> Iterator[KerasLayer]:
    yield from _conv_bn(model.stem, "conv1_conv", "conv1_bn")
    for stage_index, stage in enumerate(model.stages):
        for block_index, block in enumerate(stage):
            prefix = f"conv{stage_index + 2}_block{block_index + 1}"
            convs = (block.shortcut, block.reduce, block.spatial, block.expand)
            for number, conv_bn in enumerate(convs):
                if conv_bn is not None:
                    yield from _conv_bn(conv_bn, f"{prefix}_{number}_conv", f"{prefix}_{number}_bn",
                                        ends_residual_branch=conv_bn is block.expand)
    yield KerasLayer("predictions", model.head)


def _auto_names(base: str) -> Iterator[str]:
    yield base
    for number in itertools.count(1):
        yield f"{base}_{number}"


def _separable_bn(unit: SeparableBN, name: str, *, ends_residual_branch=False) -> Iterator[KerasLayer]:
    yield KerasLayer(name, unit.conv)
    yield KerasLayer(f"{name}_bn", unit.bn, ends_residual_branch)


def _xception_layers(model: Xception) -> Iterator[KerasLayer]:
    yield from _conv_bn(model.stem1, "block1_conv1", "block1_conv1_bn")
    yield from _conv_bn(model.stem2, "block1_conv2", "block1_conv2_bn")
    conv_names, bn_names = _auto_names("conv2d"), _auto_names("batch_normalization")
    downsampling: list[tuple[int, DownsamplingBlock]] = [(2, model.entry_flow[0]), (3, model.entry_flow[1]),
                                                         (4, model.entry_flow[2])]
    for block_number, block in downsampling:
        yield from _conv_bn(block.shortcut, next(conv_names), next(bn_names))
        yield from _separable_bn(block.sep1, f"block{block_number}_sepconv1")
        yield from _separable_bn(block.sep2, f"block{block_number}_sepconv2", ends_residual_branch=True)
    for block_index, block in enumerate(model.middle_flow):
        for unit_index, unit in enumerate(block.units):
            yield from _separable_bn(unit, f"block{block_index + 5}_sepconv{unit_index + 1}",
                                     ends_residual_branch=unit is block.units[-1])
    yield from _conv_bn(model.exit_block.shortcut, next(conv_names), next(bn_names))
    yield from _separable_bn(model.exit_block.sep1, "block13_sepconv1")
    yield from _separable_bn(model.exit_block.sep2, "block13_sepconv2", ends_residual_branch=True)
    yield from _separable_bn(model.exit_sep1, "block14_sepconv1")
    yield from _separable_bn(model.exit_sep2, "block14_sepconv2")
    yield KerasLayer("predictions", model.head)


def _branch_units(branch: Branch | SplitBranch) -> Iterator[ConvBN]:
    if isinstance(branch, SplitBranch):
        yield from _branch_units(branch.trunk)
        for head in branch.heads:
            yield from _branch_units(head)
    else:
        yield from branch.convs


def _inception_v3_layers(model: InceptionV3) -> Iterator[KerasLayer]:
    branches = [model.stem, model.stem_after_pool]
    branches += [branch for block in model.mixed for branch in block.branches]
    units = (unit for branch in branches for unit in _branch_units(branch))
    for unit, conv_name, bn_name in zip(units, _auto_names("conv2d"), _auto_names("batch_normalization")):
        yield from _conv_bn(unit, conv_name, bn_name)
    yield KerasLayer("predictions", model.head)


def _keras_slots(module) -> list[tuple[str, nnx.Variable, tuple[int, ...]]]:
    """(Keras weight role, our variable, Keras shape) in Keras's get_weights() order."""
    if isinstance(module, SeparableConv):
        height, width, _, channels = module.depthwise.kernel.shape
        return [("depthwise_kernel", module.depthwise.kernel, (height, width, channels, 1)),
                ("pointwise_kernel", module.pointwise.kernel, module.pointwise.kernel.shape)]
    if isinstance(module, nnx.BatchNorm):
        slots = [("gamma", module.scale)] if module.scale is not None else []
        slots += [("beta", module.bias), ("moving_mean", module.mean), ("moving_variance", module.var)]
        return [(role, variable, variable.shape) for role, variable in slots]
    if isinstance(module, nnx.Conv | nnx.Linear):
        slots = [("kernel", module.kernel)] + ([("bias", module.bias)] if module.bias is not None else [])
        return [(role, variable, variable.shape) for role, variable in slots]
    raise TypeError(f"no Keras weight layout is known for {type(module).__name__}")


def keras_weight(seed: int, layer: str, role: str, shape: tuple[int, ...]) -> np.ndarray:
    """One weight array, a pure function of (seed, layer name, role, shape)."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{layer}/{role}".encode())])
    if role in ("kernel", "pointwise_kernel", "depthwise_kernel"):
        fan_in = int(np.prod(shape[:2])) if role == "depthwise_kernel" else int(np.prod(shape[:-1]))
        # He scaling where a ReLU follows (convolutions); unit gain for the depthwise half of a separable
        # convolution (the pointwise half follows it directly) and for the classifier.
        gain = 1.0 if role == "depthwise_kernel" or len(shape) == 2 else 2.0
        values = rng.standard_normal(shape) * np.sqrt(gain / fan_in)
    elif role in ("gamma", "moving_variance"):
        values = rng.uniform(0.5, 1.5, shape)
    elif role in ("beta", "bias", "moving_mean"):
        values = rng.normal(0.0, 0.1, shape)
    else:
        raise ValueError(f"unknown Keras weight role {role!r}")
    return values.astype(np.float32)


def keras_weights(model: Baseline, seed: int) -> dict[str, list[np.ndarray]]:
    """All weights of the model's Keras twin by Keras layer name, each list ready for `layer.set_weights`."""
    weights = {}
    for layer in keras_layers(model):
        arrays = []
        for role, _, shape in _keras_slots(layer.module):
            array = keras_weight(seed, layer.name, role, shape)
            arrays.append(array * np.float32(RESIDUAL_BRANCH_GAMMA) if role == "gamma" and layer.ends_residual_branch
                          else array)
        weights[layer.name] = arrays
    return weights


def weights_checksum(weights: dict[str, list[np.ndarray]]) -> str:
    """sha256 over names and bytes, to tell a changed weight rule from a wrong model."""
    digest = hashlib.sha256()
    for name, arrays in weights.items():
        digest.update(name.encode())
        for array in arrays:
            digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()


def load_keras_weights(model: Baseline, weights: dict[str, list[np.ndarray]]) -> None:
    """Sets Keras-layout weights into our model in place (depthwise kernels change layout on the way)."""
    layers = keras_layers(model)
    names = {layer.name for layer in layers}
    if set(weights) != names:
        missing, unexpected = sorted(names - set(weights)), sorted(set(weights) - names)
        raise ValueError(f"Keras weights do not fit {type(model).__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for name, module, _ in layers:
        slots = _keras_slots(module)
        if len(slots) != len(weights[name]):
            raise ValueError(f"Keras layer {name} has {len(weights[name])} weights; ours has {len(slots)}")
        for (role, variable, keras_shape), array in zip(slots, weights[name]):
            if tuple(array.shape) != tuple(keras_shape):
                raise ValueError(f"{name}/{role}: Keras shape {array.shape}, expected {keras_shape}")
            variable.set_value(jnp.asarray(np.reshape(array, variable.shape), dtype=variable.dtype))
