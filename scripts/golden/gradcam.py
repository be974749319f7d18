"""Golden fixtures for asemble_jax.gradcam: pytorch-grad-cam's GradCAM on two small random PyTorch models, whose
weights are stored ported to the layout of their Flax twins in tests/test_gradcam.py.

    gradcam_cnn.npz     three 3x3 convolutions (strides 1, 2, 2) -> ReLU -> global mean -> linear, on 18x26
                        inputs: the 5x7 map upsamples by non-integer, unequal factors, so a transposed or
                        mis-centred resize cannot pass. Layer "conv": the last ReLU.
    gradcam_hybrid.npz  that CNN (strides 1, 2, 2 at 32x32) beside a timm VisionTransformer (patch 8, 2 blocks),
                        their pooled map and class token concatenated -> linear. Layers "conv" and "vit" (the
                        last block's norm1 with pytorch-grad-cam's vit_reshape_transform), each alone, and
                        both at once: pytorch-grad-cam's multi-layer aggregation, our "fused" map.

Each fixture holds
    "input"                 (B, H, W, 1) images in our layout
    "logits"                the reference logits
    "target/<kind>"         (B,) classes: "predicted" (pytorch-grad-cam's default) and "other" ((predicted + 1)
                            mod classes, passed explicitly as ClassifierOutputTarget)
    "cam/<kind>/<layer>"    pytorch-grad-cam's (B, H, W) heatmaps for those targets
    "param/<path>"          the weights in our parameter layout ("/"-joined nnx path)
    "config/<name>"         the twin's sizes
Weights are torch's default initialisation (timm's ViT init is reset to it: at std 0.02 attention is nearly
uniform and the ViT map nearly flat), LayerNorm affines, class token and position embedding randomised too.
Images are noise plus one bright blob each, at random places. A draw where some map has no heat in any image
(ReLU of a weighted sum that is negative everywhere) is replaced by the next draw: zeros against zeros would
test nothing.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytorch_grad_cam
import timm.models.vision_transformer
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

BATCH, CLASSES = 4, 3
CNN_SIZE = (18, 26)
CNN_WIDTHS = (8, 12, 16)
MAX_DRAWS = 20
HYBRID_SIZE, PATCH, VIT_DIM, VIT_DEPTH, VIT_HEADS = 32, 8, 16, 2, 2


def _sibling(name: str):
    """Another fixture maker of scripts/golden, for its porting helpers (make_golden_fixtures loads each one
    under this module name)."""
    module_name = f"golden_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, pathlib.Path(__file__).with_name(f"{name}.py"))
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


blocks = _sibling("blocks")


class ConvBranch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        widths = (1, *CNN_WIDTHS)
        layers = []
        for index, stride in enumerate((1, 2, 2)):
            layers += [torch.nn.Conv2d(widths[index], widths[index + 1], 3, stride=stride, padding=1),
                       torch.nn.ReLU()]
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, images):
        return self.layers(images)

    def target_layer(self) -> torch.nn.Module:
        return self.layers[-1]

    def ported(self) -> dict[str, np.ndarray]:
        convs = [layer for layer in self.layers if isinstance(layer, torch.nn.Conv2d)]
        return {key: value for index, conv in enumerate(convs)
                for key, value in ((f"convs/{index}/kernel", blocks._conv(conv.weight)),
                                   (f"convs/{index}/bias", blocks._numpy(conv.bias)))}


class Cnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = ConvBranch()
        self.head = torch.nn.Linear(CNN_WIDTHS[-1], CLASSES)

    def forward(self, images):
        return self.head(self.conv(images).mean(dim=(2, 3)))

    def target_layers(self) -> dict[str, torch.nn.Module]:
        return {"conv": self.conv.target_layer()}

    def ported(self) -> dict[str, np.ndarray]:
        return {**self.conv.ported(), **blocks._linear("head", self.head)}


class Hybrid(torch.nn.Module):
    """The conv branch runs first: pytorch-grad-cam pairs target layers with activations in forward order."""

    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.conv = ConvBranch()
        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=HYBRID_SIZE, patch_size=PATCH, in_chans=1, num_classes=0, embed_dim=VIT_DIM, depth=VIT_DEPTH,
            num_heads=VIT_HEADS, global_pool="token")
        for module in self.vit.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                module.reset_parameters()
        blocks._randomise_constants(self.vit, generator)
        with torch.no_grad():
            self.vit.cls_token.copy_(torch.randn(self.vit.cls_token.shape, generator=generator))
            self.vit.pos_embed.copy_(0.5 * torch.randn(self.vit.pos_embed.shape, generator=generator))
        self.head = torch.nn.Linear(CNN_WIDTHS[-1] + VIT_DIM, CLASSES)

    def forward(self, images):
        pooled = self.conv(images).mean(dim=(2, 3))
        return self.head(torch.cat([pooled, self.vit(images)], dim=1))

    def target_layers(self) -> dict[str, torch.nn.Module]:
        return {"conv": self.conv.target_layer(), "vit": self.vit.blocks[-1].norm1}

    def ported(self) -> dict[str, np.ndarray]:
        vit = self.vit
        ported_vit = {"patch_embedding/kernel": blocks._conv(vit.patch_embed.proj.weight),
                      "patch_embedding/bias": blocks._numpy(vit.patch_embed.proj.bias),
                      "class_token": blocks._numpy(vit.cls_token),
                      "position_embedding": blocks._numpy(vit.pos_embed),
                      **blocks._layer_norm("norm", vit.norm)}
        for index, block in enumerate(vit.blocks):
            ported_vit.update({f"blocks/{index}/{path}": value for path, value in blocks._port_vit_timm(block).items()})
        return {**self.conv.ported(), **{f"vit/{path}": value for path, value in ported_vit.items()},
                **blocks._linear("head", self.head)}


def _grid_tokens(tensor: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam applies one reshape_transform to every target layer: tokens go on their grid, maps
    pass through."""
    side = HYBRID_SIZE // PATCH
    return vit_reshape_transform(tensor, side, side) if tensor.ndim == 3 else tensor


