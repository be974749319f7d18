"""The one training loop: data-parallel steps, JSON-lines metrics, validation, preemption-safe auto-resume.

Rerunning the same command on the same workdir continues from the newest readable checkpoint, with the data
iterator where it was, and ends with the same parameters as a run that never stopped (bit for bit on CPU).
SIGTERM (a TPU preemption) saves a checkpoint and returns cleanly; a NaN or Inf loss stops the run, naming the
step, without checkpointing the broken state.
"""
from __future__ import annotations

import json
import logging
import signal
import time
import traceback
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from asemble_jax import atomic_io, checkpoint, parallel, storage
from asemble_jax.data import pipeline
from asemble_jax.data.augment import AugmentConfig
from asemble_jax.errors import UserError, first_line
from asemble_jax.evaluation.metrics import classification_metrics
from asemble_jax.train import optim, step as step_lib
from asemble_jax.metrics_log import MetricsLog
from asemble_jax.tensorboard_log import TensorBoardLog
from asemble_jax.workdir import Workdir, build_model, load_weights, make_predict_step, predict_split

log = logging.getLogger(__name__)


class TrainingError(UserError):
    """A run that cannot go on."""


def enable_compilation_cache(directory: str | None) -> None:
    if not directory:
        return
    jax.config.update("jax_compilation_cache_dir", storage.absolute(directory))
    # Cache every program: ablation grids recompile many small identical ones.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def guard_workdir_config(workdir: str, config: ml_collections.ConfigDict, *, allow_change: bool) -> None:
    """Writes config.json, or refuses a workdir whose stored config differs (resuming it would mix two runs).

    A field that the stored config lacks was added to the code after the run started; by this project's rule a
    new field's default is the behaviour from before it existed, so the run resumes (with a warning)."""
    path = Workdir(workdir).config
    current = json.loads(config.to_json_best_effort(sort_keys=True))
    if not allow_change and storage.exists(path):
        with storage.open(path) as f:
            stored = json.load(f)
        changed, added = _config_differences(stored, current)
        if changed:
            raise TrainingError(f"{workdir} holds a run with a different config (changed: {', '.join(changed)}); "
                                "use another workdir, or --allow_config_change to resume anyway")
        if added:
            log.warning("%s: config fields new since this run started, resumed at their defaults: %s", workdir,
                        ", ".join(added))
    if parallel.is_main_process():
        atomic_io.write_json(path, current)


# Fields that change how a run is computed but not what it computes: resuming with another value is the same run.
_RESULT_NEUTRAL = frozenset({"data.worker_count"})


def _config_differences(stored: Any, current: Any, prefix: str = "") -> tuple[list[str], list[str]]:
    """(fields whose value differs or that the current config lacks, fields only the current config has)."""
    if not (isinstance(stored, dict) and isinstance(current, dict)):
        return ([prefix.rstrip(".")] if stored != current and prefix.rstrip(".") not in _RESULT_NEUTRAL else []), []
    changed, added = [], []
    for key in sorted(set(stored) | set(current)):
        if key not in stored:
            added.append(f"{prefix}{key}")
        elif key not in current:
            changed.append(f"{prefix}{key}")
        else:
            more_changed, more_added = _config_differences(stored[key], current[key], f"{prefix}{key}.")
            changed += more_changed
            added += more_added
    return changed, added


