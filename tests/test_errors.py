"""One base for user-facing errors and one entry-point wrapper, used by every script."""
import pathlib
import subprocess
import sys
import textwrap

import pytest

from asemble_jax import errors
from asemble_jax.grids.grid import GridError
from asemble_jax.grids.runner import RunnerError
from asemble_jax.grids.tables import TableError
from asemble_jax.config import ConfigError
from asemble_jax.train.trainer import TrainingError
from asemble_jax.workdir import WorkdirError

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("kind", [TrainingError, WorkdirError, GridError, TableError, RunnerError, ConfigError,
                                  errors.InputError])
def test_every_user_facing_error_is_a_user_error(kind):
    assert issubclass(kind, errors.UserError)


def test_run_main_prints_one_line_and_exits_2_for_a_user_error(capsys):
    def failing(argv):
        raise errors.InputError("scan.dcm", "not a DICOM file")

    assert errors.run_main(failing, []) == 2
    assert capsys.readouterr().err == "error: scan.dcm: not a DICOM file\n"
    assert errors.run_main(lambda argv: 3, []) == 3 and errors.run_main(lambda argv: None, []) == 0


def test_the_error_stays_the_last_line_when_exit_collects_abandoned_async_work(tmp_path):
    """A failure that abandons background work (Orbax's checkpoint writes to a storage server that went away):
    asyncio's report of each unretrieved exception and Python's warning of each coroutine never awaited come at
    interpreter exit, after the error line; stderr must end with that line and hold no traceback."""
    program = tmp_path / "entry.py"
    program.write_text(textwrap.dedent("""
        import asyncio, logging, sys
        from asemble_jax import errors

        logging.basicConfig()
        pending = []

        async def write():
            raise ValueError("ABORTED: Error writing the checkpoint: Could not connect to server")

        def main(argv):
            loop = asyncio.new_event_loop()
            task = loop.create_task(write())
            loop.run_until_complete(asyncio.sleep(0.01))  # the write fails; nobody retrieves its exception
            pending.extend([task, loop, write()])  # ...and a coroutine that is never awaited
            raise errors.UserError("gs://bucket/run/metrics.jsonl: cannot reach the storage server")

        sys.exit(errors.run_main(main))
    """))
    finished = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        "error: gs://bucket/run/metrics.jsonl: cannot reach the storage server"], finished.stderr


def test_run_main_lets_a_bug_keep_its_traceback():
    def buggy(argv):
        raise KeyError("a bug, not a user's mistake")

    with pytest.raises(KeyError):
        errors.run_main(buggy, [])


def test_every_entry_point_runs_under_run_main_and_prints_no_error_itself():
    scripts = sorted(SCRIPTS.glob("*.py"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert "sys.exit(run_main(main))" in text, script.name
        assert 'print(f"error:' not in text, script.name
        assert not [flag for flag in _flags(text) if "-" in flag[2:]], script.name  # --batch_size, not --batch-size


def _flags(text: str) -> list[str]:
    return [part.split('"')[1] for part in text.split('add_argument(')[1:] if part.startswith('"--')]


def test_first_line_quotes_a_library_error_in_one_line():
    assert errors.first_line(ValueError("\n  bad shape\ntraceback-like detail\n")) == "bad shape"
    assert errors.first_line(KeyError()) == "KeyError"  # no message: the type names it


def test_a_tensorstore_failure_is_described_without_its_spec_and_as_the_connection_when_curl_says_so():
    from asemble_jax import storage

    spec = "[tensorstore_spec='{\\\"driver\\\":\\\"zarr\\\",\\\"kvstore\\\":{\\\"bucket\\\":\\\"b\\\"}}']"
    refused = ValueError('ABORTED: Error writing "w0/0.0" in OCDBT database at gs://b/c/: All 7 retry attempts failed: '
                         f"CURL error Could not connect to server [curl_code='7'] {spec}")
    assert storage.describe(refused) == ("cannot reach the storage server (ABORTED: Error writing \"w0/0.0\" in OCDBT "
                                         "database at gs://b/c/: All 7 retry attempts failed: CURL error Could not "
                                         "connect to server [curl_code='7'])")
    malformed = ValueError(f"CURL error URL using bad/illegal format [curl_code='3'] {spec}")
    assert storage.describe(malformed) == "ValueError: CURL error URL using bad/illegal format [curl_code='3']"
