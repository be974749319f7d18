"""The grid runner after a crash (issue 18, 12-13): a dead local worker's claim is stale at once, a run that ends
with cells not done exits non-zero naming them, and a cell dies with its runner."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from asemble_jax.data.builders import build
from asemble_jax.errors import run_main
from asemble_jax.grids import claims
from asemble_jax.grids.grid import load_grid
from asemble_jax.workdir import GridWorkdir

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = str(ROOT / "ablations" / "base.py")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _rewrite(path: str, **fields) -> None:
    with open(path) as f:
        payload = json.load(f)
    with open(path, "w") as f:
        json.dump({**payload, **fields}, f)


def test_a_claim_whose_holders_on_this_machine_are_gone_is_stale_at_once(tmp_path):
    claim = claims.try_claim(str(tmp_path))
    assert claims.inspect(str(tmp_path)).held  # this process holds it
    _rewrite(claim.path, pids=[_dead_pid()])
    state = claims.inspect(str(tmp_path))
    assert state.stale and not state.held, "a crashed runner's claim must not wait 600 s"
    _rewrite(claim.path, pids=[_dead_pid()], host="another-machine")
    assert claims.inspect(str(tmp_path)).held, "another machine's processes cannot be checked: wait for the timeout"
    assert claims.try_claim(str(tmp_path)) is None


def test_a_cell_process_that_adopts_the_claim_keeps_it_alive_without_its_runner(tmp_path):
    claim = claims.try_claim(str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from asemble_jax.grids.claims import Claim; "
                              "Claim.adopt(sys.argv[1]); print('adopted', flush=True); time.sleep(60)", claim.path],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "adopted"
        with open(claim.path) as f:
            assert set(json.load(f)["pids"]) == {os.getpid(), child.pid}
        _rewrite(claim.path, pids=[_dead_pid(), child.pid])  # the runner died, the cell runs on
        assert claims.inspect(str(tmp_path)).held
    finally:
        child.kill()
        child.wait()
    assert claims.inspect(str(tmp_path)).stale


def test_a_run_that_ends_with_a_cell_held_elsewhere_exits_4_naming_it(tmp_path, capsys):
    workdir = tmp_path / "grid"
    grid = load_grid(f"{ROOT}/ablations/components.py:seeds=1,variants=full,planes=coronal")
    cell_dir = GridWorkdir(str(workdir)).cell(grid.cells[0].name).root
    held = claims.try_claim(cell_dir, owner=f"{socket.gethostname()}:{os.getpid()}")  # a live worker: this one
    script = _script("run_ablations")
    status = run_main(script.main, [f"--grid={ROOT}/ablations/components.py:seeds=1,variants=full,planes=coronal",
                                    f"--workdir={workdir}"])
    out = capsys.readouterr().out
    assert status == 4 and f"grid incomplete: 1 cell(s) not done ({grid.cells[0].name})" in out
    held.release()


def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_cell_dies_with_its_runner_and_its_claim_is_free_at_once(tmp_path):
    data_dir = tmp_path / "tfds"
    build("bone_mri", data_dir=data_dir, manual_dir=ROOT / "datasets" / "bone_mri" / "dummy_data")
    workdir = tmp_path / "grid"
    runner_process = subprocess.Popen(
        [sys.executable, "scripts/run_ablations.py", "--grid=ablations/bone_mri_lopo.py:folds=3,preset=tiny,steps=5000",
         f"--workdir={workdir}", "--only=full/seed0/fold0", f"--config.data.data_dir={data_dir}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cell_dir = str(workdir / "full" / "seed0" / "fold0")
    cell_pid = None
    deadline = time.time() + 240
    while cell_pid is None and time.time() < deadline:
        for generation in claims._generations(cell_dir) if os.path.isdir(cell_dir) else []:
            with open(claims._path(cell_dir, generation)) as f:
                pids = set(json.load(f).get("pids", [])) - {runner_process.pid}
            cell_pid = next(iter(pids), None)
        time.sleep(0.5)
    assert cell_pid is not None, "the cell subprocess never adopted its claim"
    time.sleep(5)  # into its start-up or training
    os.kill(runner_process.pid, signal.SIGKILL)
    runner_process.wait()
    deadline = time.time() + 120
    while time.time() < deadline and claims._alive(cell_pid):
        time.sleep(0.5)
    assert not claims._alive(cell_pid), "the cell outlived its runner as an orphan"
    assert not claims.inspect(cell_dir).held, "a restarted runner must be able to take the cell at once"
