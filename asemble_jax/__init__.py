# The project's XLA CPU flags must be in XLA_FLAGS before JAX creates a backend: importing the package is the
# earliest point every entry point, test and worker process shares (asemble_jax/cpu_flags.py says which and why).
from asemble_jax import cpu_flags as _cpu_flags

_cpu_flags.apply()