class _PreemptionFlag:
    """Turns SIGTERM into a flag that the loop checks between steps."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._previous)


class TrainingProgram(NamedTuple):
    dp: parallel.DataParallel
    state: step_lib.TrainState  # initial, on the host: restore a checkpoint into it, then dp.put_state
    schedule: Any
    train_step: Any  # (state, batch) -> (state, metrics), over every device
    predict_fn: Any  # (weights, batch) -> class probabilities: workdir.make_predict_step over every device


def training_program(config: ml_collections.ConfigDict) -> TrainingProgram:
    """The model, optimiser, initial state and the data-parallel step functions of `config`: what the training
    loop runs, and what scripts/benchmark_training.py times."""
    dp = parallel.DataParallel(config.parallel)
    try:
        dp.check_batch_size(config.global_batch_size)
    except ValueError as error:
        raise TrainingError(str(error)) from None
    model = parallel.synchronise_batch_norm(build_model(config))
    tx, schedule = optim.make_optimizer(config, nnx.state(model, nnx.Param))
    graphdef, state = step_lib.create_train_state(model, tx, seed=config.seed, ema=config.ema_decay > 0)
    train_step = dp.train_step(step_lib.make_train_step(graphdef, tx, label_smoothing=config.label_smoothing,
                                                        ema_decay=config.ema_decay))
    return TrainingProgram(dp, state, schedule, train_step, dp.predict(make_predict_step(graphdef)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the step it stopped at, whether it had finished before,
    and the last validation metrics (none when it stopped, preempted, before its next evaluation)."""
    parallel.initialize_distributed()
    enable_compilation_cache(config.compilation_cache_dir)
    paths = Workdir(workdir)
    storage.makedirs(workdir)
    guard_workdir_config(workdir, config, allow_change=allow_config_change)
    main_process = parallel.is_main_process()
    metrics_log = MetricsLog(paths.metrics, enabled=main_process)

    dp, state, schedule, train_step, predict_fn = training_program(config)
    use_ema = config.ema_decay > 0

    data = config.data
    train_source = pipeline.open_source(data.dataset, data.train_split, data.data_dir)
    val_source = pipeline.open_source(data.dataset, data.val_split, data.data_dir)
    train_iter = pipeline.train_iterator(
        [(train_source, 1.0)], global_batch_size=config.global_batch_size, seed=config.seed,
        augment=AugmentConfig() if data.augment else None, image_size=data.image_size,
        process_index=jax.process_index(), process_count=jax.process_count(), worker_count=data.worker_count)

    with checkpoint.Checkpoints(paths.checkpoints, max_to_keep=config.max_to_keep) as checkpoints:
        restored = checkpoints.restore_latest(checkpoint.abstract_like(state))
        if restored is None and config.get("init_from"):
            state = initialised_from(state, config)
        if restored is not None:
            start_step, state, saved_data_state = restored
            train_iter.set_state(saved_data_state["iterator"])
            log.info("resumed %s at step %d", workdir, start_step)
        # The best AUC so far is that of best/, which can be newer than the latest checkpoint (a kill after best/S
        # was written, before S was): reaching S again must not count as an improvement on an older best.
        best = checkpoints.best_record()
        best_auc = max(-np.inf if restored is None else restored[2].get("best_auc", -np.inf),
                       -np.inf if best is None else best[1].get("best_auc", -np.inf))
        start_step = int(state.step)
        # Records after the restored step (all of them on a fresh start) were written by a run that is being redone.
        metrics_log.truncate_after(start_step)
        events = TensorBoardLog(workdir, enabled=config.tensorboard and main_process)
        events.restart(metrics_log.read())

        def log_record(record: dict[str, Any]) -> None:
            metrics_log.write(record)
            events.write(record)

        if start_step >= config.total_steps:
            return finished_metrics(metrics_log, workdir, start_step)
        state = dp.put_state(state)

        def evaluate(weights, step: int) -> dict[str, Any]:
            probs, labels, _ = predict_split(dp, predict_fn, weights, val_source,
                                             batch_size=config.global_batch_size // jax.process_count(),
                                             image_size=data.image_size)
            metrics = classification_metrics(labels, probs)
            log_record({"step": step, "split": data.val_split,
                        **{f"val_{k}": v for k, v in metrics.items() if k != "confusion_matrix"}})
            return metrics

        val_metrics: dict[str, Any] = {}
        bar = tqdm(total=config.total_steps, initial=start_step, disable=not (progress and main_process),
                   unit="step", dynamic_ncols=True)
        window_start, window_images = time.perf_counter(), 0
        # Losses stay on the device until something needs the host (a log line, an evaluation, a checkpoint): reading
        # one every step would stall asynchronous dispatch. They are all checked before the state is used.
        unchecked_losses: list[tuple[int, jax.Array]] = []

        def check_losses() -> float:
            values = jax.device_get([loss for _, loss in unchecked_losses])
            for (step_number, _), value in zip(unchecked_losses, values):
                if not np.isfinite(value):
                    metrics_log.flush()
                    events.flush()
                    checkpoints.wait()
                    raise TrainingError(f"loss is {float(value)} at step {step_number}; stopped without saving this "
                                        f"state (last good checkpoint: step {checkpoints.latest_step()})")
            unchecked_losses.clear()
            return float(values[-1])

        with _PreemptionFlag() as preemption, bar:  # the bar ends its line whatever stops the loop (an error too)
            for step in range(start_step + 1, config.total_steps + 1):
                batch = next(train_iter)
                state, metrics = train_step(state, dp.put_batch({"image": batch["image"], "label": batch["label"]}))
                unchecked_losses.append((step, metrics["loss"]))
                window_images += config.global_batch_size
                bar.update(1)
                last = step == config.total_steps
                log_now, eval_now = step % config.log_every == 0 or last, step % config.eval_every == 0 or last
                save_now = step % config.checkpoint_every == 0 or last or preemption.raised
                if log_now or eval_now or save_now:
                    loss = check_losses()
                if log_now:
                    elapsed = time.perf_counter() - window_start
                    images_per_second = window_images / elapsed if elapsed > 0 else float("nan")
                    log_record({"step": step, "split": "train", "learning_rate": float(schedule(step - 1)),
                                "images_per_second": images_per_second, **{k: float(v) for k, v in metrics.items()}})
                    bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{images_per_second:.0f}")
                    window_start, window_images = time.perf_counter(), 0
                if eval_now:
                    val_metrics = evaluate(state.weights(use_ema=use_ema), step)
                    if val_metrics["auc"] > best_auc:
                        best_auc = val_metrics["auc"]
                        checkpoints.save_best(step, dp.get_state(state), _data_state(train_iter, best_auc))
                    window_start, window_images = time.perf_counter(), 0  # keep evaluation out of images/s
                if save_now:
                    metrics_log.flush()  # first: a complete checkpoint must never be newer than the durable log
                    checkpoints.save(step, dp.get_state(state), _data_state(train_iter, best_auc))
                if preemption.raised:
                    log.warning("SIGTERM at step %d: checkpoint saved, exiting", step)
                    break
        metrics_log.flush()
    events.close()
    return {"step": step, "already_finished": False, **val_metrics}


