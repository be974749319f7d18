"""A training workdir: where each of its files lives, and the model trained in it.

    WORKDIR/
      config.json               the run's config (the trainer refuses to resume under a different one)
      metrics.jsonl             one JSON object per logged training step or evaluation
      events.out.tfevents.*     its scalars for TensorBoard, with config.tensorboard (asemble_jax/tensorboard_log.py)
      checkpoints/STEP/         the latest Orbax checkpoints: training state and data-iterator position
      checkpoints/best/STEP/    the best step by validation AUC, kept apart so that max_to_keep never deletes it
      eval/                     evaluation reports: DATASET_SPLIT.{json,md,_predictions.csv,...}
      train.log                 the traceback of an error that stopped scripts/train.py (the user sees one line)
      cell.json, cell.log, error.log   a grid cell's record, output and traceback (asemble_jax/grids/cell.py)
      claim.N                   the claim of the grid worker running the cell (asemble_jax/grids/claims.py)

    GRID_WORKDIR/
      grid.json                 the expanded grid
      claim.N                   on an object store: the claim of the one worker running the grid (grids/runner.py)
      CELL/NAME/                one training workdir per cell, at the cell's name

A workdir may be a local folder or a URL (gs://BUCKET/run; asemble_jax/storage.py). Every path of a workdir is
built here and nowhere else. This module also owns what is needed to *use* a trained
model, and nothing about optimisation: the config it stored, the model that describes, its weights (restored without the
optimiser state) and data-parallel prediction over a dataset split. Training (asemble_jax/train) and evaluation
(asemble_jax/evaluation) both build on it, and evaluation never imports training.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import flax.struct
import ml_collections
import numpy as np
from flax import nnx

from asemble_jax import checkpoint, parallel, storage
from asemble_jax.data import pipeline
from asemble_jax.errors import UserError
from asemble_jax.models import registry

CHECKPOINT_CHOICES = ("best", "latest")


class WorkdirError(UserError):
    """A workdir that cannot be used as asked (no config, no checkpoint, a model it cannot build)."""


@dataclasses.dataclass(frozen=True)
class Workdir:
    """The paths of one training workdir (also a grid cell's folder)."""

    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config(self) -> str:
        return self.path("config.json")

    @property
    def metrics(self) -> str:
        return self.path("metrics.jsonl")

    @property
    def checkpoints(self) -> str:
        return self.path("checkpoints")

    @property
    def train_log(self) -> str:
        return self.path("train.log")

    @property
    def cell_record(self) -> str:
        return self.path("cell.json")

    @property
    def cell_log(self) -> str:
        return self.path("cell.log")

    @property
    def error_log(self) -> str:
        return self.path("error.log")

    def claim(self, generation: int) -> str:
        """A grid worker's claim on this cell (asemble_jax/grids/claims.py)."""
        return self.path(f"claim.{generation}")

    def eval_stem(self, dataset: str, split: str, out_dir: str | None = None) -> str:
        """Where the evaluation of dataset/split is written, without its suffixes (under eval/ unless out_dir)."""
        return os.path.join(out_dir or self.path("eval"), f"{dataset.replace('/', '_')}_{split}")

    def localization_stem(self, dataset: str, split: str, out_dir: str | None = None) -> str:
        """Where the Grad-CAM localisation of dataset/split is written, without its suffixes."""
        return self.eval_stem(dataset, split, out_dir) + "_localization"

    def relative(self, path: str) -> str:
        """`path` relative to the workdir, as records store it (so that a workdir can be moved)."""
        return storage.relative(path, self.root)


@dataclasses.dataclass(frozen=True)
class GridWorkdir:
    """The paths of a grid workdir: its record and one training workdir per cell."""

    root: str

    @property
    def grid_record(self) -> str:
        return os.path.join(self.root, "grid.json")

    def cell(self, name: str) -> Workdir:
        return Workdir(os.path.join(self.root, *name.split("/")))


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = Workdir(workdir).config
    if not storage.exists(path):
        raise WorkdirError(f"{workdir}: no config.json here; is this a training workdir?")
    try:
        with storage.open(path, encoding="utf-8") as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON (JSONDecodeError is a ValueError)
        raise WorkdirError(f"{path}: not a readable config ({type(error).__name__}: {error}); is this a training "
                           "workdir?") from None


def build_model(config: ml_collections.ConfigDict) -> nnx.Module:
    """The model `config` describes, freshly initialised from config.seed."""
    model_config = config.model
    variant = registry.variant_overrides(model_config.variant)
    if variant is None:
        raise WorkdirError(f"unknown model variant {model_config.variant!r}; valid: "
                           f"{', '.join(registry.factorial_variants())}")
    if model_config.variant != "full" and model_config.name != "asemblenet":
        raise WorkdirError(f"variant {model_config.variant!r} is an ASembleNet ablation; "
                           f"{model_config.name} has only the variant 'full'")
    overrides = dict(variant, dtype=jnp.dtype(model_config.dtype))
    if "image_size" in registry.constructor_arguments(model_config.name):
        overrides["image_size"] = config.data.image_size  # the one place the input size is decided
    try:
        model = registry.create_model(
            model_config.name, model_config.preset, rngs=nnx.Rngs(params=config.seed, dropout=config.seed + 1),
            num_classes=model_config.num_classes, in_channels=model_config.in_channels, **overrides)
    except ValueError as error:
        raise WorkdirError(str(error)) from None
    momentum = model_config.get("batch_norm_momentum")
    if momentum:
        if not 0.0 < momentum < 1.0:
            raise WorkdirError(f"model.batch_norm_momentum must lie in (0, 1), got {momentum}")
        set_batch_norm_momentum(model, momentum)
    return model


def set_batch_norm_momentum(model: nnx.Module, momentum: float) -> nnx.Module:
    """Every BatchNorm's running average keeps `momentum` of itself per step (Flax's meaning).

    The Keras applications use 0.99: their running statistics need ~500 steps to forget their initial values, so
    a short training budget evaluates them with statistics that do not match the trained weights (ResNet50 after
    200 steps: validation AUC 0.46 with its running statistics, 0.93 with batch statistics). A grid that compares
    models under a short budget gives every model the same momentum."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            node.momentum = momentum
    return model


def split_model(model: nnx.Module):
    """(graph, parameters, BatchNorm statistics, everything else: RNG streams and other non-trained variables)."""
    return nnx.split(model, nnx.Param, nnx.BatchStat, ...)


@flax.struct.dataclass
class Weights:
    """What inference needs of a trained model: its parameters (the EMA ones where the run kept them),
    BatchNorm statistics and other variables. A pytree: replicate it with DataParallel.put_state."""
    params: Any
    batch_stats: Any
    other: Any


def weights_of(model: nnx.Module) -> tuple[Any, Weights]:
    graphdef, params, batch_stats, other = split_model(model)
    return graphdef, Weights(params, batch_stats, other)


def model_from_weights(graphdef, weights: Weights) -> nnx.Module:
    """A live NNX model (for Grad-CAM, export, analysis) holding `weights`."""
    return nnx.merge(graphdef, weights.params, weights.batch_stats, weights.other)


def make_predict_step(graphdef):
    """Per-device predict(weights, batch) -> class probabilities, inference mode."""

    def predict(weights: Weights, batch: dict[str, jax.Array]):
        logits, _ = model_from_weights(graphdef, weights)(batch["image"], train=False)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return predict


def load_weights(workdir: str, *, which: str = "best") -> tuple[Any, Weights, ml_collections.ConfigDict, int]:
    """(graph, weights, config, step) of the model trained in `workdir`; `which` is "best" (by validation AUC,
    falling back to the latest step when no best was saved) or "latest". Only the weights are read from the
    checkpoint: no optimiser is built and its state never leaves the disk."""
    if which not in CHECKPOINT_CHOICES:
        raise ValueError(f"which must be one of {CHECKPOINT_CHOICES}, got {which!r}")
    config = read_config(workdir)
    graphdef, template = weights_of(nnx.eval_shape(lambda: build_model(config)))
    # The checkpoint holds the whole training state; EMA parameters, where kept, are what evaluation used.
    params_key = "ema_params" if config.ema_decay > 0 else "params"
    abstract = {params_key: template.params, "batch_stats": template.batch_stats, "other": template.other}
    restored = checkpoint.restore_weights(Workdir(workdir).checkpoints, abstract, which)
    if restored is None:
        raise WorkdirError(f"{workdir}: no readable checkpoint")
    step, tree = restored
    return graphdef, Weights(tree[params_key], tree["batch_stats"], tree["other"]), config, step


def load_trained_model(workdir: str, *, which: str = "best") -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
    """(model with trained weights, its config, step) from a workdir (see load_weights)."""
    graphdef, weights, config, step = load_weights(workdir, which=which)
    return model_from_weights(graphdef, weights), config, step


def predict_split(dp: parallel.DataParallel, predict_fn, weights: Weights, source, *, batch_size: int,
                  image_size: int):
    """Positive-class probabilities, labels and patient ids of every example of `source`, each exactly once, in
    source order, on every process (each process predicts its own share; the shares are then gathered).
    predict_fn is dp.predict(make_predict_step(graphdef)); weights are laid out by dp.put_state."""
    probabilities, labels, indices = [], [], []
    for batch in pipeline.eval_batches(source, batch_size=batch_size, image_size=image_size,
                                       process_index=jax.process_index(), process_count=jax.process_count()):
        probs = dp.get_outputs(predict_fn(weights, dp.put_batch({"image": batch["image"]})))
        probabilities.append(probs[:, 1])
        labels.append(np.asarray(batch["label"]))
        indices.append(np.where(batch["valid"], batch["index"], -1))
    gathered = parallel.gather_from_processes({"probability": np.concatenate(probabilities),
                                               "label": np.concatenate(labels), "index": np.concatenate(indices)})
    keep = gathered["index"] >= 0
    order = np.argsort(gathered["index"][keep], kind="stable")
    index = gathered["index"][keep][order]
    patients = np.array([pipeline.text(source[int(i)]["patient_id"]) for i in index])
    return gathered["probability"][keep][order], gathered["label"][keep][order], patients


class Predictor:
    """A trained workdir's model, compiled once, giving positive-class probabilities for any split of any
    dataset."""

    def __init__(self, workdir: str, *, which: str = "best"):
        graphdef, weights, self.config, self.step = load_weights(workdir, which=which)
        self.workdir = workdir
        self._graphdef, self._host_weights = graphdef, weights
        self._dp = parallel.DataParallel(self.config.parallel)
        self._weights = self._dp.put_state(weights)
        self._predict = self._dp.predict(make_predict_step(graphdef))

    def model(self) -> nnx.Module:
        """A live model holding the same weights (for Grad-CAM), without reading the checkpoint again."""
        return model_from_weights(self._graphdef, self._host_weights)

    def predict(self, dataset: str, split: str, data_dir: str | None = None):
        """(probabilities, labels, patient ids) of every example of dataset/split, each exactly once."""
        source = pipeline.open_source(dataset, split, data_dir or self.config.data.data_dir)
        return predict_split(self._dp, self._predict, self._weights, source,
                             batch_size=self.config.global_batch_size // jax.process_count(),
                             image_size=self.config.data.image_size)
