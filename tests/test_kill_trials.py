"""kill -9 trials of scripts/train.py (issue 18): SIGKILL at chosen moments (during start-up and compilation,
mid-steps, while a latest or best checkpoint is written, right after each), once or twice in a run; every run must
then resume to the end and finish bit-identical to a run that was never killed. Reports trials / kills landed /
resumable / identical."""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from asemble_jax.data.builders import build
from asemble_jax.workdir import Workdir, load_trained_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 12


def _command(workdir: str, data_dir: str) -> list[str]:
    return [sys.executable, "scripts/train.py", "--config=ablations/base.py:preset=tiny,dataset=bone_mri/stir",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--config.data.train_split=fold0_train",
            "--config.data.val_split=fold0_train", "--config.data.augment=false", "--config.global_batch_size=8",
            f"--config.total_steps={STEPS}", "--config.warmup_steps=2", "--config.log_every=2",
            "--config.eval_every=4", "--config.checkpoint_every=4", "--config.max_to_keep=2",
            f"--config.compilation_cache_dir={os.environ['JAX_COMPILATION_CACHE_DIR']}"]


def _checkpoint_entries(workdir: str, folder: str = "") -> list[str]:
    path = os.path.join(workdir, "checkpoints", folder)
    return os.listdir(path) if os.path.isdir(path) else []


def _train_records(workdir: str) -> int:
    try:
        with open(Workdir(workdir).metrics) as f:
            return sum('"split": "train"' in line for line in f)
    except FileNotFoundError:
        return 0


# Moments to kill at: a predicate on the workdir, polled while the run goes on.
MOMENTS = {
    "start-up and compilation": lambda w, started: time.time() - started > 4 and _train_records(w) == 0,
    "mid-steps": lambda w, started: _train_records(w) >= 1 and not _checkpoint_entries(w),
    "writing a latest checkpoint": lambda w, started: any("tmp" in n for n in _checkpoint_entries(w)),
    "right after a latest checkpoint": lambda w, started: any(n.isdigit() for n in _checkpoint_entries(w)),
    "writing best/": lambda w, started: any("tmp" in n for n in _checkpoint_entries(w, "best")),
    "right after best/": lambda w, started: any(n.isdigit() for n in _checkpoint_entries(w, "best")),
}
TRIALS = [("start-up and compilation",), ("mid-steps", "writing a latest checkpoint"), ("writing best/",),
          ("right after best/", "right after a latest checkpoint")]


def _run(workdir: str, data_dir: str, kill_when=None, timeout: float = 300) -> bool:
    """Runs training; with kill_when, SIGKILLs it as soon as the predicate holds. True when a kill landed."""
    process = subprocess.Popen(_command(workdir, data_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    started = time.time()
    while process.poll() is None and time.time() - started < timeout:
        if kill_when is not None and kill_when(workdir, started):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"training failed (exit {process.returncode}): {stderr.strip()[-2000:]}"
    return False


def _params(workdir: str):
    model, _, step = load_trained_model(workdir, which="latest")
    return step, jax.tree.leaves(jax.device_get(nnx.state(model, nnx.Param)))


@pytest.mark.slow
def test_every_kill_point_resumes_bit_identically(tmp_path):
    data_dir = str(tmp_path / "tfds")
    build("bone_mri", data_dir=data_dir, manual_dir=ROOT / "datasets" / "bone_mri" / "dummy_data")
    reference = str(tmp_path / "reference")
    _run(reference, data_dir)
    reference_step, expected = _params(reference)
    assert reference_step == STEPS

    trials = landed = resumable = identical = 0
    for moments in TRIALS:
        trials += 1
        workdir = str(tmp_path / "trial")
        shutil.rmtree(workdir, ignore_errors=True)
        for moment in moments:
            landed += _run(workdir, data_dir, MOMENTS[moment])
        _run(workdir, data_dir)  # must resume and finish
        resumable += 1
        step, params = _params(workdir)
        identical += step == STEPS and all(np.array_equal(a, b) for a, b in zip(params, expected))
        with open(Workdir(workdir).metrics) as f, open(Workdir(reference).metrics) as g:
            steps = [line.split('"step": ')[1].split(",")[0] for line in f]
            assert steps == [line.split('"step": ')[1].split(",")[0] for line in g], moments
    print(f"kill -9 trials: {trials} trials, {landed} kills landed, {resumable} resumable, {identical} identical")
    assert landed >= len(TRIALS), "most kill points must be hit, or the harness tests nothing"
    assert resumable == identical == trials
