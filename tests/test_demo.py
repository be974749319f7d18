"""The demo's dataset step: builds in spawned worker processes give the records an in-process build gives, and a
worker's user-facing error reaches the caller as its one line."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from asemble_jax.data.builders import build
from asemble_jax.demo import build_datasets
from asemble_jax.errors import UserError


@pytest.mark.slow
def test_parallel_builds_equal_an_in_process_build_and_a_workers_error_is_one_line(tmp_path):
    with pytest.raises(UserError, match="synthetic_sij/no_such_plane") as raised:
        build_datasets(str(tmp_path / "parallel"), names=("synthetic_sij/shifted", "synthetic_sij/no_such_plane"))
    assert "\n" not in str(raised.value)
    build("synthetic_sij/shifted", data_dir=str(tmp_path / "here"))
    parallel, here = (tfds.data_source("synthetic_sij/shifted", split="test", data_dir=str(tmp_path / d))
                      for d in ("parallel", "here"))
    assert len(parallel) == len(here) == 240
    for i in range(len(here)):
        assert parallel[i].keys() == here[i].keys()
        assert all(np.array_equal(parallel[i][k], here[i][k]) for k in here[i])
