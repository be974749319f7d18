"""provenance: the rerun command that results print, and the commit marker."""
import os

from asemble_jax import provenance


def test_command_line_reruns_from_the_repository_root_with_arguments_quoted():
    script = os.path.join(provenance.REPO, "scripts", "benchmark_training.py")
    assert provenance.command_line(script, ["--presets", "tiny", "--out", "a b.md"]) == (
        "python scripts/benchmark_training.py --presets tiny --out 'a b.md'")
    assert provenance.command_line(script, []) == "python scripts/benchmark_training.py"


def test_git_commit_is_a_short_hash_with_an_optional_changes_marker():
    commit = provenance.git_commit()
    head = commit.removesuffix("+changes")
    assert commit == "unknown" or (7 <= len(head) <= 12 and all(c in "0123456789abcdef" for c in head))
