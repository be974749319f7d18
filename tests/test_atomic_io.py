import json
import os

import pytest

from asemble_jax import atomic_io


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.json"
    atomic_io.write_json(target, {"auc": 0.9})
    with pytest.raises(RuntimeError):
        with atomic_io.atomic_open(target) as f:
            f.write('{"auc": 0.')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"auc": 0.9}
    assert os.listdir(tmp_path) == ["table.json"]


def test_writes_create_missing_folders(tmp_path):
    atomic_io.write_text(tmp_path / "a" / "b.md", "x")
    assert (tmp_path / "a" / "b.md").read_text() == "x"
