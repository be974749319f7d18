"""Our ConvNeXt block, ViT encoder block and SE module against timm and torchvision, with random weights.

Fixtures come from scripts/golden/blocks.py (tests/golden/, or $ASEMBLE_GOLDEN_DIR when set); they hold the
reference weights already ported to our layout, so this test needs no torch. Any seed's fixtures must pass.
"""
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asemble_jax.models.convnext import ConvNeXtBlock
from asemble_jax.models.layers import SqueezeExcitation
from asemble_jax.models.vit import EncoderBlock

GOLDEN_DIR = pathlib.Path(os.environ.get("ASEMBLE_GOLDEN_DIR", pathlib.Path(__file__).parent / "golden"))
FIXTURES = ("convnext_timm", "convnext_torchvision", "vit_timm", "vit_torchvision", "se_timm", "se_torchvision")
MAX_RELATIVE_ERROR = 1e-5


def _build(config: dict) -> nnx.Module:
    module = config.pop("module")
    builders = {"ConvNeXtBlock": ConvNeXtBlock, "EncoderBlock": EncoderBlock, "SqueezeExcitation": SqueezeExcitation}
    channels = config.pop("channels", None) or config.pop("dim")
    return builders[module](channels, **config, rngs=nnx.Rngs(0))


def _load(name: str):
    path = GOLDEN_DIR / f"blocks_{name}.npz"
    if not path.is_file():
        pytest.fail(f"golden fixture {path} is missing: run .venv-oracle/bin/python scripts/make_golden_fixtures.py "
                    f"--out {GOLDEN_DIR} --only blocks")
    with np.load(path) as arrays:
        config = {key.removeprefix("config/"): arrays[key].item() for key in arrays if key.startswith("config/")}
        params = {key.removeprefix("param/"): arrays[key] for key in arrays if key.startswith("param/")}
        return config, params, arrays["input"], arrays["output"]


def _port(module: nnx.Module, params: dict[str, np.ndarray]) -> None:
    """Overwrite every parameter of `module` from `params`; the two must name exactly the same paths."""
    ours = {"/".join(map(str, path)): variable.shape
            for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param))}
    assert set(ours) == set(params), f"our parameters {sorted(ours)} != ported {sorted(params)}"
    for path, shape in ours.items():
        assert shape == params[path].shape, f"{path}: ours {shape}, ported {params[path].shape}"
    nnx.update(module, nnx.from_flat_state(
        [(tuple(_path_key(part) for part in path.split("/")), jnp.asarray(value)) for path, value in params.items()]))


def _path_key(part: str) -> str | int:
    return int(part) if part.isdigit() else part


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.mark.parametrize("name", FIXTURES)
def test_block_matches_reference(name):
    config, params, inputs, expected = _load(name)
    module = _build(config)
    _port(module, params)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(module(inputs))
    assert ours.shape == expected.shape
    assert _relative_error(ours, expected) <= MAX_RELATIVE_ERROR


def _error_after_porting(name: str, corrupt) -> float:
    config, params, inputs, expected = _load(name)
    corrupt(params)
    module = _build(config)
    _port(module, params)
    with jax.default_matmul_precision("highest"):
        return _relative_error(np.asarray(module(inputs)), expected)


def _reverse_first_kernel(params: dict[str, np.ndarray]) -> None:
    path = min(path for path in params if path.endswith("kernel"))
    params[path] = params[path][::-1]


def _swap_query_and_key(params: dict[str, np.ndarray]) -> None:
    query, key, value = np.split(params["attention/qkv/kernel"], 3, axis=1)
    params["attention/qkv/kernel"] = np.concatenate([key, query, value], axis=1)


@pytest.mark.parametrize("name", FIXTURES)
def test_a_wrong_port_is_detected(name):
    """The fixtures are sensitive: reversing the leading axis of one kernel (a spatially flipped conv, permuted
    input channels) breaks the match."""
    assert _error_after_porting(name, _reverse_first_kernel) > 100 * MAX_RELATIVE_ERROR


@pytest.mark.parametrize("name", ["vit_timm", "vit_torchvision"])
def test_a_wrong_query_key_value_order_is_detected(name):
    assert _error_after_porting(name, _swap_query_and_key) > 100 * MAX_RELATIVE_ERROR
