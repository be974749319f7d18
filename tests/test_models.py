"""ASembleNet and the registry: shapes and aux of every ablation variant, parameter counts (pinned and derived
independently from the architecture), removed parts really gone, train/eval behaviour, construction errors.

Models are built abstractly (nnx.eval_shape) wherever numbers are not needed; `paper` is never materialised.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asemble_jax.models import (
    ablation_variants,
    available_models,
    count_parameters,
    create_model,
    model_arguments,
    presets,
)
from asemble_jax.models.asemblenet import ASembleNet
from asemble_jax.models.convnext import ConvNeXtBlock

BATCH = 2
PRESET_INPUT = {"tiny": 64, "small": 128, "paper": 256}

# Totals including BatchNorm running statistics (the Keras convention), checked below against _expected_count.
PINNED_COUNTS = {
    "tiny": {"full": 117590, "no_se": 113946, "no_wide_resnet": 38222, "no_convnext": 100652, "no_vit": 95028,
             "wide_resnet_only": 78346, "convnext_only": 16302, "vit_only": 21926},
    "small": {"full": 1182716, "no_se": 1149610, "no_wide_resnet": 864244, "no_convnext": 568656,
              "no_vit": 918710, "wide_resnet_only": 309258, "convnext_only": 603310, "vit_only": 256328},
    "paper": {"full": 24885118, "no_se": 24523138, "no_wide_resnet": 18506770, "no_convnext": 17194118,
              "no_vit": 13934182, "wide_resnet_only": 6292334, "convnext_only": 7592698, "vit_only": 10864922},
}
VARIANTS = list(ablation_variants())


def _abstract(preset: str, **overrides) -> ASembleNet:
    return _abstract_cached(preset, tuple(sorted(overrides.items())))


@functools.cache
def _abstract_cached(preset: str, overrides: tuple) -> ASembleNet:
    # Shared by the tests below: tracing a `paper` model is the slow part of a shape or count check.
    return nnx.eval_shape(lambda: create_model("asemblenet", preset, rngs=nnx.Rngs(0), **dict(overrides)))


def _settings(preset: str, **overrides) -> dict:
    return model_arguments("asemblenet", preset, **overrides)


# Independent parameter counts, written from the architecture description (SPEC.md), not from the code.
def _se(channels: int, reduction: int) -> int:
    squeeze = max(4, channels // reduction)
    return channels * squeeze + squeeze + squeeze * channels + channels


def _wide_resnet_count(s: dict) -> tuple[int, int]:
    """(count including BatchNorm statistics, output width)."""
    c_in, k, n = s["in_channels"], s["wrn_widen_factor"], (s["wrn_depth"] - 4) // 6
    width = s["wrn_stem_channels"]
    total = 49 * c_in * width + 4 * width  # 7x7 stem conv without bias, BN (scale, bias, mean, var)
    for stage, base in enumerate((16, 32, 64)):
        for block in range(n):
            out = base * k
            stride = 2 if stage and block == 0 else 1
            total += 4 * width + 9 * width * out + 4 * out + 9 * out * out
            total += width * out if (width != out or stride != 1) else 0
            total += _se(out, s["se_reduction"]) if s["use_se"] else 0
            width = out
    return total + 4 * width, width


def _convnext_count(s: dict) -> tuple[int, int]:
    dims, depths = s["convnext_dims"], s["convnext_depths"]
    total = 16 * s["in_channels"] * dims[0] + dims[0] + 2 * dims[0]  # 4x4 stem conv with bias, LayerNorm
    for stage, (depth, dim) in enumerate(zip(depths, dims)):
        if stage:
            total += 2 * dims[stage - 1] + 4 * dims[stage - 1] * dim + dim  # LayerNorm + 2x2 conv
        block = 49 * dim + dim + 2 * dim + (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim) + dim
        total += depth * (block + (_se(dim, s["se_reduction"]) if s["use_se"] else 0))
    return total + 2 * dims[-1], dims[-1]


def _vit_count(s: dict) -> tuple[int, int]:
    dim, patch = s["vit_dim"], s["vit_patch_size"]
    tokens = (s["image_size"] // patch) ** 2 + 1
    total = patch * patch * s["in_channels"] * dim + dim + dim + tokens * dim  # patches, class token, positions
    block = 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + 2 * dim + (dim * 4 * dim + 4 * dim) + (
        4 * dim * dim + dim)
    return total + s["vit_depth"] * block + 2 * dim, dim


def _expected_count(s: dict) -> int:
    branches = [count(s) for count, used in ((_wide_resnet_count, "use_wide_resnet"),
                                             (_convnext_count, "use_convnext"), (_vit_count, "use_vit")) if s[used]]
    fused = sum(width for _, width in branches)
    head = (_se(fused, s["se_reduction"]) if s["use_se"] else 0) + fused * s["num_classes"] + s["num_classes"]
    return sum(count for count, _ in branches) + head


def _param_paths(model) -> set[str]:
    return {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model))}


@pytest.mark.parametrize("preset", list(PINNED_COUNTS))
def test_parameter_counts_are_pinned_and_match_the_architecture(preset):
    for variant in VARIANTS:
        model = _abstract(preset, **ablation_variants()[variant])
        expected = _expected_count(_settings(preset, **ablation_variants()[variant]))
        assert count_parameters(model) == PINNED_COUNTS[preset][variant] == expected, variant


def test_paper_preset_is_the_size_of_resnet50():
    assert 20_000_000 <= PINNED_COUNTS["paper"]["full"] <= 30_000_000


def test_batch_statistics_are_counted_only_when_asked():
    model = _abstract("tiny")
    statistics = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    assert statistics > 0
    assert count_parameters(model, include_batch_stats=False) == count_parameters(model) - statistics


@pytest.mark.parametrize(("variant", "branch"), [("no_wide_resnet", "wide_resnet"), ("no_convnext", "convnext"),
                                                 ("no_vit", "vit")])
def test_removing_a_branch_removes_exactly_its_parameters(variant, branch):
    full, reduced = _abstract("small"), _abstract("small", **ablation_variants()[variant])
    assert not any(path.split("/")[0] == branch for path in _param_paths(reduced))
    # Everything else shrinks only where the fused vector narrows: the fusion gate and the classifier.
    full_width = full.classifier.kernel.shape[0]
    narrower = full_width - getattr(full, branch).embedding_width
    head_change = (_se(full_width, 16) - _se(narrower, 16)) + (full_width - narrower) * 2
    assert count_parameters(full) - count_parameters(reduced) == count_parameters(getattr(full, branch)) + head_change


def test_switching_se_off_removes_every_excitation_and_the_fusion_gate():
    full, reduced = _abstract("small"), _abstract("small", use_se=False)
    se_paths = {path for path in _param_paths(full) if "excitation" in path or path.startswith("fusion_gate/")}
    assert any(path.startswith("wide_resnet/") for path in se_paths)
    assert any(path.startswith("convnext/") for path in se_paths)
    assert any(path.startswith("fusion_gate/") for path in se_paths)
    assert _param_paths(reduced) == _param_paths(full) - se_paths
    se_count = sum(int(np.prod(variable.shape)) for path, variable in nnx.to_flat_state(nnx.state(full))
                   if "/".join(map(str, path)) in se_paths)
    assert count_parameters(full) - count_parameters(reduced) == se_count


def _expected_features(settings: dict, size: int, batch: int = BATCH) -> dict:
    shapes = {}
    if settings["use_wide_resnet"]:
        shapes["wide_resnet"] = (batch, size // 16, size // 16, 64 * settings["wrn_widen_factor"])
    if settings["use_convnext"]:
        side = size // (4 * 2 ** (len(settings["convnext_dims"]) - 1))
        shapes["convnext"] = (batch, side, side, settings["convnext_dims"][-1])
    if settings["use_vit"]:
        grid, dim = size // settings["vit_patch_size"], settings["vit_dim"]
        shapes.update(vit_tokens=(batch, grid * grid, dim), vit_grid=(batch, grid, grid, dim), vit_class=(batch, dim))
    fused = sum(shape[-1] for name, shape in shapes.items() if name in ("wide_resnet", "convnext", "vit_class"))
    shapes["fused"] = (batch, fused)
    return shapes


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_and_aux_shapes_of_every_variant(preset, variant):
    size = PRESET_INPUT[preset]
    model = _abstract(preset, **ablation_variants()[variant])
    images = jax.ShapeDtypeStruct((BATCH, size, size, 1), jnp.float32)
    logits, aux = nnx.eval_shape(lambda m, x: m(x), model, images)
    settings = _settings(preset, **ablation_variants()[variant])
    assert logits.shape == (BATCH, 2) and logits.dtype == jnp.float32
    assert {name: value.shape for name, value in aux["features"].items()} == _expected_features(settings, size)
    assert set(aux) == ({"features", "fusion_gate"} if settings["use_se"] else {"features"})
    if settings["use_se"]:
        assert aux["fusion_gate"].shape == aux["features"]["fused"].shape


def test_small_preset_runs_at_its_demo_size():
    model = _abstract("small")
    logits, aux = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((3, 128, 128, 1), jnp.float32))
    assert logits.shape == (3, 2)
    assert aux["features"]["vit_tokens"].shape == (3, 64, 96)


def test_registry_lists_asemblenet_with_three_presets_and_every_ablation():
    assert "asemblenet" in available_models()
    assert presets("asemblenet") == ("tiny", "small", "paper")
    assert set(VARIANTS) == {"full", "no_se", "no_wide_resnet", "no_convnext", "no_vit", "wide_resnet_only",
                             "convnext_only", "vit_only"}


def test_classes_channels_and_compute_dtype_are_configurable():
    model = nnx.eval_shape(lambda: create_model("asemblenet", "tiny", rngs=nnx.Rngs(0), num_classes=5,
                                                in_channels=3, dtype=jnp.bfloat16))
    logits, aux = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    assert all(value.dtype == jnp.bfloat16 for value in aux["features"].values())
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
    assert count_parameters(model) == _expected_count(_settings("tiny", num_classes=5, in_channels=3))


def test_model_arguments_are_the_complete_constructor_call():
    arguments = model_arguments("asemblenet", "tiny", num_classes=3, use_vit=False)
    assert arguments["num_classes"] == 3 and arguments["in_channels"] == 1 and arguments["use_vit"] is False
    assert arguments["vit_dim"] == ASembleNet.PRESETS["tiny"]["vit_dim"]
    assert arguments["fusion_dropout_rate"] == 0.2, "a constructor default not set by the preset"


# ---- numbers: one concrete tiny model ----

def _jaxpr(model, images, *, train: bool) -> str:
    graphdef, state = nnx.split(model)
    return str(jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, train=train))(state, images))


@pytest.fixture(scope="module")
def tiny_model():
    # Built in one compiled program with a counter-free PRNG: eager construction compiles every initializer for
    # every parameter shape, which costs far more than the tests themselves on a small CPU.
    return nnx.jit(lambda: create_model("asemblenet", "tiny",
                                        rngs=nnx.Rngs(jax.random.key(0, impl="unsafe_rbg"))))()


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (4, 64, 64, 1))


@nnx.jit
def _evaluate(model, images):
    return model(images)


@nnx.jit
def _train_loss_and_gradients(model, images):
    def loss(model):
        logits, _ = model(images, train=True)
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), logits

    (_, logits), gradients = nnx.value_and_grad(loss, has_aux=True)(model)
    return logits, gradients


def test_aux_holds_the_named_intermediates(tiny_model, images):
    logits, aux = _evaluate(tiny_model, images)
    features = aux["features"]
    tokens, grid = np.asarray(features["vit_tokens"]), np.asarray(features["vit_grid"])
    # Token i*g + j is patch (row i, column j): the grid is the row-major reshape, as patches are embedded.
    assert np.array_equal(grid[:, 1, 2], tokens[:, 1 * grid.shape[2] + 2])
    assert np.all(np.asarray(features["wide_resnet"]) >= 0), "W features follow the final ReLU"
    gate = np.asarray(aux["fusion_gate"])
    assert np.all((gate > 0) & (gate < 1))
    fused = np.asarray(features["fused"])
    widths = [features[name].shape[-1] for name in ("wide_resnet", "convnext", "vit_class")]
    pooled_w = np.asarray(features["wide_resnet"]).mean(axis=(1, 2))
    np.testing.assert_allclose(fused[:, :widths[0]], pooled_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fused[:, sum(widths[:2]):], np.asarray(features["vit_class"]))
    expected_logits = (fused * gate) @ np.asarray(tiny_model.classifier.kernel[...]) + np.asarray(
        tiny_model.classifier.bias[...])
    np.testing.assert_allclose(np.asarray(logits), expected_logits, rtol=1e-4, atol=1e-5)


def test_evaluation_is_deterministic_and_leaves_batch_statistics_alone(tiny_model, images):
    before = jax.tree.map(np.asarray, nnx.state(tiny_model, nnx.BatchStat))
    first, _ = _evaluate(tiny_model, images)
    second, _ = _evaluate(tiny_model, images)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    after = jax.tree.map(np.asarray, nnx.state(tiny_model, nnx.BatchStat))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))


def test_training_uses_batch_statistics_dropout_and_gradients_reach_every_parameter(tiny_model, images):
    model = nnx.clone(tiny_model)
    evaluation, _ = _evaluate(model, images)
    statistics_before = np.asarray(model.wide_resnet.stem_norm.mean[...])
    first, gradients = _train_loss_and_gradients(model, images)
    assert not np.array_equal(np.asarray(model.wide_resnet.stem_norm.mean[...]), statistics_before)
    assert not np.allclose(np.asarray(first), np.asarray(evaluation))
    # Same batch, so the same batch statistics: a second training pass differs only by the fusion dropout mask.
    second, _ = _train_loss_and_gradients(model, images)
    assert not np.allclose(np.asarray(first), np.asarray(second))
    flat = nnx.to_flat_state(gradients)
    assert len(flat) == len(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    silent = ["/".join(map(str, path)) for path, value in flat if not np.any(np.asarray(value[...]))]
    assert not silent, f"parameters with an all-zero gradient: {silent}"


def test_training_with_zero_drop_rates_and_no_batch_norm_is_evaluation():
    """Without branch W there is no BatchNorm; with every rate at zero the training pass must be the very same
    computation as evaluation (compared as traced programs), and any non-zero rate must change it."""
    images = jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32)
    zero = dict(use_wide_resnet=False, fusion_dropout_rate=0.0, convnext_drop_path_rate=0.0, vit_drop_path_rate=0.0)
    model = _abstract("tiny", **zero)
    assert _jaxpr(model, images, train=True) == _jaxpr(model, images, train=False)
    # The drop-path schedule starts at 0 in the first block: a one-block ViT never drops, so two blocks here.
    for rate in ("fusion_dropout_rate", "convnext_drop_path_rate", "vit_drop_path_rate"):
        model = _abstract("tiny", **{**zero, rate: 0.3, "vit_depth": 2})
        assert _jaxpr(model, images, train=True) != _jaxpr(model, images, train=False), rate


def test_drop_path_rates_rise_linearly_to_the_configured_rate():
    model = _abstract("small", convnext_drop_path_rate=0.3, vit_drop_path_rate=0.2, vit_depth=3)
    convnext = [block.drop_path.rate for stage in model.convnext.stages for block in stage.blocks]
    np.testing.assert_allclose(convnext, np.linspace(0.0, 0.3, sum(ASembleNet.PRESETS["small"]["convnext_depths"])))
    np.testing.assert_allclose([block.drop_path.rate for block in model.vit.blocks], [0.0, 0.1, 0.2])


def test_a_dropped_residual_branch_leaves_exactly_the_input():
    """Stochastic depth inside a block: in training each sample either passes through unchanged (branch
    dropped) or gets the evaluation residual scaled by 1 / keep; evaluation drops nothing."""
    block = ConvNeXtBlock(8, drop_path_rate=0.5, layer_scale_init=1.0, rngs=nnx.Rngs(jax.random.key(0, impl="unsafe_rbg")))
    x = np.asarray(jax.random.normal(jax.random.key(2), (64, 5, 5, 8)))
    training, evaluation = np.asarray(block(x, train=True)), np.asarray(block(x))
    unchanged = np.all((training == x).reshape(64, -1), axis=1)
    assert 0 < unchanged.sum() < 64, "some samples dropped, some kept"
    np.testing.assert_allclose(training[~unchanged], x[~unchanged] + 2 * (evaluation - x)[~unchanged],
                               rtol=1e-5, atol=1e-5)


# ---- errors ----

@pytest.mark.parametrize(("overrides", "message"), [
    ({"use_wide_resnet": False, "use_convnext": False, "use_vit": False}, "at least one branch"),
    ({"vit_patch_size": 12}, "patch size 12 does not divide the input size 64"),
    ({"vit_dim": 30, "vit_num_heads": 4}, "not divisible by its 4 attention heads"),
    ({"wrn_depth": 12}, "6n \\+ 4"),
    ({"convnext_depths": (1, 1, 1), "convnext_dims": (8, 16)}, "as many stage depths as stage widths"),
    ({"fusion_dropout_rate": 1.0}, "fusion_dropout_rate"),
    ({"convnext_drop_path_rate": 1.0}, "stochastic depth rate"),
])
def test_impossible_architectures_are_refused_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        nnx.eval_shape(lambda: create_model("asemblenet", "tiny", rngs=nnx.Rngs(0), **overrides))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: create_model("asemblenett", rngs=nnx.Rngs(0)), "unknown model 'asemblenett'; valid models: .*asemblenet"),
    (lambda: create_model("asemblenet", "huge", rngs=nnx.Rngs(0)), "valid presets: tiny, small, paper"),
    (lambda: create_model("asemblenet", "tiny", rngs=nnx.Rngs(0), vit_heads=2), "unknown argument.*vit_heads.*"
                                                                                   "valid overrides: .*vit_num_heads"),
])
def test_registry_errors_list_the_valid_choices(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(("shape", "message"), [
    ((2, 64, 64, 3), r"expects images shaped \(batch, height, width, 1\), got \(2, 64, 64, 3\)"),
    ((2, 128, 128, 1), "built for 64x64 inputs.*got 128x128"),
])
def test_a_wrong_input_is_refused_with_the_expected_shape(shape, message):
    with pytest.raises(ValueError, match=message):
        nnx.eval_shape(lambda m, x: m(x), _abstract("tiny"), jax.ShapeDtypeStruct(shape, jnp.float32))
