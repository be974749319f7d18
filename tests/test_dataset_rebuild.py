"""Issue 18.10: a build records its manual_dir's fingerprint; a later build from a changed manual_dir rebuilds
(the old build staying readable until the new one is complete), an unchanged one is reused, and --force rebuilds
unconditionally."""
import importlib.util
import json
import os
import pathlib
import shutil

import pytest

from asemble_jax.data import builders, manual_sources
from asemble_jax.data.builders import MANUAL_DIR_LISTING, build, get_builder, manual_dir_fingerprint
from asemble_jax.errors import InputError, run_main

REPO = pathlib.Path(__file__).resolve().parents[1]
ELAZIG_DUMMY = REPO / "datasets" / "elazig" / "dummy_data"
DATASET = "elazig/coronal"

spec = importlib.util.spec_from_file_location("build_dataset", REPO / "scripts" / "build_dataset.py")
build_dataset = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_dataset)


def examples_in(builder) -> int:
    return sum(split.num_examples for split in builder.info.splits.values())


def folders_beside(builder) -> list[str]:
    return sorted(p.name for p in pathlib.Path(os.fspath(builder.data_path)).parent.iterdir())


@pytest.fixture
def manual(tmp_path):
    folder = tmp_path / "manual"
    shutil.copytree(ELAZIG_DUMMY, folder)
    return folder


@pytest.fixture
def first_build(tmp_path, manual):
    builder = build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual)
    # A file TFDS never writes: it survives only if the build folder is reused.
    (pathlib.Path(os.fspath(builder.data_path)) / "marker").write_text("old build")
    return builder


def is_reused(builder) -> bool:
    return (pathlib.Path(os.fspath(builder.data_path)) / "marker").exists()


def test_fingerprint_is_of_names_sizes_and_times_not_contents(tmp_path, manual):
    before = manual_dir_fingerprint(manual)
    assert before["files"] == sum(1 for _ in manual.rglob("*") if _.is_file())
    assert manual_dir_fingerprint(manual) == before
    copy = tmp_path / "copy"
    shutil.copytree(manual, copy)  # times kept: same listing
    assert manual_dir_fingerprint(copy) == before
    (manual / ".DS_Store").write_text("hidden")
    assert manual_dir_fingerprint(manual) == before
    image = manual / "Coronal" / "AS" / "cor_01.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert manual_dir_fingerprint(manual) != before
    assert not any(str(manual) in str(value) or "cor_01" in str(value) for value in before.values())


def test_unchanged_manual_dir_reuses_the_build(tmp_path, manual, first_build):
    assert first_build.info.metadata[MANUAL_DIR_LISTING] == manual_dir_fingerprint(manual)
    again = build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual)
    assert is_reused(again) and examples_in(again) == examples_in(first_build)


def test_changed_manual_dir_is_rebuilt(tmp_path, manual, first_build):
    before = examples_in(first_build)
    (manual / "Coronal" / "AS" / "cor_03.png").unlink()
    rebuilt = build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual)
    assert not is_reused(rebuilt)
    assert examples_in(rebuilt) == before - 1
    assert rebuilt.info.metadata[MANUAL_DIR_LISTING] == manual_dir_fingerprint(manual)
    assert folders_beside(rebuilt) == ["1.0.0"]  # no staging or replaced folder left behind
    reopened = get_builder(DATASET, data_dir=tmp_path / "tfds")
    assert examples_in(reopened) == before - 1
    assert len(reopened.as_data_source("train")) == reopened.info.splits["train"].num_examples


def test_failed_rebuild_keeps_the_old_build(tmp_path, manual, first_build):
    before = examples_in(first_build)
    (manual / "Coronal" / "AS" / "cor_04.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.raises(InputError, match="cor_04.png"):
        build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual, strict=True)
    kept = get_builder(DATASET, data_dir=tmp_path / "tfds")
    assert is_reused(kept) and examples_in(kept) == before
    assert folders_beside(kept) == ["1.0.0"]


def test_interrupted_rebuild_leaves_the_old_build_readable(tmp_path, manual, first_build, monkeypatch):
    before = examples_in(first_build)
    (manual / "Coronal" / "AS" / "cor_03.png").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(manual_sources, "prepare_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual)
    kept = get_builder(DATASET, data_dir=tmp_path / "tfds")
    assert is_reused(kept) and examples_in(kept) == before
    source = kept.as_data_source("train")
    assert len(source) == kept.info.splits["train"].num_examples and source[0]["image"]


def test_leftovers_of_a_killed_rebuild_are_cleared_and_never_read(tmp_path, manual, first_build):
    version_dir = pathlib.Path(os.fspath(first_build.data_path))
    leftover = version_dir.parent / (builders._REBUILD_PREFIX + "killed")
    shutil.copytree(version_dir, leftover / "elazig" / "coronal" / version_dir.name)
    assert is_reused(build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual))
    (manual / "Coronal" / "AS" / "cor_03.png").unlink()
    rebuilt = build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual)
    assert folders_beside(rebuilt) == ["1.0.0"]


def test_force_rebuilds_unconditionally(tmp_path, manual, first_build, capsys):
    argv = ["--dataset", DATASET, "--data_dir", str(tmp_path / "tfds"), "--manual_dir", str(manual)]
    assert run_main(build_dataset.main, argv) == 0
    assert is_reused(get_builder(DATASET, data_dir=tmp_path / "tfds"))
    assert run_main(build_dataset.main, argv + ["--force"]) == 0
    rebuilt = get_builder(DATASET, data_dir=tmp_path / "tfds")
    assert not is_reused(rebuilt) and examples_in(rebuilt) == examples_in(first_build)
    assert "elazig/coronal" in capsys.readouterr().out


def test_a_build_without_a_recorded_fingerprint_is_rebuilt_when_a_manual_dir_is_given(tmp_path, manual, first_build):
    metadata = pathlib.Path(os.fspath(first_build.data_path)) / "metadata.json"
    recorded = json.loads(metadata.read_text())
    del recorded[MANUAL_DIR_LISTING]
    metadata.write_text(json.dumps(recorded))
    assert not is_reused(build(DATASET, data_dir=tmp_path / "tfds", manual_dir=manual))
