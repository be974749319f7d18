# The project's XLA CPU flags must be in XLA_FLAGS before JAX creates a backend: importing the package is the
# earliest point every entry point, test and worker process shares (asemble_jax/cpu_flags.py says which and why).
from asemble_jax import cpu_flags as _cpu_flags

_cpu_flags.apply()

# glibc's malloc settings bind only threads that have not allocated yet, so they too go before JAX starts its thread
# pools (asemble_jax/host_memory.py says why).
from asemble_jax import host_memory as _host_memory

_host_memory.apply()
