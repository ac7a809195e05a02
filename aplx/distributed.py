"""Multi-process setup through JAX's own distributed runtime; nothing home-made in between.

`initialize()` must run before anything touches a JAX device. On a SLURM cluster, a Cloud TPU VM pod or
an Open MPI job, `jax.distributed.initialize()` finds the coordinator, process count and process id in
the environment; elsewhere (the local launcher, tests) they are passed explicitly.
"""

import os

import jax

from aplx import _deps

with _deps.extra("train", __name__):
  from absl import logging


def initialize(
  *,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  cpu_devices: int | None = None,
) -> None:
  """Joins this process to the job. Unset arguments are auto-detected from the cluster environment.

  Args:
    coordinator_address: 'host:port' of process 0 (default: $JAX_COORDINATOR_ADDRESS or detected).
    num_processes: processes in the job (default: detected, e.g. from SLURM_NTASKS).
    process_id: this process's index (default: detected, e.g. from SLURM_PROCID).
    cpu_devices: if set, this many CPU devices per process with gloo collectives, for running a
      multi-process job on CPUs (a laptop, CI). Must be set before JAX starts its backends.
  """
  if cpu_devices:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", cpu_devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
  logging.info(
    "process %d of %d: %d local devices of %d (%s)",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
  )


def requested() -> bool:
  """True when the environment asks for multi-process mode (APLX_DISTRIBUTED=1)."""
  return os.environ.get("APLX_DISTRIBUTED") == "1"
