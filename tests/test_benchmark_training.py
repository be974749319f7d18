"""asemble_jax/benchmark.py (scripts/benchmark_training.py): the peak table lookup, what is measured, and one
in-process measurement of the real training program on the 8 simulated devices, written as the script writes it."""
import json
import math
import os

import jax
import pytest

from asemble_jax import benchmark
from asemble_jax.config import apply_overrides, load_config
from asemble_jax.train.trainer import training_program


@pytest.mark.parametrize("device_kind, expected", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4), ("TPU v5 lite", 197.0),
    ("TPU v5p", 459.0), ("cpu", None), ("Quantum Annealer 9000", None)])
def test_peak_is_the_longest_known_name_that_starts_the_device_kind(device_kind, expected):
    assert benchmark.peak_tflops(device_kind, None) == expected


def test_an_explicit_peak_wins():
    assert benchmark.peak_tflops("NVIDIA H100 80GB HBM3", 500.0) == 500.0


def test_each_architecture_is_measured_once_per_input_size():
    # ResNet50's presets are one architecture; ASembleNet's differ, and size 0 is the preset's own.
    assert benchmark.measurements(["asemblenet", "resnet50"], ["tiny", "small"], [64, 0]) == [
        ("asemblenet", "tiny", 64), ("asemblenet", "small", 64), ("asemblenet", "small", 128),
        ("resnet50", "tiny", 64), ("resnet50", "small", 128)]


def test_measurement_of_the_training_program_on_eight_devices(tmp_path):
    steps = 2
    result = benchmark.measure("asemblenet", "tiny", batch=16, steps=steps,
                               cache_dir=os.environ["JAX_COMPILATION_CACHE_DIR"], peak_tflops_per_device=2.0)
    assert (result["devices"], result["size"], result["batch"]) == (8, 64, 16)
    for key in ("images_per_second", "forward_images_per_second"):
        assert 0 < result[key] < math.inf
    assert result["images_per_second"] == pytest.approx(16 / result["step_s"])
    # results/models/table.md: tiny takes 0.198 GFLOPs at 256x256, so ~1/16 of that at 64x64; 117,590 parameters.
    assert 0.005 < result["forward_gflops_per_image"] < 0.05
    assert result["parameters"] == 117_590
    expected_tflops = 3 * result["forward_gflops_per_image"] * result["images_per_second"] / 1e3
    assert result["model_tflops_per_second"] == pytest.approx(expected_tflops)
    assert result["mfu"] == pytest.approx(expected_tflops / (2.0 * 8))

    # The step timed is the trainer's: the same steps of training_program on the same batch give the same loss
    # (a step with another optimiser, no clipping or no label smoothing would not).
    config = apply_overrides(load_config("ablations/base.py:model=asemblenet,preset=tiny"), {"global_batch_size": 16})
    program = training_program(config)
    state, data = program.dp.put_state(program.state), program.dp.put_batch(benchmark.random_batch(16, 64))
    for _ in range(1 + steps):
        state, metrics = program.train_step(state, data)
    assert result["final_loss"] == pytest.approx(float(jax.device_get(metrics["loss"])), rel=1e-5)

    rows = [{**result, "cold_compile_s": 1.0, "cold_step_s": result["step_s"]}]
    out = tmp_path / "speed.md"
    benchmark.write(out, rows, "python scripts/benchmark_training.py --presets tiny")
    table = [line for line in out.read_text().splitlines() if line.startswith("| asemblenet |")]
    assert len(table) == 1 and table[0].startswith("| asemblenet | tiny | 64x64 | float32 | 117,590 | 8 | 16 |")
    assert "`python scripts/benchmark_training.py --presets tiny`" in out.read_text()
    assert json.loads((tmp_path / "speed.json").read_text())[0]["final_loss"] == result["final_loss"]
