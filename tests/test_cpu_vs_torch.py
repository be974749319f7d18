"""The parts of scripts/benchmark_cpu_vs_torch.py that need no torch: the convolutions it times are exactly our
ResNet50's, a report of an interrupted or loaded comparison says so, and the load it makes is real and
stopped (no timing asserted)."""
import os
import pathlib
import time

import pytest

from asemble_jax import cpu_vs_torch


def test_the_timed_convolutions_are_resnet50s_53():
    convolutions = cpu_vs_torch.resnet50_convolutions(64, 2)
    assert sum(conv["count"] for conv in convolutions) == 53  # 1 stem + 16 blocks x 3 + 4 projection shortcuts
    stem = next(conv for conv in convolutions if conv["kernel"][:2] == [7, 7])
    assert stem["input"] == [2, 70, 70, 1] and stem["strides"] == [2, 2]  # padded by 3 explicitly, as Keras does
    assert {tuple(conv["kernel"][:2]) for conv in convolutions} == {(7, 7), (3, 3), (1, 1)}


def _run(label, model, step_s):
    return {"label": label, "model": model, "size": 128, "parameters": 1, "step_s": step_s,
            "compile_and_first_step_s": 20.0, "setup_s": 5.0, "peak_rss_mb": 2000.0, "load_average_1min": 4.2,
            "jax": "0.10.2"}


def test_a_partial_report_keeps_every_run_and_says_it_is_partial(tmp_path):
    result = {"size": 128, "batch": 16, "steps": 10, "rounds": 2, "threads": 2, "cpu": "x86_64", "cpu_count": 2,
              "parts": None, "complete": False,
              "runs": [_run("ours, jaxlib defaults", "resnet50", 2.0), _run("ours, project XLA CPU flags",
                                                                            "resnet50", 1.5),
                       _run("PyTorch default", "resnet50", 1.2) | {"torch": "2.14.1", "torchvision": "0.29.1"}]}
    out = tmp_path / "report.md"
    cpu_vs_torch.write(out, result, "python scripts/benchmark_cpu_vs_torch.py")
    text = out.read_text()
    assert "Partial" in text and "after 3 run(s)" in text
    assert "| ours, project XLA CPU flags | resnet50 | 128x128 | 1 | 1.500 |" in text
    assert "1.25x PyTorch" in text  # 1.5 s / the faster PyTorch layout measured, 1.2 s
    assert (tmp_path / "report.json").exists()


def test_the_background_load_spins_while_the_block_runs_and_is_reaped_however_it_ends():
    with pytest.raises(RuntimeError, match="interrupted"):
        with cpu_vs_torch.busy_processes(2) as spinning:
            assert len(spinning) == 2 and all(process.poll() is None for process in spinning)
            time.sleep(1.0)
            # Each one really spins: it has used CPU time, not slept.
            assert all(_cpu_seconds(process.pid) > 0.2 for process in spinning)
            raise RuntimeError("interrupted")
    assert all(process.returncode is not None for process in spinning)


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_loaded_comparison_says_so_in_its_report(tmp_path):
    result = {"size": 128, "batch": 16, "steps": 10, "rounds": 1, "threads": 2, "cpu": "x86_64", "cpu_count": 2,
              "parts": None, "complete": True, "background_load": 2,
              "runs": [_run("ours, jaxlib defaults", "resnet50", 2.0)]}
    out = tmp_path / "report.md"
    cpu_vs_torch.write(out, result, "python scripts/benchmark_cpu_vs_torch.py --background_load 2")
    assert "**2 busy process(es) ran beside every run**" in out.read_text()
    result["background_load"] = 0
    cpu_vs_torch.write(out, result, "python scripts/benchmark_cpu_vs_torch.py")
    assert "busy process" not in out.read_text()


def test_a_run_whose_flags_contradict_its_label_is_refused_and_the_report_lists_each_runs_flags(tmp_path):
    import importlib.metadata

    from asemble_jax import benchmark, cpu_flags

    project = " ".join(cpu_flags.project_flags(importlib.metadata.version("jaxlib")))
    opted_out = {cpu_flags.OPT_OUT: "0"}
    cpu_vs_torch._check_flags("ours, jaxlib defaults", opted_out, "--xla_cpu_enable_fast_math=false")
    cpu_vs_torch._check_flags("ours, project XLA CPU flags", {}, project)
    with pytest.raises(benchmark.BenchmarkError, match="ours, jaxlib defaults: ran with XLA_FLAGS"):
        cpu_vs_torch._check_flags("ours, jaxlib defaults", opted_out, project)
    with pytest.raises(benchmark.BenchmarkError, match="not what its label says"):
        cpu_vs_torch._check_flags("ours, project XLA CPU flags", {}, "")
    result = {"size": 128, "batch": 16, "steps": 10, "rounds": 1, "threads": 2, "cpu": "x86_64", "cpu_count": 2,
              "parts": None, "runs": [_run("ours, jaxlib defaults", "resnet50", 2.0) | {"xla_flags": ""},
                                      _run("ours, project XLA CPU flags", "resnet50", 1.5) | {"xla_flags": project}]}
    text = cpu_vs_torch.render(result, "python scripts/benchmark_cpu_vs_torch.py")
    assert f"ours, jaxlib defaults: none; ours, project XLA CPU flags: `{project}`." in text
