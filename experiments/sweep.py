r"""Runs a grid of paper settings, one `experiments.main` process and workdir per grid point.

  python -m experiments.sweep --config_file experiments/configs/mnist.py \
      --grid 'loss=ce,nce+rce;noise=sym;rate=0.2,0.8;seed=0,1,2' --fixed 'subset=10000,epochs=20' \
      --root runs/mnist --parallel 2
  python -m experiments.sweep ... --print_commands      # one shell command per run, for any scheduler

Each grid point trains in `<root>/<noise><rate>/<loss>/seed<seed>` (e.g. runs/mnist/sym0.8/ce/seed0),
logging to `<workdir>.log`. Finished runs are skipped; interrupted ones are rerun, and `experiments.main`
resumes them from their latest checkpoint. A workdir whose config.json no longer matches the config the
grid point gives now (an edited config file, other --fixed values) is reported as a conflict and not
touched: resuming it would mix two settings. Exits non-zero if any run failed.

`python -m experiments.report --root <root>` turns the workdirs into the paper's tables and figures.
"""

from collections.abc import Callable, Sequence
import concurrent.futures
import fcntl
import itertools
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from absl import app, flags

from aplx import rundir
from experiments.configs import common

FINISHED, PARTIAL, MISSING, CONFLICT = "finished", "partial", "missing", "conflict"


class Run(NamedTuple):
  """One grid point: its config argument and where it trains."""

  arg: str  # 'loss=ce,noise=sym,rate=0.8,seed=0,subset=10000,epochs=20'
  workdir: str  # <root>/sym0.8/ce/seed0

  @property
  def log(self) -> str:
    return self.workdir + ".log"


# ---------------------------------------------------------------------------------------------------
# The grid.
# ---------------------------------------------------------------------------------------------------


def parse_grid(grid: str) -> dict[str, list[str]]:
  """'loss=ce,nce+rce;rate=0.2,0.8' -> {'loss': ['ce', 'nce+rce'], 'rate': ['0.2', '0.8']}."""
  axes = {}
  for item in filter(None, (s.strip() for s in grid.split(";"))):
    key, sep, values = item.partition("=")
    key = key.strip()
    if not sep or key not in common.ARG_DEFAULTS or not values.strip():
      raise ValueError(
        f"Bad grid axis {item!r} in {grid!r}: expected 'key=v1,v2' with keys "
        f"{sorted(common.ARG_DEFAULTS)}, axes separated by ';'."
      )
    if key in axes:
      raise ValueError(f"Grid axis {key!r} given twice in {grid!r}.")
    axes[key] = [v.strip() for v in values.split(",") if v.strip()]
  return axes


def parse_fixed(fixed: str) -> dict[str, str]:
  """'subset=10000,epochs=20' -> {'subset': '10000', 'epochs': '20'}, checked by the config parser."""
  out = {}
  for item in filter(None, (s.strip() for s in fixed.split(","))):
    key, _, value = item.partition("=")
    out[key.strip()] = value.strip()
  common.parse_arg(",".join(f"{k}={v}" for k, v in out.items()))  # Same errors as the config files.
  return out


def format_rate(rate) -> str:
  """0.8 -> '0.8', 0.0 -> '0': the rate as it appears in a workdir name."""
  return format(float(rate), "g")


def workdir_for(root: str, args: dict) -> str:
  """`<root>/<noise><rate>/<loss>/seed<seed>`; missing keys take the config files' defaults."""
  a = dict(common.ARG_DEFAULTS, **args)
  return os.path.join(root, f"{a['noise']}{format_rate(a['rate'])}", str(a["loss"]), f"seed{int(a['seed'])}")


def expand(grid: str, fixed: str, root: str) -> list[Run]:
  """The runs of a grid, in the order of its axes (the last axis varies fastest)."""
  axes, shared = parse_grid(grid), parse_fixed(fixed)
  clash = set(axes) & set(shared)
  if clash:
    raise ValueError(f"{sorted(clash)} in both --grid and --fixed.")
  runs, seen = [], set()
  for values in itertools.product(*axes.values()):
    args = dict(zip(axes, values), **shared)
    common.parse_arg(",".join(f"{k}={v}" for k, v in args.items()))  # Validate before launching anything.
    run = Run(",".join(f"{k}={v}" for k, v in args.items()), workdir_for(root, args))
    if run.workdir in seen:
      raise ValueError(
        f"Two grid points share the workdir {run.workdir}: the layout "
        "<noise><rate>/<loss>/seed<seed> needs a separate --root for other varied keys."
      )
    seen.add(run.workdir)
    runs.append(run)
  return runs


# ---------------------------------------------------------------------------------------------------
# Status of a workdir.
# ---------------------------------------------------------------------------------------------------


