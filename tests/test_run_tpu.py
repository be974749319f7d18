"""scripts/run_tpu.sh --dry_run: the exact gcloud commands it would run. Each is read back as a shell reads it;
its flags are put to the real gcloud's parser where gcloud is installed (with no account, so nothing runs); the
command every worker would run is run here in a stand-in checkout whose Python records what it was given."""
import os
import pathlib
import shlex
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "run_tpu.sh"
CONFIG = "ablations/base.py:model=asemblenet,preset=paper,dataset=synthetic_sij/coronal"
# Arguments a shell would otherwise split or expand, each of which must reach train.py as it was typed.
AWKWARD = ["--config.model.dtype=bfloat16", "--config.arg=it's a $HOME `test`; \"quoted\" *"]


def _dry_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.fspath(SCRIPT), "--dry_run", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=ROOT)


def _gcloud_command(*args: str, **env: str) -> list[str]:
    result = _dry_run(*args, **env)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    return shlex.split(line)


def _remote(command: list[str]) -> str:
    assert command[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    [remote] = [arg.removeprefix("--command=") for arg in command if arg.startswith("--command=")]
    return remote


def test_train_runs_staging_then_training_on_every_worker(tmp_path):
    command = _gcloud_command("train", "my-tpu", "us-central2-b", "gs://bucket/workdirs/run", "gs://bucket/tfds",
                              CONFIG, *AWKWARD, PROJECT="my-project")
    assert command[5:-1] == ["my-tpu", "--zone=us-central2-b", "--project=my-project", "--worker=all"]

    # The worker's shell, in a stand-in home: a checkout whose .venv/bin/python records each call.
    checkout = tmp_path / "home" / "asemble_jax"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    python = checkout / ".venv" / "bin" / "python"
    python.write_text('#!/bin/bash\n{ echo "ASEMBLE_MULTIHOST=${ASEMBLE_MULTIHOST:-}"; printf "%s\\n" "$@"; '
                      'echo ---; } >> "$HOME/calls"\n')
    python.chmod(0o755)
    home = tmp_path / "home"
    subprocess.run(["bash", "-c", _remote(command)], cwd=home, env={"PATH": os.environ["PATH"], "HOME": str(home)},
                   check=True)
    stage, train = [call.strip("\n").split("\n") for call in (home / "calls").read_text().split("---")[:2]]
    assert stage == ["ASEMBLE_MULTIHOST=", "scripts/stage_dataset.py", "--source=gs://bucket/tfds",
                     "--data_dir=data/tfds"]
    assert train == ["ASEMBLE_MULTIHOST=1", "scripts/train.py", f"--config={CONFIG}",
                     "--workdir=gs://bucket/workdirs/run", "--config.data.data_dir=data/tfds", *AWKWARD]


def test_setup_clones_or_updates_and_installs_for_tpu():
    command = _gcloud_command("setup", "my-tpu", "europe-west4-b", REPO_URL="https://example.org/asemble jax.git")
    assert command[5:-1] == ["my-tpu", "--zone=europe-west4-b", "--worker=all"]
    remote = shlex.split(_remote(command).replace(";", " ; "))
    assert ["git", "clone", "https://example.org/asemble jax.git", "asemble_jax"] == remote[
        remote.index("clone") - 1: remote.index("clone") + 3]
    assert "--python" in remote and "3.12" in remote, "TPU VM images' Python 3.10 is too old for the project"
    assert "jax[tpu]" in remote and "-e" in remote and ".[gcs,tensorboard]" in remote  # gs:// and events
    subprocess.run(["bash", "-n", "-c", _remote(command)], check=True)


@pytest.mark.parametrize("args", [(), ("train", "tpu", "zone"), ("train", "tpu", "zone", "gs://b/w", "gs://b/d"),
                                  ("launch", "tpu", "zone"), ("setup", "tpu", "zone", "extra")])
def test_wrong_arguments_print_the_usage_and_exit_2(args):
    result = _dry_run(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert "run_tpu.sh [--dry_run] train TPU_NAME ZONE" in result.stderr


def test_without_gcloud_it_says_so_in_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "git", "dirname"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(["bash", os.fspath(SCRIPT), "train", "tpu", "zone", "gs://b/w", "gs://b/d", CONFIG],
                            capture_output=True, text=True, env={"PATH": str(bin_dir)}, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.startswith("error: gcloud not found")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the Google Cloud CLI is not installed here")
@pytest.mark.parametrize("args", [("setup", "my-tpu", "us-central2-b"),
                                  ("train", "my-tpu", "us-central2-b", "gs://b/w", "gs://b/tfds", CONFIG, *AWKWARD)])
def test_the_real_gcloud_accepts_every_flag(tmp_path, args):
    """gcloud parses its arguments before it looks for an account; with an empty configuration and no
    credentials of any kind it can only stop there, so what it says tells whether the flags are right."""
    command = _gcloud_command(*args, REPO_URL="https://example.org/r.git", PROJECT="no-such-project-0")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
           "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and "do not currently have an active account" in result.stderr, result.stderr
    assert "unrecognized arguments" not in result.stderr and "argument" not in result.stderr.split("\n")[0]
