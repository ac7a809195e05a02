r"""Runs a grid of paper settings, one `experiments.main` process and workdir per grid point.

  python -m experiments.sweep --config_file experiments/configs/mnist.py \
      --grid 'loss=ce,nce+rce;noise=sym;rate=0.2,0.8;seed=0,1,2' --fixed 'subset=10000,epochs=20' \
      --root runs/mnist --parallel 2
  python -m experiments.sweep ... --grid 'loss=nce+rce;noise=sym;rate=0.8;seed=0;loss.params.beta=1,10'
  python -m experiments.sweep ... --print_commands      # one shell command per run, for any scheduler

Axes (`--grid`, ';' between axes) and shared values (`--fixed`) take the config argument's keys (loss,
noise, rate, seed, noise_seed, subset, epochs, fidelity); every other key is a config path
(`loss.params.beta`, `optim.lr`, `batch_size`), passed to `experiments.main` as
`--config.<path>=<value>` and parsed with that field's type. Every path is checked against each grid
point's config before anything runs.

Layout (`workdir_for`; `parse_workdir` reads a path back): each grid point trains in

  <root>/<noise><rate>/<loss>/seed<seed>                                   e.g. runs/m/sym0.8/ce/seed0
  <root>/<noise><rate>/<loss>/<path1>=<v1>,<path2>=<v2>/seed<seed>         with config-path axes
      e.g. runs/m/sym0.8/nce+rce/loss.params.beta=10,optim.lr=0.1/seed0
  .../seed<seed>-noise<noise_seed>     with the noise_seed key (initialisation seeds over one noise
      draw: --grid 'loss=nce+rce;noise=asym;rate=0.4;seed=0,1,2;noise_seed=0')

with the grid's config-path axes in grid order and their values as written in --grid (config paths
from --fixed are not in the name; they are in config.json, like every field), logging to
`<workdir>.log`. Finished runs are skipped; interrupted ones are rerun, and `experiments.main` resumes
them from their latest checkpoint. A workdir whose config.json no longer matches the config the grid
point gives now (an edited config file, other --fixed values) is reported as a conflict and not touched:
resuming it would mix two settings. Exits non-zero if any run failed.

Stopping: SIGTERM or SIGINT (Ctrl-C) to the sweep, or to its process group, stops it cleanly: no new
run starts, each running `experiments.main` gets SIGTERM (it commits a checkpoint and exits 75), the
sweep waits for them and exits 75 (`aplx.rundir.PREEMPTED_EXIT_CODE`); rerun the same command to resume.

`python -m experiments.report --root <root>` turns the workdirs into the paper's tables and figures.
"""

from collections.abc import Callable, Mapping, Sequence
import concurrent.futures
import fcntl
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from absl import app, flags

from aplx import rundir
from experiments.configs import common

FINISHED, PARTIAL, MISSING, CONFLICT = "finished", "partial", "missing", "conflict"

# Set by a stop signal (`forward_stop_signals`): no run starts after it.
STOP = threading.Event()
_CHILDREN: set[subprocess.Popen] = set()  # The runs' running processes.


def _stop_children(signum, frame) -> None:
  del signum, frame
  STOP.set()
  for proc in list(_CHILDREN):
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)  # SIGTERM even for a SIGINT: a second SIGINT would interrupt it.


def forward_stop_signals() -> None:
  """SIGTERM and SIGINT to this process stop the sweep: see the module's docstring."""
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, _stop_children)


class Run(NamedTuple):
  """One grid point: its config argument, its config-path overrides and where it trains."""

  arg: str  # 'loss=ce,noise=sym,rate=0.8,seed=0,subset=10000,epochs=20'
  workdir: str  # <root>/sym0.8/ce/seed0
  overrides: tuple[tuple[str, str], ...] = ()  # (('loss.params.beta', '10'),): --config.<path>=<value>

  @property
  def log(self) -> str:
    return self.workdir + ".log"


class WorkdirPath(NamedTuple):
  """What a workdir's path says (`parse_workdir`)."""

  setting: tuple[str, float]  # (noise, rate) as in the name: ('sym', 0.8); noise 'none' for clean labels
  loss: str
  overrides: dict[str, str]  # {config path: value as written in the name}; {} without config-path axes
  seed: int
  noise_seed: int | None = None  # None: not in the name (the noise is drawn from `seed`)


# ---------------------------------------------------------------------------------------------------
# The grid and the layout.
# ---------------------------------------------------------------------------------------------------


_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_config_path(key: str) -> bool:
  """Keys of the config argument (loss, noise, rate, ...) are not config paths; every other key is."""
  return key not in common.ARG_DEFAULTS


def _check_key(key: str, where: str) -> None:
  if is_config_path(key) and not _PATH.fullmatch(key):
    raise ValueError(
      f"Bad {where}: {key!r} is neither a config-argument key ({', '.join(sorted(common.ARG_DEFAULTS))}) "
      "nor a config path (field names joined by dots, such as loss.params.beta or optim.lr)."
    )