def run_status(workdir: str, expected: dict | None = None) -> tuple[str, str]:
  """(status, detail) of a workdir: finished, partial (resumable), missing, or conflict.

  `expected` is the config (as a JSON dict) that the grid point gives now; a workdir whose config.json
  differs from it in a field that changes the result (`aplx.rundir.config_diff`, the trainer's own
  rule) is a conflict. Without it a run is finished when its last metrics line reaches the epochs of
  its own config.json.
  """
  saved = rundir.read_config(workdir)
  if saved is None:
    return (PARTIAL, "started, no config.json yet") if os.path.isdir(workdir) else (MISSING, "not started")
  if expected is not None:
    diff = rundir.config_diff(saved, expected)
    if diff:
      return CONFLICT, "config.json differs from the config now: " + "; ".join(diff)
  metrics = rundir.read_metrics(workdir)
  done, epochs = (metrics[-1]["epoch"] if metrics else 0), saved["epochs"]
  last = rundir.read_status(workdir).get("status")
  detail = f"epoch {done}/{epochs}" + (f", {last}" if last in (rundir.PREEMPTED, rundir.FAILED) else "")
  return (FINISHED if done >= epochs else PARTIAL), detail


def expected_config(module, arg: str) -> dict:
  """What `experiments.main` writes to config.json for this argument."""
  return json.loads(module.get_config(arg).to_json_best_effort())


# ---------------------------------------------------------------------------------------------------
# Launching.
# ---------------------------------------------------------------------------------------------------


def command(run: Run, config_file: str, python: str = "python") -> list[str]:
  return [python, "-m", "experiments.main", "--config", f"{config_file}:{run.arg}", "--workdir", run.workdir]


def shell_command(run: Run, config_file: str, python: str = "python") -> str:
  """One line for a scheduler: train (or resume) the run, logging beside its workdir."""
  parent = os.path.dirname(run.workdir) or "."
  return (
    f"mkdir -p {shlex.quote(parent)} && {shlex.join(command(run, config_file, python))} "
    f">> {shlex.quote(run.log)} 2>&1"
  )


def subprocess_runner(config_file: str, python: str | None = None, parallel: int = 1) -> Callable[[Run], int]:
  """Runs `experiments.main` for a run, appending its output to the run's log; returns the exit code.

  The log is locked while the run trains, so a second sweep over the same root skips it (exit code -1).
  With parallel > 1 the runs share the accelerators, so JAX's GPU memory preallocation (75% per
  process) is turned off unless the environment already sets XLA_PYTHON_CLIENT_* itself.
  """
  env = dict(os.environ)
  if parallel > 1 and not any(k.startswith("XLA_PYTHON_CLIENT_") for k in env):
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"

  def launch(run: Run) -> int:
    os.makedirs(os.path.dirname(run.log) or ".", exist_ok=True)
    with open(run.log, "a") as log:
      try:
        fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        return -1
      cmd = command(run, config_file, python or sys.executable)
      log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
      log.flush()
      return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

  return launch


def prepare_data(config) -> None:
  """Prepares the sweep's dataset once, so that parallel runs do not all race to build it."""
  from aplx.data import prepare  # pylint: disable=g-import-not-at-top

  try:
    prepare.ensure_prepared(config.dataset, config.get("data_dir"))
  except Exception as e:  # pylint: disable=broad-except
    print(f"Could not prepare {config.dataset!r} before the runs ({e}); each run will try.", flush=True)


