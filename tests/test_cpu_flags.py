"""The project's XLA CPU defaults (asemble_jax/cpu_flags.py): set on import before JAX starts, never over a user's
own flags, skipped on a jaxlib that predates them, and accepted by the installed XLA."""
import importlib.metadata
import json
import os
import subprocess
import sys

from asemble_jax import cpu_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_appended_after_the_users_flags():
    flags = cpu_flags.merged("--xla_force_host_platform_device_count=4", "0.10.2")
    assert flags.split() == ["--xla_force_host_platform_device_count=4", f"{YNN}=-individual_convolution"]


def test_a_flag_the_user_set_wins():
    users = f"{YNN}=LIBRARY_FUSION_TYPE_DOT --xla_force_host_platform_device_count=2"
    assert cpu_flags.merged(users, "0.12.0").split() == users.split()


def test_a_jaxlib_older_than_a_default_does_not_get_it():
    assert cpu_flags.project_flags("0.9.1") == []
    assert cpu_flags.merged("--xla_force_host_platform_device_count=2", "0.9.1") == \
        "--xla_force_host_platform_device_count=2"
    assert cpu_flags.project_flags("0.10.0rc1") == [f"{YNN}=-individual_convolution"]


def test_this_test_process_runs_with_them():
    # conftest.py sets the device count before anything imports asemble_jax; the import appended the defaults.
    flags = os.environ["XLA_FLAGS"].split()
    assert "--xla_force_host_platform_device_count=8" in flags
    assert set(cpu_flags.project_flags(importlib.metadata.version("jaxlib"))) <= set(flags)


def _fresh(program: str, env: dict) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", cpu_flags.OPT_OUT)} | env
    finished = subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return json.loads(finished.stdout.strip().splitlines()[-1]) | {"stderr": finished.stderr}


def test_on_import_before_jax_starts_and_xla_accepts_them():
    # A real JAX start with the merged flags: XLA aborts the process on a flag its jaxlib does not know, and the
    # user's device count must survive the merge.
    program = ("import json, os, asemble_jax, jax, jax.numpy as jnp; "
               "y = jax.jit(lambda x: jax.lax.conv_general_dilated(x, x[:1].transpose(1, 2, 3, 0), (1, 1), 'SAME', "
               "dimension_numbers=('NHWC', 'HWIO', 'NHWC')))(jnp.ones((2, 8, 8, 3))); "
               "print(json.dumps({'flags': os.environ['XLA_FLAGS'], 'devices': jax.device_count(), "
               "'sum': float(y.sum())}))")
    result = _fresh(program, {"XLA_FLAGS": "--xla_force_host_platform_device_count=3", "JAX_PLATFORMS": "cpu"})
    assert result["devices"] == 3
    assert result["flags"].split()[0] == "--xla_force_host_platform_device_count=3"
    assert set(cpu_flags.project_flags(importlib.metadata.version("jaxlib"))) <= set(result["flags"].split())
    assert result["sum"] > 0


def test_opt_out_leaves_xla_flags_alone():
    program = "import json, os, asemble_jax; print(json.dumps({'flags': os.environ.get('XLA_FLAGS')}))"
    assert _fresh(program, {cpu_flags.OPT_OUT: "0"})["flags"] is None
    assert _fresh(program, {cpu_flags.OPT_OUT: "0", "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})["flags"] == \
        "--xla_cpu_enable_fast_math=false"


def test_too_late_once_jax_has_started_says_so():
    program = ("import json, os, jax; jax.devices(); import asemble_jax; "
               "print(json.dumps({'flags': os.environ.get('XLA_FLAGS')}))")
    result = _fresh(program, {"JAX_PLATFORMS": "cpu"})
    assert result["flags"] is None
    assert "do not apply" in result["stderr"]


def test_a_child_started_opted_out_runs_without_them_and_keeps_the_users_own():
    # The benchmark's "jaxlib defaults" rows: the parent's XLA_FLAGS already hold the defaults its import added,
    # and a child given only the opt-out would inherit them (as every such row did until this test).
    users = "--xla_cpu_enable_fast_math=false"
    program = ("import json, os, subprocess, sys, asemble_jax; from asemble_jax import cpu_flags; "
               "child = subprocess.run([sys.executable, '-c', 'import json, os, asemble_jax; "
               "print(json.dumps(os.environ.get(\"XLA_FLAGS\")))'], "
               "env=dict(os.environ, **cpu_flags.opted_out_environment()), capture_output=True, text=True); "
               "print(json.dumps({'parent': os.environ['XLA_FLAGS'], 'child': json.loads(child.stdout)}))")
    result = _fresh(program, {"XLA_FLAGS": users})
    project = set(cpu_flags.project_flags(importlib.metadata.version("jaxlib")))
    assert project and project <= set(result["parent"].split())
    assert result["child"] == users