def _did_you_mean(config, paths) -> str:
  """' Did you mean loss.params.beta?' for a missing path ('beta') whose last name ends a path that
  exists; a general hint for a missing bare name."""
  have = sorted(rundir.flatten(config.to_dict()))
  missing = [path for path in paths if path not in have]
  tips = [p for path in missing for p in have if p.endswith("." + path.split(".")[-1])]
  if tips:
    return f" Did you mean {' or '.join(tips)}?"
  if any("." not in path for path in missing):
    return " A field inside a section is named with its section: loss.params.<name>, optim.<name>, ..."
  return ""


def parse_grid(grid: str) -> dict[str, list[str]]:
  """'loss=ce,gce;loss.params.beta=1,10' -> {'loss': ['ce', 'gce'], 'loss.params.beta': ['1', '10']}."""
  axes = {}
  for item in filter(None, (s.strip() for s in grid.split(";"))):
    key, sep, values = item.partition("=")
    key, values = key.strip(), [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not values:
      raise ValueError(f"Bad grid axis {item!r} in {grid!r}: expected 'key=v1,v2', axes separated by ';'.")
    _check_key(key, f"grid axis {item!r}")
    if key in axes:
      raise ValueError(f"Grid axis {key!r} given twice in {grid!r}.")
    if is_config_path(key):
      bad = [v for v in values if "/" in v or "=" in v]
      if bad:
        raise ValueError(f"Grid axis {item!r}: values {bad} would break the workdir name ('/' or '=').")
    axes[key] = values
  return axes


def parse_fixed(fixed: str) -> dict[str, str]:
  """'subset=10000,optim.lr=0.05' -> {'subset': '10000', 'optim.lr': '0.05'}; argument keys checked by
  the config parser, config paths by `expand` against each grid point's config."""
  out = {}
  for item in filter(None, (s.strip() for s in fixed.split(","))):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:
      raise ValueError(
        f"Bad --fixed item {item!r} in {fixed!r}: expected 'key=value', items separated by ','."
      )
    _check_key(key, f"--fixed item {item!r}")
    out[key] = value.strip()
  # Same errors as the config files.
  common.parse_arg(",".join(f"{k}={v}" for k, v in out.items() if not is_config_path(k)))
  return out


def format_rate(rate) -> str:
  """0.8 -> '0.8', 0.0 -> '0': the rate as it appears in a workdir name."""
  return format(float(rate), "g")


def workdir_for(root: str, args: Mapping, overrides: Mapping[str, str] | None = None) -> str:
  """`<root>/<noise><rate>/<loss>/seed<seed>`, or with config-path overrides (the grid's, in order)
  `<root>/<noise><rate>/<loss>/<path1>=<v1>,<path2>=<v2>/seed<seed>`; missing argument keys take the
  config files' defaults."""
  a = dict(common.ARG_DEFAULTS, **args)
  parts = [f"{a['noise']}{format_rate(a['rate'])}", str(a["loss"])]
  if overrides:
    parts.append(",".join(f"{k}={v}" for k, v in overrides.items()))
  noise = "" if a["noise_seed"] is None else f"-noise{int(a['noise_seed'])}"
  return os.path.join(root, *parts, f"seed{int(a['seed'])}{noise}")


def _split_setting(name: str) -> tuple[str, float] | None:
  """'sym0.8' -> ('sym', 0.8): the longest tail that is a rate as `format_rate` writes it."""
  for i in range(1, len(name)):
    tail = name[i:]
    if re.fullmatch(r"[0-9][0-9.e+-]*", tail):
      try:
        rate = float(tail)
      except ValueError:
        continue
      if 0.0 <= rate <= 1.0 and format_rate(rate) == tail:
        return name[:i], rate
  return None


def parse_workdir(root: str, workdir: str) -> WorkdirPath | None:
  """(setting, loss, overrides, seed) from a path of `workdir_for`'s layout under `root`, or None if the
  path is not that layout. Override values are strings, as written in the name (config.json has the
  typed values)."""
  parts = os.path.relpath(workdir, root).split(os.sep)
  seeds = re.fullmatch(r"seed([0-9]+)(?:-noise([0-9]+))?", parts[-1])
  if len(parts) not in (3, 4) or not seeds:
    return None
  setting = _split_setting(parts[0])
  overrides = {}
  for item in parts[2].split(",") if len(parts) == 4 else ():
    key, sep, value = item.partition("=")
    if not sep or not is_config_path(key) or not _PATH.fullmatch(key) or not value:
      return None
    overrides[key] = value
  if setting is None or not parts[1]:
    return None
  noise_seed = None if seeds[2] is None else int(seeds[2])
  return WorkdirPath(setting, parts[1], overrides, int(seeds[1]), noise_seed)


def expand(grid: str, fixed: str, root: str, module=None) -> list[Run]:
  """The runs of a grid, in the order of its axes (the last axis varies fastest).

  With `module` (the loaded config file) every grid point's config is built and its config paths and
  values checked now, before anything is launched.
  """
  axes, shared = parse_grid(grid), parse_fixed(fixed)
  clash = set(axes) & set(shared)
  if clash:
    raise ValueError(f"{sorted(clash)} in both --grid and --fixed.")
  fixed_overrides = tuple((k, v) for k, v in shared.items() if is_config_path(k))
  runs, seen = [], set()
  for values in itertools.product(*axes.values()):
    point = dict(zip(axes, values))
    args = {k: v for k, v in {**point, **shared}.items() if not is_config_path(k)}
    grid_overrides = {k: v for k, v in point.items() if is_config_path(k)}
    arg = ",".join(f"{k}={v}" for k, v in args.items())
    common.parse_arg(arg)  # Validate before launching anything.
    run = Run(arg, workdir_for(root, args, grid_overrides), (*grid_overrides.items(), *fixed_overrides))
    if module is not None:
      try:
        expected_config(module, run.arg, run.overrides)
      except ValueError as e:
        where = " ".join(filter(None, [run.arg, *(f"--config.{k}={v}" for k, v in run.overrides)]))
        hint = _did_you_mean(module.get_config(run.arg), dict(run.overrides))
        raise ValueError(f"Grid point {where!r}: {e}{hint}") from None
    if run.workdir in seen:
      raise ValueError(
        f"Two grid points share the workdir {run.workdir}: the layout <noise><rate>/<loss>[/<config "
        "paths>]/seed<seed> has no place for other varied argument keys (subset, epochs, fidelity); "
        "use a separate --root per value."
      )
    seen.add(run.workdir)
    runs.append(run)
  return runs


# ---------------------------------------------------------------------------------------------------
# Status of a workdir.
# ---------------------------------------------------------------------------------------------------


def run_status(workdir: str, expected: dict | None = None) -> tuple[str, str]:
  """(status, detail) of a workdir: finished (its epochs done, or stopped at its config's max_steps),
  partial (resumable), missing, or conflict.

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
  status = rundir.read_status(workdir)
  last = status.get("status")
  detail = f"epoch {done}/{epochs}" + (f", {last}" if last in (rundir.PREEMPTED, rundir.FAILED) else "")
  stop = saved.get("max_steps")
  if stop and status.get("step", 0) >= stop and last not in (rundir.PREEMPTED, rundir.FAILED):
    return FINISHED, f"{detail}, stopped at max_steps={stop}"  # A screen's run: nothing left to run.
  return (FINISHED if done >= epochs else PARTIAL), detail


def expected_config(module, arg: str, overrides: Sequence[tuple[str, str]] = ()) -> dict:
  """What `experiments.main` writes to config.json for this argument and these --config.<path> flags
  (ValueError for a path the config does not have, or a value of the wrong type)."""
  return json.loads(common.override(module.get_config(arg), dict(overrides)).to_json_best_effort())


# ---------------------------------------------------------------------------------------------------
# Launching.
# ---------------------------------------------------------------------------------------------------


def command(run: Run, config_file: str, python: str = "python") -> list[str]:
  flags_ = [f"--config.{path}={value}" for path, value in run.overrides]
  return [
    python,
    "-m",
    "experiments.main",
    "--config",
    f"{config_file}:{run.arg}",
    *flags_,
    "--workdir",
    run.workdir,
  ]


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
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
      _CHILDREN.add(proc)
      try:
        if STOP.is_set():  # Signalled while starting it.
          proc.send_signal(signal.SIGTERM)
        return proc.wait()
      finally:
        _CHILDREN.discard(proc)

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
    if stopping.is_set() or STOP.is_set():
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
  if STOP.is_set() and not result["interrupted"]:
    result["interrupted"].append((None, "stopped by a signal before its runs"))

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
  module = common.load_config_file(_CONFIG_FILE.value)
  try:
    runs = expand(_GRID.value, _FIXED.value, _ROOT.value, module)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  expected = lambda run: expected_config(module, run.arg, run.overrides)  # noqa: E731
  if _PRINT_COMMANDS.value:
    return (
      1
      if print_commands(runs, _CONFIG_FILE.value, python=_PYTHON.value or "python", expected=expected)
      else 0
    )
  forward_stop_signals()
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
    "Axes of the grid: 'key=v1,v2;key=v1,...' over the config argument keys (loss, noise, rate, "
    "seed, ...) or config paths (loss.params.beta, optim.lr, ...); the runs are their product.",
  )
  _FIXED = flags.DEFINE_string(
    "fixed", "", "Values shared by every run, e.g. 'subset=10000,epochs=20,optim.lr=0.05'."
  )
  _ROOT = flags.DEFINE_string(
    "root", None, "Root of the workdirs: <root>/<noise><rate>/<loss>[/<path>=<value>,...]/seed<seed>."
  )
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