def run_sweep(
  runs: Sequence[Run],
  launch: Callable[[Run], int],
  *,
  parallel: int = 1,
  expected: Callable[[Run], dict | None] = lambda run: None,
  out=sys.stdout,
) -> dict[str, list[tuple[Run, str]]]:
  """Launches every unfinished run (up to `parallel` at once) and reports progress to `out`.

  Returns {'finished': [...], 'failed': [...], 'skipped': [...], 'busy': [...], 'interrupted': [...]}
  of (run, detail); a run is failed when its process exits non-zero, leaves it unfinished, or its workdir
  is a conflict; busy when another sweep is training it (its log is locked): not a failure, rerun later;
  interrupted when it was preempted (exit `aplx.rundir.PREEMPTED_EXIT_CODE`, checkpoint committed):
  resumable, and no further run is started (the job is being stopped).
  """

  def say(msg):
    print(msg, file=out, flush=True)

  result = {"finished": [], "failed": [], "skipped": [], "busy": [], "interrupted": []}
  stopping = threading.Event()
  todo = []
  for run in runs:
    status, detail = run_status(run.workdir, expected(run))
    if status == FINISHED:
      result["finished"].append((run, detail))
      result["skipped"].append((run, detail))
    elif status == CONFLICT:
      result["failed"].append((run, detail))
    else:
      todo.append((run, status, detail))
  say(
    f"{len(runs)} runs: {len(result['skipped'])} finished already, {len(result['failed'])} conflicts, "
    f"{len(todo)} to run ({sum(s == PARTIAL for _, s, _ in todo)} resumed), {parallel} at a time."
  )
  for run, detail in result["failed"]:
    say(f"  CONFLICT {run.workdir}: {detail}")

  lock, total = threading.Lock(), len(runs)

  def one(item):
    run, status, detail = item
    if stopping.is_set():
      return
    say(f"  start    {run.workdir} ({'resume: ' + detail if status == PARTIAL else 'new'}) log {run.log}")
    start = time.time()
    rc = launch(run)
    status, detail = run_status(run.workdir, expected(run))
    ok = rc == 0 and status == FINISHED
    if ok:
      kind = "finished"
    elif rc == -1:
      kind, detail = "busy", "running elsewhere (its log is locked)"
    elif rc == rundir.PREEMPTED_EXIT_CODE:
      kind, detail = "interrupted", f"preempted, resumable ({detail})"
      stopping.set()
    else:
      kind, detail = "failed", f"exit code {rc}, {status} ({detail})"
    with lock:
      result[kind].append((run, detail))
      label = {"finished": "finished", "busy": "busy    ", "failed": "FAILED  ", "interrupted": "stopped "}[
        kind
      ]
      say(
        f"[{len(result['finished'])}/{total} done, {len(result['failed'])} failed] "
        f"{label} {run.workdir} in {time.time() - start:.0f}s" + ("" if ok else f": {detail}; log {run.log}")
      )

  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    list(pool.map(one, todo))

  say(
    f"Done: {len(result['finished'])}/{total} finished, {len(result['failed'])} failed"
    + (f", {len(result['busy'])} being trained by another sweep" if result["busy"] else "")
    + (", interrupted by preemption: rerun the same command to resume." if result["interrupted"] else ".")
  )
  for run, detail in result["failed"]:
    say(f"  FAILED {run.workdir}: {detail}; log {run.log}")
  return result


def print_commands(
  runs: Sequence[Run],
  config_file: str,
  *,
  python: str = "python",
  expected: Callable[[Run], dict | None] = lambda run: None,
  out=sys.stdout,
) -> int:
  """Prints a command for each run that is not finished; returns how many conflicts were found."""
  conflicts = 0
  for run in runs:
    status, detail = run_status(run.workdir, expected(run))
    if status == CONFLICT:
      conflicts += 1
      print(f"# CONFLICT {run.workdir}: {detail}", file=sys.stderr)
    elif status != FINISHED:
      print(shell_command(run, config_file, python), file=out)
  return conflicts


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
  if not _CONFIG_FILE.value or not _ROOT.value:
    raise app.UsageError("--config_file and --root are required.")
  runs = expand(_GRID.value, _FIXED.value, _ROOT.value)
  module = common.load_config_file(_CONFIG_FILE.value)
  expected = lambda run: expected_config(module, run.arg)  # noqa: E731
  if _PRINT_COMMANDS.value:
    return (
      1
      if print_commands(runs, _CONFIG_FILE.value, python=_PYTHON.value or "python", expected=expected)
      else 0
    )
  if _PARALLEL.value > 1 and runs:
    prepare_data(module.get_config(runs[0].arg))
  result = run_sweep(
    runs,
    subprocess_runner(_CONFIG_FILE.value, _PYTHON.value, _PARALLEL.value),
    parallel=_PARALLEL.value,
    expected=expected,
  )
  if result["failed"]:
    return 1
  return rundir.PREEMPTED_EXIT_CODE if result["interrupted"] else 0


if __name__ == "__main__":
  # Flags only for the command line: experiments.report and the tests import this module.
  _CONFIG_FILE = flags.DEFINE_string("config_file", None, "Config file, e.g. experiments/configs/mnist.py.")
  _GRID = flags.DEFINE_string(
    "grid",
    "",
    "Axes of the grid: 'key=v1,v2;key=v1,...' over the config argument "
    "keys (loss, noise, rate, seed, ...); the runs are their product.",
  )
  _FIXED = flags.DEFINE_string(
    "fixed", "", "Config argument shared by every run, e.g. 'subset=10000,epochs=20'."
  )
  _ROOT = flags.DEFINE_string("root", None, "Root of the workdirs: <root>/<noise><rate>/<loss>/seed<seed>.")
  _PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs trained at once on this machine.")
  _PRINT_COMMANDS = flags.DEFINE_bool(
    "print_commands",
    False,
    "Print one shell command per unfinished run (to hand to a cluster scheduler) and run nothing.",
  )
  _PYTHON = flags.DEFINE_string(
    "python",
    None,
    "Interpreter in the commands (default: this one when running, 'python' with --print_commands).",
  )
  app.run(main)