def _heatmaps(model: torch.nn.Module, images: torch.Tensor, targets: np.ndarray) -> dict[str, np.ndarray]:
    """pytorch-grad-cam's GradCAM for each target layer alone and, for several, for all of them at once."""
    layers = model.target_layers()
    selections = {name: [layer] for name, layer in layers.items()}
    if len(layers) > 1:
        selections["fused"] = list(layers.values())
    heatmaps = {}
    for name, selection in selections.items():
        with pytorch_grad_cam.GradCAM(model, selection, reshape_transform=_grid_tokens) as cam:
            heatmaps[name] = cam(images, [ClassifierOutputTarget(int(c)) for c in targets])
    return heatmaps


def _fixture(model: torch.nn.Module, images: torch.Tensor, config: dict) -> dict[str, np.ndarray]:
    model.eval()
    with torch.no_grad():
        logits = blocks._numpy(model(images))
    targets = {"predicted": logits.argmax(axis=-1), "other": (logits.argmax(axis=-1) + 1) % CLASSES}
    arrays = {"input": blocks._to_nhwc(images), "logits": logits,
              **{f"param/{path}": value for path, value in model.ported().items()},
              **{f"config/{key}": np.asarray(value) for key, value in config.items()}}
    for kind, classes in targets.items():
        arrays[f"target/{kind}"] = classes.astype(np.int32)
        for layer, heatmap in _heatmaps(model, images, classes).items():
            arrays[f"cam/{kind}/{layer}"] = np.asarray(heatmap, np.float32)
    return arrays


def _images(generator: torch.Generator, size: tuple[int, int]) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    images = 0.5 * torch.rand(BATCH, 1, *size, generator=generator)
    for image in images:
        centre = torch.rand(2, generator=generator) * torch.tensor(size)
        radius = min(size) / 6
        image += torch.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * radius ** 2))
    return images


def _has_heat_everywhere(arrays: dict[str, np.ndarray]) -> bool:
    return all(value.max() > 0.99 for key, value in arrays.items() if key.startswith("cam/"))


def _draw(build, generator: torch.Generator, size: tuple[int, int], config: dict) -> dict[str, np.ndarray]:
    for _ in range(MAX_DRAWS):
        arrays = _fixture(build(), _images(generator, size), config)
        if _has_heat_everywhere(arrays):
            return arrays
    raise RuntimeError(f"no draw in {MAX_DRAWS} gave every Grad-CAM map some heat")


def make(seed: int, out: pathlib.Path) -> list[pathlib.Path]:
    torch.manual_seed(seed)  # the modules' own initialisers draw from the global generator
    generator = torch.Generator().manual_seed(seed)
    common = {"classes": CLASSES, "widths": np.asarray(CNN_WIDTHS)}
    fixtures = {
        "cnn": _draw(Cnn, generator, CNN_SIZE, common),
        "hybrid": _draw(lambda: Hybrid(generator), generator, (HYBRID_SIZE, HYBRID_SIZE),
                        {**common, "image_size": HYBRID_SIZE, "patch_size": PATCH, "vit_dim": VIT_DIM,
                         "vit_depth": VIT_DEPTH, "vit_heads": VIT_HEADS}),
    }
    written = []
    for name, arrays in fixtures.items():
        path = out / f"gradcam_{name}.npz"
        temporary = path.with_suffix(".tmp.npz")
        np.savez_compressed(temporary, **arrays)
        temporary.replace(path)
        written.append(path)
    return written
