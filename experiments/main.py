r"""Trains one paper setting, or with no --config runs the headline demo.

  python -m experiments.main                       # demo: CE vs NCE+RCE on noisy MNIST (~10 min, CPU)
  python -m experiments.main \
      --config experiments/configs/cifar10.py:loss=nce+rce,noise=sym,rate=0.8 --workdir runs/c10
  python -m experiments.main --config experiments/configs/mnist.py:loss=ce,noise=asym,rate=0.4 \
      --config.epochs=5 --workdir runs/m

A run resumes from the latest checkpoint in its --workdir. Multi-host: add --distributed (launch/).

Exit status: 0 finished (or stopped at --config.max_steps), 75 preempted (SIGTERM or SIGINT: a
checkpoint was committed, rerun the same command to resume; also during start-up, before any step),
1 an error (one line that says what to do; --verbose adds the traceback).
"""

# Stop requests from the first instant (imports and data take seconds): aplx.signals.
from aplx import signals  # isort: skip

signals.install()

import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import aplx  # noqa: E402
from aplx import cpu, distributed, rundir, train  # noqa: E402
from aplx.data import prepare  # noqa: E402
import experiments  # noqa: E402
from experiments import demo  # noqa: E402
from experiments.configs import common  # noqa: E402

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
_VERBOSE = flags.DEFINE_bool("verbose", False, "Print the traceback of an error, not only its message.")
_CPU_DEVICES = flags.DEFINE_integer(
  "cpu_devices",
  None,
  "Run on this many CPU devices per process (gloo collectives): multi-process jobs on CPU-only machines.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; settings go in --config or --config.<field>.")
  cpu.tune_allocator()  # Before JAX starts its backends and their threads.
  if _DISTRIBUTED.value or distributed.requested():
    distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
      cpu_devices=_CPU_DEVICES.value,
    )
  elif _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  _quiet_libraries(_VERBOSE.value)
  if _CONFIG.value is None:
    demo.run(_WORKDIR.value or "runs/demo")
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required with --config (checkpoints and metrics go there).")
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except train.Preempted as e:
    logging.warning("%s", e)
    sys.exit(rundir.PREEMPTED_EXIT_CODE)
  except USER_ERRORS as e:
    # Errors whose message names the problem and the fix: one line (other errors keep their traceback).
    if _VERBOSE.value:
      logging.error("%s", "".join(traceback.format_exception(e)))
    message = train.describe_os_error(e) if isinstance(e, OSError) else str(e)
    logging.error("%s%s", message, "" if _VERBOSE.value else "  (--verbose for the traceback)")
    sys.exit(1)


# Failures with a cause outside the code (config, data, disk, another job): one line, exit status 1.
USER_ERRORS = (
  train.ConfigError,
  train.CheckpointError,
  train.NonFiniteLossError,
  train.WorkdirError,
  prepare.PrepareError,
  OSError,  # FileNotFoundError (data), ConnectionError (a download), a full disk, a read-only workdir.
)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a clear message for a missing config file and a mistyped --config.<field>
  (ml_collections raises a bare AttributeError from deep inside its override parser)."""
  path = _config_spec(argv).partition(":")[0]
  if path and not os.path.isfile(path):
    sys.exit(
      f"FATAL Flags parsing error: --config {path}: no such file (the configs are in experiments/configs/)."
    )
  try:
    return flags.FLAGS(argv)
  except flags.IllegalFlagValueError as e:
    # A config file's get_config rejected its argument: ml_collections puts the whole traceback in the
    # message; its last line is the error itself.
    sys.exit(f"FATAL Flags parsing error: {str(e).strip().splitlines()[-1]}")
  except (AttributeError, KeyError) as e:
    config = _load_config_arg(argv)
    for arg in argv[1:]:
      if arg.startswith("--config.") and config is not None:
        missing = common.missing_field(config, arg[len("--config.") :].partition("=")[0])
        if missing:
          sys.exit(f"FATAL Flags parsing error: {arg}: {missing}")
    sys.exit(f"FATAL Flags parsing error: {e}")
  except flags.Error as e:  # Unknown flags and the like, as absl reports them.
    sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on flags.")


def _config_spec(argv: list[str]) -> str:
  """`path[:arg]` of --config, '' if none."""
  spec = next((a.partition("=")[2] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  return spec or ""


def _load_config_arg(argv: list[str]):
  """The ConfigDict that `--config path[:arg]` names, loaded as config_flags does; None if unclear."""
  spec = _config_spec(argv)
  if not spec:
    return None
  path, _, arg = spec.partition(":")
  module = common.load_config_file(path)
  return module.get_config(arg) if arg else module.get_config()


def _quiet_libraries(verbose: bool) -> None:
  """INFO from aplx and experiments/ (progress, metrics); only warnings and errors from libraries, and
  without their tracebacks unless `verbose` (orbax logs each failed write of a full disk with hundreds
  of lines; the trainer's own error says what failed and what to do)."""
  ours = tuple(os.path.dirname(os.path.abspath(m.__file__)) for m in (aplx, experiments))

  def keep(record) -> bool:
    if record.pathname.startswith(ours):
      return True
    if not verbose:
      record.exc_info, record.exc_text, record.stack_info = None, None, None
    return record.levelno >= logging.converter.STANDARD_WARNING

  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(keep)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
