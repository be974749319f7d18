"""scripts/run_ablations.py as a user runs it: a dry run lists the grid, also into a pipe that closes early."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent


def test_a_dry_run_piped_into_head_exits_cleanly_without_a_traceback(tmp_path):
    # 800 cells list to ~200 KB, more than a pipe holds, so the script writes after `head` has gone.
    command = (f"{sys.executable} scripts/run_ablations.py --grid=ablations/components.py:seeds=50 "
               f"--workdir={tmp_path / 'grid'} --dry_run | head -n 1")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.startswith("grid components (ablations/components.py:seeds=50): 800 of 800 cells")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 0
    assert not (tmp_path / "grid").exists()  # a dry run writes nothing
