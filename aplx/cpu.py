"""Two XLA:CPU settings that halve the train step's time on a CPU (docs/training.md, "Speed on CPU").

Both change how the step runs, not what it computes beyond float32 summation order, and both are
no-ops off the CPU backend (GPU / TPU) or where they do not apply.

* `compiler_options()`: the jit options of the trainer's steps. jaxlib 0.10's XLA:CPU hands
  convolutions to YNNPACK, which runs them on one thread; XLA's Eigen convolutions use every core
  (and compute the filter gradient in about half the CPU time). Dots and reductions stay in YNNPACK.
* `tune_allocator()`: glibc malloc settings for the process. XLA:CPU allocates each step's
  temporaries (87 MB for the MNIST CNN at batch 128) as one block from its worker thread; glibc
  serves blocks that large from fresh `mmap`s, so every step page-faults ~21,000 times (30-40 ms of
  kernel time per step here). One malloc arena and no `mmap` keep the block in the heap and reuse it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

import jax

# YNNPACK for dots and reductions only: jaxlib 0.10.2's default also routes convolutions there
# ("LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION").
_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": _YNN_FUSIONS}

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


@functools.cache
def compiler_options() -> dict[str, str] | None:
  """`jax.jit(..., compiler_options=...)` for the trainer's steps: `CPU_COMPILER_OPTIONS` on the CPU
  backend when this jaxlib knows them, else None (XLA's defaults)."""
  if jax.default_backend() != "cpu":
    return None
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(1.0).compile()
  except Exception:  # noqa: BLE001 -- "No such compile option" on a jaxlib that renamed it.
    return None
  return dict(CPU_COMPILER_OPTIONS)


def tune_allocator() -> bool:
  """Sets glibc malloc to one arena, no `mmap` and a 2 GB trim threshold. Returns True if it did.

  Call it first thing in the process, before JAX starts its backends (threads that allocated before
  keep their own arenas). Skipped (False) where libc is not glibc, and when the environment already
  sets any of MALLOC_ARENA_MAX, MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_ (the user's choice wins).
  Freed memory then stays with the process instead of returning to the OS; a training process
  reuses it every step.
  """
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return False
  if any(k in os.environ for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")):
    return False
  libc = ctypes.CDLL(None)
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
  return all(libc.mallopt(param, value) == 1 for param, value in settings)
