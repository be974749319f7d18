"""scripts/benchmark_training.py: the peak table lookup and one in-process measurement of the real training step
on the 8 simulated devices."""
import argparse
import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parent.parent
spec = importlib.util.spec_from_file_location("benchmark_training", ROOT / "scripts" / "benchmark_training.py")
benchmark_training = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark_training)


@pytest.mark.parametrize("device_kind, expected", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4), ("TPU v5 lite", 197.0),
    ("TPU v5p", 459.0), ("cpu", None), ("Quantum Annealer 9000", None)])
def test_peak_is_the_longest_known_name_that_starts_the_device_kind(device_kind, expected):
    assert benchmark_training.peak_tflops(device_kind, None) == expected


def test_an_explicit_peak_wins():
    assert benchmark_training.peak_tflops("NVIDIA H100 80GB HBM3", 500.0) == 500.0


def test_measurement_of_the_training_step_on_eight_devices():
    args = argparse.Namespace(model="asemblenet", preset="tiny", size=0, batch=16, steps=2, dtype="float32",
                              cache_dir=os.environ["JAX_COMPILATION_CACHE_DIR"], peak_tflops=2.0)
    result = benchmark_training.measure(args)
    assert (result["devices"], result["size"], result["batch"]) == (8, 64, 16)
    assert result["images_per_second"] == pytest.approx(16 / result["step_s"])
    # results/models/table.md: tiny takes 0.198 GFLOPs at 256x256, so ~1/16 of that at 64x64.
    assert 0.005 < result["forward_gflops_per_image"] < 0.05
    expected_tflops = 3 * result["forward_gflops_per_image"] * result["images_per_second"] / 1e3
    assert result["model_tflops_per_second"] == pytest.approx(expected_tflops)
    assert result["mfu"] == pytest.approx(expected_tflops / (2.0 * 8))
    assert 0.0 < result["final_loss"] < 2.0
