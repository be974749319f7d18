"""asemble_jax/host_memory.py: glibc's malloc keeps XLA's large per-execution buffers instead of mapping and
faulting them in afresh on every call (the page-fault churn of issue 15)."""
import os
import platform
import subprocess
import sys

import pytest

from asemble_jax import host_memory

# A program whose matmul runs on XLA's worker threads with buffers larger than glibc's 64 MiB thread heaps: the
# case that re-faulted every buffer on every call. Prints minor page faults per call after two warm-up calls.
_CHILD = """
import resource
import asemble_jax  # noqa: F401  (applies the settings on import, as every entry point does)
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.sin(x) @ jnp.cos(x)))
x = jnp.ones((3000, 3000), jnp.float32)
f(x).block_until_ready(); f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""

# One 3000 x 3000 float32 array is 2,197 pages of 4 KiB.
_PAGES_PER_ARRAY = 3000 * 3000 * 4 // 4096


def _faults_per_call(**env) -> float:
    environment = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    result = subprocess.run([sys.executable, "-c", _CHILD], env={**environment, **env}, capture_output=True,
                            text=True, check=True)
    return float(result.stdout.split()[-1])


needs_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")


@needs_glibc
@pytest.mark.slow
def test_repeated_calls_reuse_memory_instead_of_faulting_it_in():
    churn = _faults_per_call(**{host_memory.OPT_OUT: "0"})
    settled = _faults_per_call()
    # Without the settings every call faults in many arrays' worth of fresh pages (~840,000 here).
    assert churn > 20 * _PAGES_PER_ARRAY
    assert settled < churn / 20


@needs_glibc
def test_applied_unless_opted_out_or_tuned_by_the_user(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for name in [n for n in os.environ if n.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    assert host_memory.apply()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not host_memory.apply()
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert not host_memory.apply()
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv(host_memory.OPT_OUT, "0")
    assert not host_memory.apply()
