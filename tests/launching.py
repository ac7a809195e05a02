"""Starting `launch/local.sh` jobs from tests (imported as a plain module: pytest puts tests/ on sys.path),
and reading their checkpoints without a model.

The workers get a clean environment: the 8-device XLA_FLAGS of conftest.py must not reach them.
"""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240  # A hung collective fails the test instead of blocking CI.


def start(num_processes, flags, log_path, cache_dir, env=None):
  """`launch/local.sh NUM_PROCESSES --cpu_devices=4 FLAGS...` in its own process group, output to
  `log_path`; compiled programs are shared through `cache_dir`."""
  environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  environ.update(
    JAX_PLATFORMS="cpu",
    PYTHON=sys.executable,
    JAX_COMPILATION_CACHE_DIR=str(cache_dir),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    **(env or {}),
  )
  log = open(log_path, "w")  # pylint: disable=consider-using-with -- closed by wait or kill.
  proc = subprocess.Popen(
    ["bash", os.path.join(REPO, "launch", "local.sh"), str(num_processes), "--cpu_devices=4", *flags],
    cwd=REPO,
    env=environ,
    stdout=log,
    stderr=subprocess.STDOUT,
    start_new_session=True,
  )  # Own process group: a timeout kills every worker.
  proc.log = log
  return proc


def kill(proc):
  """Kills what is left of a job (fixture teardown)."""
  if proc.poll() is None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  proc.log.close()


def wait(proc):
  """Waits for a job; fails with the end of its log if it hangs or exits non-zero."""
  timed_out = False
  try:
    proc.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    timed_out = True
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  finally:
    proc.log.close()
  with open(proc.log.name) as f:
    tail = f.read()[-4000:]
  assert not timed_out, f"workers still running after {TIMEOUT_S} s (hung collective?), killed:\n{tail}"
  assert proc.returncode == 0, f"workers exited with status {proc.returncode}:\n{tail}"


def checkpoint(workdir, step):
  """The (state, sums) pytree saved at `step`, as NumPy arrays: no model or mesh needed to read it."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  state, _ = checkpointer.restore(path, args=ocp.args.PyTreeRestore(item=tree, restore_args=restore_args))
  return state


def without_timing(history):
  return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in history]
