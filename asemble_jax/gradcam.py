"""Grad-CAM (Selvaraju et al. 2017), hand-written in JAX, batched and jitted, with the conventions of the
pytorch-grad-cam package (grad-cam 1.5, `GradCAM`) number for number, so that the two can be compared
(tests/test_gradcam.py, against fixtures that scripts/golden/gradcam.py makes with pytorch-grad-cam itself).

For one layer with activations A (B, h, w, C), per image and target class c:
1. G = gradient of the class-c logit w.r.t. A (the raw score, pytorch-grad-cam's ClassifierOutputTarget);
   c is the predicted class unless given;
2. cam = ReLU(sum_k w_k A_k) with channel weights w = the spatial mean of G;
3. scaled: cam - min(cam), then divided by (1e-7 + its max) (pytorch-grad-cam's `scale_cam_image`);
4. upsampled to the input size, bilinear on half-pixel centres with the edge pixels repeated (the convention
   of the cv2.resize INTER_LINEAR that pytorch-grad-cam calls);
5. scaled again as in 3: pytorch-grad-cam's aggregation over target layers ends with it, for one layer too.
The fused map of several layers is pytorch-grad-cam's own multi-layer aggregation: the mean of the layers'
maps after step 4, ReLU, then step 5. One forward and one backward pass give every layer's map at once.

Model protocol: `model.offset_features()` names the maps a model exposes, and
`model(images, train=False, feature_offsets={name: array})` returns (logits, aux) with aux["features"][name]
being that map plus the array, added where the map is computed. At zero the offset changes nothing, and the
gradient w.r.t. it is the gradient w.r.t. the map: plain jax.grad, no hooks, any Flax version.
A ViT layer holds tokens (B, 1 + N, D), class token first; they are read as pytorch-grad-cam's
`vit_reshape_transform` reads them: class token dropped, the N patch tokens laid row-major on their
sqrt(N) x sqrt(N) grid, as the patch embedding flattened them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# pytorch-grad-cam's scale_cam_image: (x - min) / (1e-7 + max(x - min)); a map without heat stays all zero.
SCALE_EPSILON = 1e-7
FUSED = "fused"
# The input's weight in an overlay, as in pytorch-grad-cam's show_cam_on_image.
OVERLAY_IMAGE_WEIGHT = 0.5


@dataclasses.dataclass(frozen=True)
class CamLayer:
    """Where Grad-CAM reads a model: a feature name of the model's protocol (see the module docstring), and
    whether it holds ViT tokens with a class token rather than a (B, h, w, C) map."""

    feature: str
    class_token_first: bool = False


# The layer names used in outputs and file names, for ASembleNet's branches and the baselines' last conv.
LAYERS: Mapping[str, CamLayer] = {
    "wide_resnet": CamLayer("wide_resnet"),
    "convnext": CamLayer("convnext"),
    "vit": CamLayer("vit_attention_input", class_token_first=True),
    "last_conv": CamLayer("last_conv"),
}


@dataclasses.dataclass(frozen=True)
class GradCam:
    maps: dict[str, jax.Array]  # layer name (and FUSED, for several layers) -> (B, H, W) float32 in [0, 1]
    logits: jax.Array  # (B, classes) float32, from the same forward pass
    target_class: jax.Array  # (B,) int32: the class each map explains


def model_layers(model: nnx.Module) -> dict[str, CamLayer]:
    """The entries of LAYERS that `model` exposes, in LAYERS' order (ASembleNet: one per built branch)."""
    offset_features = getattr(model, "offset_features", None)
    if offset_features is None:
        raise TypeError(f"{type(model).__name__} does not support Grad-CAM: it needs offset_features() and a "
                        f"feature_offsets argument (see asemble_jax/gradcam.py)")
    exposed = set(offset_features())
    return {name: layer for name, layer in LAYERS.items() if layer.feature in exposed}


def grad_cam(model: nnx.Module, images: jax.Array | np.ndarray, layers: Mapping[str, CamLayer], *,
             target_class: int | Sequence[int] | np.ndarray | jax.Array | None = None) -> GradCam:
    """Grad-CAM maps of `images` (B, H, W, C) for every layer in `layers` (e.g. model_layers(model)), plus
    their fused map when there are several. `target_class`: None for each image's predicted class, one class for
    all, or one per image. Compiled once per model structure, layers and input shape."""
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"grad_cam expects images shaped (batch, height, width, channels), got {images.shape}")
    if not layers:
        raise ValueError("grad_cam needs at least one layer")
    classes = None
    if target_class is not None:
        classes = jnp.broadcast_to(jnp.asarray(target_class, jnp.int32), images.shape[:1])
        if int(classes.min()) < 0:
            raise ValueError(f"target classes must be >= 0, got {np.asarray(classes).tolist()}")
    graphdef, state = nnx.split(model)
    maps, logits, chosen = _grad_cam(graphdef, state, images, classes, tuple(layers.items()))
    if classes is not None and int(classes.max()) >= logits.shape[-1]:
        raise ValueError(f"target classes must be < {logits.shape[-1]} (the model's classes), got "
                         f"{np.asarray(classes).tolist()}")
    return GradCam(maps=maps, logits=logits, target_class=chosen)


