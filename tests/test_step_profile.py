"""step_profile classifies a compiled module's instructions and sums the profiler's events per kind; on the real
training step it finds the matrix products and convolutions, and no grouped convolution left on the CPU."""
import pytest

from asemble_jax import step_profile

HLO = """HloModule jit_step, entry_computation_layout={(f32[2,8,8,4]{3,2,1,0})->f32[]}

%fused_depthwise (param_0: f32[2,8,8,4], param_1: f32[3,3,1,4]) -> f32[2,8,8,4] {
  %param_0 = f32[2,8,8,4]{3,2,1,0} parameter(0)
  %param_1 = f32[3,3,1,4]{3,2,1,0} parameter(1)
  ROOT %convolution.3 = f32[2,8,8,4]{3,2,1,0} convolution(%param_0, %param_1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, feature_group_count=4
}

%fused_dot (param_0.1: f32[8,4], param_1.1: f32[4,4]) -> f32[8,4] {
  %param_0.1 = f32[8,4]{1,0} parameter(0)
  %param_1.1 = f32[4,4]{1,0} parameter(1)
  %dot.1 = f32[8,4]{1,0} dot(%param_0.1, %param_1.1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %add.1 = f32[8,4]{1,0} add(%dot.1, %dot.1)
}

%fused_pool (param_0.2: f32[2,8,8,4]) -> (f32[2,4,4,4], s32[2,4,4,4]) {
  %param_0.2 = f32[2,8,8,4]{3,2,1,0} parameter(0)
  ROOT %reduce-window.1 = (f32[2,4,4,4]{3,2,1,0}, s32[2,4,4,4]{3,2,1,0}) reduce-window(%param_0.2), window={size=1x2x2x1 stride=1x2x2x1}
}

%fused_loop (param_0.3: f32[8,4]) -> f32[8,4] {
  %param_0.3 = f32[8,4]{1,0} parameter(0)
  ROOT %exponential.1 = f32[8,4]{1,0} exponential(%param_0.3)
}

ENTRY %main (p0: f32[2,8,8,4], p1: f32[3,3,1,4], p2: f32[4,4]) -> f32[] {
  %p0 = f32[2,8,8,4]{3,2,1,0} parameter(0)
  %p1 = f32[3,3,1,4]{3,2,1,0} parameter(1)
  %p2 = f32[4,4]{1,0} parameter(2)
  %ynn_fusion.7 = f32[2,8,8,4]{3,2,1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_depthwise
  %convolution.9 = f32[3,3,1,4]{3,2,1,0} convolution(%p0, %p0), window={size=8x8}, dim_labels=f01b_i01o->01bf, batch_group_count=4
  %convolution.10 = f32[2,8,8,4]{3,2,1,0} convolution(%p0, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
  %bitcast.2 = f32[8,4]{1,0} bitcast(%convolution.10)
  %dot_fusion = f32[8,4]{1,0} fusion(%bitcast.2, %p2), kind=kOutput, calls=%fused_dot
  %pool_fusion = (f32[2,4,4,4]{3,2,1,0}, s32[2,4,4,4]{3,2,1,0}) fusion(%ynn_fusion.7), kind=kLoop, calls=%fused_pool
  %loop_fusion = f32[8,4]{1,0} fusion(%dot_fusion), kind=kLoop, calls=%fused_loop
  %copy.4 = f32[8,4]{0,1} copy(%loop_fusion)
  ROOT %reduce.5 = f32[] reduce(%copy.4, %p2), dimensions={0,1}, to_apply=%fused_loop
}
"""


def test_instructions_are_classified_by_what_they_compute():
    kinds = step_profile.instruction_kinds(HLO)
    assert kinds["ynn_fusion.7"] == "grouped convolution"  # a library fusion, by its contents
    assert kinds["convolution.3"] == "grouped convolution"
    assert kinds["convolution.9"].startswith("batch-grouped convolution")
    assert kinds["convolution.10"] == "convolution"
    assert kinds["dot_fusion"] == "matrix product"
    assert kinds["pool_fusion"] == "pooling (reduce-window)"
    assert kinds["loop_fusion"] == "elementwise loop"
    assert kinds["copy.4"] == "copy or transpose"
    assert kinds["reduce.5"] == "reduction"


def test_events_are_summed_per_kind_and_other_events_are_left_out():
    kinds = step_profile.instruction_kinds(HLO)
    events = [
        {"ph": "X", "name": "ynn_fusion.7", "dur": 30.0},
        {"ph": "X", "name": "convolution.3", "dur": 10.0},
        {"ph": "X", "name": "dot_fusion", "dur": 5.0},
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 1000.0},  # the runtime's own span, not an operation
        {"ph": "i", "name": "dot_fusion", "dur": 7.0},  # not a complete event
    ]
    micros, counts = step_profile.operation_times(events, kinds)
    assert micros == {"grouped convolution": 40.0, "matrix product": 5.0}
    assert counts == {"grouped convolution": 2, "matrix product": 1}


@pytest.mark.slow
def test_the_real_step_has_its_matrix_products_and_no_grouped_convolution_on_the_cpu():
    from asemble_jax.config import apply_overrides, load_config
    from asemble_jax.benchmark import CONFIG

    # A batch of 8: the suite simulates 8 devices (conftest.py), and the batch is split over them.
    config = apply_overrides(load_config(f"{CONFIG}:model=asemblenet,preset=tiny"), {"global_batch_size": 8})
    result = step_profile.profile(config, steps=1)
    per_step = result["per_step_ms"]
    assert per_step.get("matrix product", 0) > 0 and per_step.get("convolution", 0) > 0
    # ConvNeXt's depthwise convolutions run as shifted multiply-adds (asemble_jax/models/cpu_convolution.py).
    assert "grouped convolution" not in per_step
    assert result["step_s"] > 0
