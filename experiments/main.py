r"""Trains one paper setting, or with no --config runs the headline demo.

  python -m experiments.main                       # demo: CE vs NCE+RCE on noisy MNIST (~10 min, CPU)
  python -m experiments.main \
      --config experiments/configs/cifar10.py:loss=nce+rce,noise=sym,rate=0.8 --workdir runs/c10
  python -m experiments.main --config experiments/configs/mnist.py:loss=ce,noise=asym,rate=0.4 \
      --config.epochs=5 --workdir runs/m

A run resumes from the latest checkpoint in its --workdir. Multi-host: add --distributed (launch/).
"""

import os

from absl import app, flags, logging
import jax
from ml_collections import config_flags

import aplx
from aplx import distributed, train
import experiments
from experiments import demo

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Config file and argument, e.g. experiments/configs/mnist.py:loss=nce+rce,noise=sym,"
  "rate=0.8. Without it, the demo runs.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Directory for checkpoints and metrics (resumed if present). "
  "Required with --config; the demo defaults to runs/demo.",
)
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Join a multi-process job with jax.distributed.initialize() (launch/). Also on "
  "when APLX_DISTRIBUTED=1. The flags below are auto-detected on SLURM and Cloud TPU when unset.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
_CPU_DEVICES = flags.DEFINE_integer(
  "cpu_devices",
  None,
  "Run on this many CPU devices per process (gloo collectives): multi-process jobs on CPU-only machines.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; settings go in --config or --config.<field>.")
  if _DISTRIBUTED.value or distributed.requested():
    distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
      cpu_devices=_CPU_DEVICES.value,
    )
  elif _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  _quiet_libraries()
  if _CONFIG.value is None:
    demo.run(_WORKDIR.value or "runs/demo")
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required with --config (checkpoints and metrics go there).")
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def _quiet_libraries() -> None:
  """INFO from aplx and experiments/ (progress, metrics); only warnings and errors from libraries."""
  ours = tuple(os.path.dirname(os.path.abspath(m.__file__)) for m in (aplx, experiments))
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(
    lambda r: r.levelno >= logging.converter.STANDARD_WARNING or r.pathname.startswith(ours)
  )


if __name__ == "__main__":
  app.run(main)