@functools.partial(jax.jit, static_argnames=("graphdef", "layers"))
def _grad_cam(graphdef, state, images, classes, layers: tuple[tuple[str, CamLayer], ...]):
    model = nnx.merge(graphdef, state)
    features = sorted({layer.feature for _, layer in layers})

    def forward(offsets):
        return model(images, train=False, feature_offsets=offsets)

    # A Python 0.0 broadcasts into every map without changing its dtype: enough to learn the maps' shapes.
    shapes = jax.eval_shape(lambda: forward({name: 0.0 for name in features}))[1]["features"]

    def target_score(offsets):
        logits, aux = forward(offsets)
        chosen = jnp.argmax(logits, axis=-1) if classes is None else classes
        # Images are independent in eval mode, so the gradient of the sum is each image's own gradient.
        score = jnp.take_along_axis(logits, chosen[:, None], axis=-1).sum()
        return score, (logits, chosen, {name: aux["features"][name] for name in features})

    zeros = {name: jnp.zeros(shapes[name].shape, shapes[name].dtype) for name in features}
    gradients, (logits, chosen, activations) = jax.grad(target_score, has_aux=True)(zeros)
    size = images.shape[1:3]
    upsampled = {name: upsample(scale(_layer_cam(layer, activations, gradients)), size) for name, layer in layers}
    maps = {name: scale(cam) for name, cam in upsampled.items()}
    if len(layers) > 1:
        maps[FUSED] = scale(jax.nn.relu(jnp.mean(jnp.stack(list(upsampled.values())), axis=0)))
    return maps, logits, chosen.astype(jnp.int32)


def _layer_cam(layer: CamLayer, activations: dict, gradients: dict) -> jax.Array:
    values = _as_map(layer, activations[layer.feature]).astype(jnp.float32)
    grads = _as_map(layer, gradients[layer.feature]).astype(jnp.float32)
    weights = jnp.mean(grads, axis=(1, 2))
    # A product and a sum rather than an einsum: no matmul, so no reduced-precision default on GPU/TPU.
    return jax.nn.relu(jnp.sum(values * weights[:, None, None, :], axis=-1))


def _as_map(layer: CamLayer, feature: jax.Array) -> jax.Array:
    if not layer.class_token_first:
        if feature.ndim != 4:
            raise ValueError(f"Grad-CAM feature {layer.feature!r} must be a (B, h, w, C) map, got shape "
                             f"{feature.shape}")
        return feature
    side = math.isqrt(feature.shape[1] - 1) if feature.ndim == 3 and feature.shape[1] > 1 else 0
    if side * side != feature.shape[1] - 1:
        raise ValueError(f"Grad-CAM feature {layer.feature!r} must be ViT tokens (B, 1 + N, D) with N a square, "
                         f"got shape {feature.shape}")
    return feature[:, 1:].reshape(feature.shape[0], side, side, feature.shape[2])


def scale(cams: jax.Array) -> jax.Array:
    """pytorch-grad-cam's per-image min-max scaling of (B, h, w) maps, in its order and with its epsilon."""
    cams = cams - jnp.min(cams, axis=(1, 2), keepdims=True)
    return cams / (SCALE_EPSILON + jnp.max(cams, axis=(1, 2), keepdims=True))


def upsample(cams: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, h, w) -> (B, *size), bilinear on half-pixel centres, edges repeated: cv2.resize's INTER_LINEAR when
    enlarging. Without antialiasing, jax.image.resize's triangle kernel renormalised at the border is exactly
    that interpolation."""
    return jax.image.resize(cams, (cams.shape[0], *size), method="linear", antialias=False)


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """An (H, W) uint8 grey image under an (H, W) heatmap in [0, 1], coloured with the jet colormap and mixed
    half and half, then rescaled to full brightness (pytorch-grad-cam's show_cam_on_image); (H, W, 3) uint8 RGB."""
    if image.shape != heatmap.shape:
        raise ValueError(f"image {image.shape} and heatmap {heatmap.shape} must have the same shape")
    colour = cv2.applyColorMap(np.uint8(np.round(255 * np.clip(heatmap, 0.0, 1.0))), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    grey = np.repeat(image.astype(np.float32)[..., None] / 255, 3, axis=-1)
    mixed = (1 - OVERLAY_IMAGE_WEIGHT) * colour + OVERLAY_IMAGE_WEIGHT * grey
    return np.uint8(np.round(255 * mixed / mixed.max()))
