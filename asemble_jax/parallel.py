"""Everything that knows about devices, processes and meshes; the rest of the code sees one per-device step.

A per-device step is written once, with its cross-device reductions as `lax.pmean(..., AXIS)`, and wrapped either
with `jax.shard_map` under `jax.jit` over a 1-D mesh of every device (the default: the JAX docs keep `jax.pmap` in
maintenance mode and implement it on jit + shard_map) or with `jax.pmap`. Training state is replicated; batches
are split along their first axis. Even one device runs through the wrapper so that the step, and BatchNorm
synchronised over AXIS, behave identically on 1 and on N devices.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

AXIS = "data"
MODES = ("shard_map", "pmap")


def initialize_distributed() -> None:
    """Joins a multi-process job when asked to (ASEMBLE_MULTIHOST=1, set by scripts/run_tpu.sh, where JAX finds
    the TPU slice's workers itself) or when a coordinator address is given explicitly."""
    if os.environ.get("ASEMBLE_MULTIHOST") == "1" or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


def is_main_process() -> bool:
    return jax.process_index() == 0


def device_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    devices = devices if devices is not None else jax.devices()
    # Explicit axis types: recent JAX defaults to them, older to Auto; naming them keeps behaviour version-proof.
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Explicit,), devices=devices)


@dataclasses.dataclass
class DataParallel:
    """Runs per-device functions over all devices in one of MODES; moves state and batches to where they run."""

    mode: str = "shard_map"
    devices: list | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"parallel mode must be one of {MODES}, got {self.mode!r}")
        self.mesh = device_mesh(self.devices)
        self.device_count = self.mesh.size
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self._split = NamedSharding(self.mesh, PartitionSpec(AXIS))

    @property
    def local_device_count(self) -> int:
        return sum(1 for d in self.mesh.devices.flat if d.process_index == jax.process_index())

    def check_batch_size(self, global_batch_size: int) -> None:
        if global_batch_size % self.device_count:
            raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                             f"{self.device_count} devices")

    # --- wrapping per-device functions -------------------------------------------------------------------------
    def train_step(self, step_fn: Callable[[Any, Any], tuple[Any, Any]]) -> Callable:
        """step_fn(state, local_batch) -> (state, metrics); its outputs must already be reduced over AXIS.

        The wrapped step returns the state as `put_state` lays it out and one copy of the metrics."""
        if self.mode == "pmap":
            pmapped = jax.pmap(step_fn, axis_name=AXIS, devices=self.mesh.devices.flat, donate_argnums=0)

            def run(state, batch):
                state, metrics = pmapped(state, batch)
                return state, jax.tree.map(lambda x: x[0], metrics)  # reduced already: every copy is equal

            return run
        # check_vma=False: JAX 0.12's erf (inside exact GELU) is a `polynomial` primitive that fails the
        # varying-manual-axes check ("please open an issue"). The check proves nothing our steps need: their
        # outputs are replicated by explicit pmeans, and tests/test_parallel.py shows 8 devices compute what 1 does.
        mapped = jax.shard_map(step_fn, mesh=self.mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
                               out_specs=(PartitionSpec(), PartitionSpec()), check_vma=False)
        return jax.jit(mapped, donate_argnums=0)

    def predict(self, predict_fn: Callable[[Any, Any], Any]) -> Callable:
        """predict_fn(state, local_batch) -> per-example outputs, returned for the whole global batch."""
        if self.mode == "pmap":
            return jax.pmap(predict_fn, axis_name=AXIS, devices=self.mesh.devices.flat)
        mapped = jax.shard_map(predict_fn, mesh=self.mesh, in_specs=(PartitionSpec(), PartitionSpec(AXIS)),
                               out_specs=PartitionSpec(AXIS), check_vma=False)
        return jax.jit(mapped)

    # --- moving data -------------------------------------------------------------------------------------------
    def put_state(self, state: Any) -> Any:
        """Host or single-copy state -> replicated on every device."""
        if self.mode == "pmap":
            # One copy per device along a leading axis (jax.device_put_replicated is gone from recent JAX).
            # Single-process only: multi-host runs use the default shard_map mode.
            n = self.device_count
            return jax.device_put(jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), state), self._split)
        return jax.device_put(state, self._replicated)

    def get_state(self, state: Any) -> Any:
        """Replicated state -> one copy (what is checkpointed and evaluated)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x[0], state)
        return state

    def put_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """This process's share of the global batch -> arrays split over devices along the batch axis."""
        if self.mode == "pmap":
            n = self.local_device_count
            return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), local_batch)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._split, x), local_batch)

    def get_outputs(self, outputs: Any) -> Any:
        """Per-example outputs of `predict` -> this process's examples as numpy, in batch order."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), outputs)
        return jax.tree.map(
            lambda x: np.concatenate([np.asarray(s.data) for s in sorted(
                x.addressable_shards, key=lambda s: s.index[0].start or 0)]), outputs)


def gather_from_processes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each process's equally long arrays, concatenated over processes (in process order) on every process."""
    if jax.process_count() == 1:
        return arrays
    from jax.experimental import multihost_utils

    return {name: np.asarray(multihost_utils.process_allgather(value, tiled=True)) for name, value in arrays.items()}


def synchronise_batch_norm(model: Any) -> Any:
    """Makes every BatchNorm of an NNX model average its batch statistics over AXIS while training.

    Each device then normalises with statistics of the whole global batch, so a run on N devices computes what a
    run on one device computes, and running averages stay identical on every replica.
    """
    from flax import nnx

    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            node.axis_name = AXIS
    return model