def finished_metrics(metrics_log: MetricsLog, workdir: str, step: int) -> dict[str, Any]:
    """The last validation figures of a run that has nothing left to train, as train_and_evaluate returns them."""
    validation = [r for r in metrics_log.read() if r.get("split") != "train" and r.get("step", 0) <= step]
    log.info("%s finished training at step %d already", workdir, step)
    last = validation[-1] if validation else {}
    return {"step": step, "already_finished": True,
            **{key[len("val_"):]: value for key, value in last.items() if key.startswith("val_")}}


def train_logging_failures(config: ml_collections.ConfigDict, workdir: str, **kwargs) -> dict[str, Any]:
    """train_and_evaluate for a command line: an error that is not already one line for the user (Orbax's, a
    full disk, a bug) goes with its traceback to WORKDIR/train.log and reaches the user as one line naming the
    workdir and the cause."""
    try:
        return train_and_evaluate(config, workdir, **kwargs)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - turned into the user's one line, traceback kept in the log
        log_path = Workdir(workdir).train_log
        try:
            storage.makedirs(workdir)
            storage.append_text(log_path, f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n{traceback.format_exc()}\n")
            where = f"traceback in {log_path}"
        except (OSError, UserError):  # a full disk, a store that stopped answering
            where = "the traceback could not be written to the workdir"
        raise TrainingError(f"{workdir}: training stopped by {type(error).__name__}: {first_line(error)} ({where})"
                            ) from None


def _data_state(train_iter, best_auc: float) -> dict[str, Any]:
    """What a checkpoint keeps beside the training state: where the data iterator is, and the best AUC so far."""
    return {"iterator": train_iter.get_state(), "best_auc": float(best_auc)}


def initialised_from(state: step_lib.TrainState, config: ml_collections.ConfigDict) -> step_lib.TrainState:
    """`state` with the trained weights (and BatchNorm statistics) of the run in `config.init_from`: its best
    checkpoint, its EMA parameters where it kept them. Step, optimiser state and RNG stay those of a fresh run."""
    source = config.init_from
    _, weights, source_config, step = load_weights(source, which="best")
    fields = ("name", "preset", "variant", "num_classes", "in_channels")
    differ = [f"model.{k}" for k in fields if source_config.model[k] != config.model[k]]
    differ += ["data.image_size"] if source_config.data.image_size != config.data.image_size else []
    if differ:
        raise TrainingError(f"init_from {source}: its run differs from this one in {', '.join(differ)}; "
                            "initial weights must come from the same architecture")
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    if shapes((weights.params, weights.batch_stats)) != shapes((state.params, state.batch_stats)):
        raise TrainingError(f"init_from {source}: its weights do not have this model's shapes")
    log.info("initial weights from %s (step %d)", source, step)
    params = weights.params
    return state.replace(params=params, batch_stats=weights.batch_stats,
                         ema_params=None if state.ema_params is None else jax.tree.map(jnp.copy, params))
