"""A grid cell's own process (python -m asemble_jax.grids.cell) and the stop its runner passes on: a cell that has
written its record is finished, and a SIGTERM that reaches it before it exits changes nothing (the runner used to
see a death by that signal and report a done cell as interrupted)."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from asemble_jax.grids import cell as cell_lib
from asemble_jax.grids import runner
from asemble_jax.grids.grid import Cell, Evaluation, Grid, TableSpec
from asemble_jax.workdir import Workdir

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a cell process: ~40 s on two loaded cores
def test_a_sigterm_after_the_record_is_written_leaves_the_cell_as_recorded(tmp_path):
    # A config typo: the cell records itself failed before training, so its record comes within seconds.
    cell = Cell(name="full/seed0", factors={"variant": "full", "seed": 0},
                config=f"{ROOT}/ablations/base.py:preset=tiny,dataset=bone_mri/stir",
                overrides={"data.no_such_field": 1}, evaluations=(Evaluation("test", "bone_mri/stir", "fold0_test"),))
    grid = Grid("signals", (cell,), TableSpec(arm="variant", reference="full"), spec="signals.py")
    directory = str(tmp_path / "cell")
    record = Workdir(directory).cell_record
    child = subprocess.Popen([sys.executable, *runner.cell_arguments(cell, directory, grid)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not os.path.exists(record) and child.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    # What a stopping runner does; the cell process is still tearing down (claim, interpreter, JAX) when it lands.
    assert child.poll() is None, "the cell process exited before the signal could reach it"
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=120)
    assert code == cell_lib.EXIT_FAILED, child.stderr.read()[-2000:]
    assert runner.cell_outcome(code, cell, directory, grid, 1.0, stopped=True) == runner.FAILED
    assert "no field 'data.no_such_field'" in cell_lib.read_record(directory)["error"]
