"""Staging prepared TFDS datasets onto local disk (asemble_jax/data/staging.py, scripts/stage_dataset.py): a
verified copy, kept when complete, redone after a kill, refused when the source is broken. The source here is a
local folder read through the same etils.epath calls as a gs:// one."""
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from asemble_jax.data import staging
from asemble_jax.data.builders import build
from asemble_jax.errors import InputError, UserError

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSION = "bone_mri/stir/1.0.0"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> pathlib.Path:
    data_dir = tmp_path_factory.mktemp("bucket") / "tfds"
    build("bone_mri", data_dir=data_dir, manual_dir=ROOT / "datasets" / "bone_mri" / "dummy_data")
    return data_dir


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images(data_dir, split="train") -> list[bytes]:
    records = tfds.data_source("bone_mri/stir", split=split, data_dir=os.fspath(data_dir), download=False)
    return [records[i]["image"] for i in range(len(records))]


def test_a_staged_copy_holds_every_file_and_reads_as_the_source(source, tmp_path):
    local = tmp_path / "tfds"
    [staged] = staging.stage(os.fspath(source), local, progress=False)
    assert staged.name == VERSION and staged.copied
    files = {p.name: p for p in (source / VERSION).iterdir()}
    manifest = json.loads((local / VERSION / staging.MANIFEST).read_text())["files"]
    assert manifest.keys() == files.keys()
    for name, path in files.items():
        assert manifest[name] == {"bytes": path.stat().st_size, "sha256": _sha256(path),
                                  "source_mtime": int(path.stat().st_mtime)}
        assert (local / VERSION / name).read_bytes() == path.read_bytes()
    assert staged.num_bytes == sum(p.stat().st_size for p in files.values())
    for split in ("train", "val", "fold0_test"):
        assert _images(local, split) == _images(source, split)
    assert list((local / staging.STAGING).iterdir()) == [], "nothing is left beside the copy"


def test_a_complete_copy_is_kept_and_an_incomplete_or_outdated_one_redone(source, tmp_path):
    bucket, local = tmp_path / "bucket", tmp_path / "tfds"
    shutil.copytree(source, bucket)
    staging.stage(os.fspath(bucket), local, ["bone_mri/stir"], progress=False)
    shard = local / VERSION / "bone_mri-train.array_record-00000-of-00001"
    before = shard.stat().st_mtime_ns
    [again] = staging.stage(os.fspath(bucket), local, ["bone_mri/stir"], progress=False)
    assert not again.copied and shard.stat().st_mtime_ns == before

    shard.write_bytes(shard.read_bytes()[:100])  # a copy damaged after staging: its size no longer matches
    [redone] = staging.stage(os.fspath(bucket), local, progress=False)
    assert redone.copied
    staging.verify(local / VERSION)

    (local / VERSION / staging.MANIFEST).unlink()  # a folder copied by hand: nothing says it is complete
    assert staging.stage(os.fspath(bucket), local, progress=False)[0].copied

    later = time.time() + 60  # the dataset uploaded again since (same names and sizes)
    os.utime(bucket / VERSION / "dataset_info.json", (later, later))
    assert staging.stage(os.fspath(bucket), local, progress=False)[0].copied
    assert not staging.stage(os.fspath(bucket), local, progress=False)[0].copied


def test_verify_finds_a_changed_byte(source, tmp_path):
    local = tmp_path / "tfds"
    staging.stage(os.fspath(source), local, progress=False)
    shard = local / VERSION / "bone_mri-val.array_record-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match="bone_mri-val.array_record-00000-of-00001: the copy on disk differs"):
        staging.verify(local / VERSION)


def test_a_broken_source_is_refused_and_leaves_no_copy(source, tmp_path):
    broken = tmp_path / "bucket"
    shutil.copytree(source, broken)
    shard = broken / VERSION / "bone_mri-train.array_record-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # an upload cut short
    local = tmp_path / "tfds"
    with pytest.raises(InputError, match="TFDS cannot read the copy") as raised:
        staging.stage(os.fspath(broken), local, progress=False)
    assert "\n" not in str(raised.value) and str(raised.value).startswith(os.fspath(broken / VERSION))
    assert not (local / VERSION).exists()


@pytest.mark.parametrize("datasets, where", [((), ""), (("bone_mri/axial",), "/bone_mri/axial")])
def test_nothing_to_stage_is_one_line_naming_where(tmp_path, datasets, where):
    empty = tmp_path / "bucket"
    empty.mkdir()
    with pytest.raises(InputError, match="no prepared TFDS dataset here") as raised:
        staging.stage(os.fspath(empty), tmp_path / "tfds", datasets, progress=False)
    assert str(raised.value).startswith(f"{empty}{where}: ")


def test_a_url_as_the_local_folder_is_refused(source):
    with pytest.raises(InputError, match="give a local folder"):
        staging.stage(os.fspath(source), "gs://bucket/tfds", progress=False)


@pytest.mark.slow
def test_a_copy_killed_midway_is_not_taken_for_a_complete_one(source, tmp_path):
    bucket = tmp_path / "bucket"
    shutil.copytree(source, bucket)
    # Large enough that the copy is still running when the first files have landed; copied last (names sort).
    (bucket / VERSION / "zz_padding.bin").write_bytes(np.random.default_rng(0).bytes(128 << 20))
    local = tmp_path / "tfds"
    command = [sys.executable, "scripts/stage_dataset.py", f"--source={bucket}", f"--data_dir={local}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    started = time.time()
    while process.poll() is None and time.time() - started < 120:
        if any(p.is_file() for p in (local / staging.STAGING).rglob("zz_padding.bin")):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the kill must land while the copy runs"
    assert not (local / VERSION).exists(), "a killed copy is never in place"

    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert f"{VERSION}: copied and verified" in finished.stdout
    assert (local / VERSION / "zz_padding.bin").stat().st_size == 128 << 20
    assert not any((local / staging.STAGING).iterdir()), "the killed copy's leftovers are gone"
    staging.verify(local / VERSION)


def test_staged_from_a_gcs_bucket(source, gcs_bucket, tmp_path):
    """The same staging from gs:// on a GCS-compatible server: listed, read and checked as from a folder."""
    from asemble_jax import storage

    for path in (source / VERSION).iterdir():
        storage.write_bytes(f"{gcs_bucket}/tfds/{VERSION}/{path.name}", path.read_bytes())
    local = tmp_path / "tfds"
    [staged] = staging.stage(f"{gcs_bucket}/tfds", local, progress=False)
    assert staged.name == VERSION and staged.copied
    assert _images(local) == _images(source) and _images(local, "val") == _images(source, "val")
    staging.verify(local / VERSION)
    assert not staging.stage(f"{gcs_bucket}/tfds", local, ["bone_mri/stir"], progress=False)[0].copied
    assert not [p for p in (ROOT, pathlib.Path.cwd(), tmp_path) for q in p.iterdir() if q.name.startswith("gs:")]

    with pytest.raises(UserError, match=r"^gs://no-such-bucket-0: no such bucket"):
        staging.stage("gs://no-such-bucket-0/tfds", local, progress=False)
