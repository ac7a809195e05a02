"""Fault injection: each probe of a hostile but realistic user, replayed, and nothing lost.

Records (metrics.jsonl) survive damage and a kill between checkpoint and record; damaged checkpoints
are detected and set aside; a workdir has one writer; signals from process start, in evaluation and to
the sweep stop cleanly; user-caused failures are one line; bad config values are refused up front.
The runs are tiny (512 MNIST images, 4 steps an epoch).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

from aplx import rundir, signals, train
from experiments.configs import mnist as mnist_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARG = "loss=nce+rce,noise=sym,rate=0.4,subset=512"


def _config(data_dir, **overrides):
  config = mnist_config.get_config(f"{ARG},epochs=3")
  config.data_dir = data_dir
  config.log_every_steps = 2
  for k, v in overrides.items():
    config[k] = v
  return config


def _main_args(data_dir, workdir, epochs=3):
  return [
    "--config",
    f"experiments/configs/mnist.py:{ARG},epochs={epochs}",
    f"--config.data_dir={data_dir}",
    "--config.log_every_steps=2",
    f"--workdir={workdir}",
  ]


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # One CPU device, as a user's run.
  return env


def _main(*args, timeout=600, **kwargs):
  cmd = [sys.executable, "-m", "experiments.main", *args]
  return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout, **kwargs)


def _start_main(data_dir, workdir):
  """experiments.main in the background, its stderr piped (text)."""
  cmd = [sys.executable, "-m", "experiments.main", *_main_args(data_dir, workdir)]
  return subprocess.Popen(cmd, cwd=REPO, env=_env(), stderr=subprocess.PIPE, text=True)


def _without_timing(history):
  return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in history]


def _params(workdir, config):
  mesh = train.make_mesh()
  tx = train.make_optimizer(config.optim, train.make_schedule(config.optim, 4, config.epochs))
  _, _, state = train.create_train_state(config, train.create_model(config, 10), tx, mesh)
  return train.restore_checkpoint(workdir, state, train.with_defaults(config))[0].params


def _checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.fixture(scope="module")
def finished(mnist_data_dir, tmp_path_factory):
  """A finished 3-epoch run (keeping every checkpoint), and its history: the reference."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  config = _config(mnist_data_dir, keep_checkpoints=3)
  return workdir, config, train.train_and_evaluate(config, workdir)


def _copy(finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished[0], workdir)
  return workdir


# ----- Records: metrics.jsonl is append-only, damage is kept aside, the checkpoint holds the records. -


def test_damaged_metrics_line_is_kept_aside_and_the_record_restored(finished, tmp_path):
  workdir, config = _copy(finished, tmp_path), finished[1]
  path = os.path.join(workdir, "metrics.jsonl")
  lines = open(path).read().splitlines()
  damaged = lines[0][:20] + "\x00garbage"
  open(path, "w").write("\n".join([damaged, *lines[1:]]) + "\n")
  history = train.train_and_evaluate(config, workdir)  # A rerun of the finished run.
  assert _without_timing(history) == _without_timing(finished[2])
  assert open(path).read().startswith(damaged + "\n")  # Never rewritten: the damaged line stays...
  assert open(path + ".damaged").read() == damaged + "\n"  # ...and is kept aside,
  assert [r["epoch"] for r in rundir.read_metrics(workdir)] == [1, 2, 3]  # its record restored.
  assert rundir.read_status(workdir) | {"time": None} == {
    "status": "finished",
    "step": 12,
    "epoch": 3,
    "time": None,
  }


def test_kill_between_checkpoint_and_record_loses_nothing(finished, mnist_data_dir, tmp_path):
  """kill -9 at the instant after epoch 2's checkpoint commits, before its record is written: the next
  start takes over the dead process's lock, writes epoch 2's record, and ends as the uninterrupted run."""
  workdir = str(tmp_path / "run")
  config = _config(mnist_data_dir, keep_checkpoints=3)
  killer = f"""
import os, sys
sys.path.insert(0, {REPO!r})
from aplx.train import run_log
from experiments.configs import mnist
write = run_log.MetricWriter.write
def write_or_die(self, record):
  if record["epoch"] == 2:
    os._exit(137)  # As kill -9: no cleanup of any kind.
  write(self, record)
run_log.MetricWriter.write = write_or_die
config = mnist.get_config({ARG + ",epochs=3"!r})
config.data_dir, config.log_every_steps, config.keep_checkpoints = {mnist_data_dir!r}, 2, 3
from aplx import train
train.train_and_evaluate(config, {workdir!r})
"""
  # The test process's device count (XLA_FLAGS kept): the resumed run continues it bit for bit.
  r = subprocess.run([sys.executable, "-c", killer], cwd=REPO, capture_output=True, text=True)
  assert r.returncode == 137, r.stderr[-2000:]
  assert _checkpoint_steps(workdir) == [4, 8] and len(rundir.read_metrics(workdir)) == 1
  assert os.path.exists(os.path.join(workdir, "lock"))  # Left by the dead process.
  from experiments import sweep  # pylint: disable=import-outside-toplevel

  assert sweep.run_status(workdir)[0] == sweep.PARTIAL  # Resumable, not failed.
  history = train.train_and_evaluate(config, workdir)
  assert _without_timing(history) == _without_timing(finished[2])
  assert [r["epoch"] for r in rundir.read_metrics(workdir)] == [1, 2, 3]
  assert not os.path.exists(os.path.join(workdir, "lock"))


# ----- Checkpoints: damage is detected, set aside, and the older checkpoint used. --------------------


def _largest_data_file(workdir, step):
  files = []
  for root, _, names in os.walk(os.path.join(workdir, "checkpoints", str(step))):
    files += [os.path.join(root, n) for n in names]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["bit_flips", "nan_overwrite"])
def test_damaged_checkpoint_is_detected_and_the_older_one_used(finished, tmp_path, damage):
  workdir, config = _copy(finished, tmp_path), finished[1]
  path = _largest_data_file(workdir, 12)
  data = bytearray(open(path, "rb").read())
  rng = np.random.default_rng(0)
  if damage == "bit_flips":  # 30 single-bit flips in the data file of the newest checkpoint.
    for i in rng.choice(len(data) // 2, 30, replace=False) + len(data) // 4:
      data[i] ^= 1 << int(rng.integers(8))
  else:  # 4 KB of 0xff: NaNs in float32.
    start = len(data) // 3
    data[start : start + 4096] = b"\xff" * 4096
  open(path, "wb").write(bytes(data))
  history = train.train_and_evaluate(config, workdir)  # Falls back to step 8, redoes epoch 3.
  assert [d.split("-")[0] for d in os.listdir(os.path.join(workdir, "checkpoints_unreadable"))] == ["12"]
  assert _without_timing(history) == _without_timing(finished[2])
  chex.assert_trees_all_equal(_params(workdir, config), _params(finished[0], config))


# ----- One writer per workdir. -------------------------------------------------------------------


def _lock(workdir, pid):
  os.makedirs(workdir, exist_ok=True)
  with open(f"/proc/{pid}/stat") as f:
    start = f.read().rpartition(")")[2].split()[19]
  holder = {"host": os.uname().nodename, "pid": pid, "start": start, "since": "2026-01-01 00:00:00"}
  with open(os.path.join(workdir, "lock"), "w") as f:
    json.dump(holder, f)


def test_second_writer_stops_at_once_naming_the_holder(mnist_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  other = subprocess.Popen(["sleep", "300"])
  try:
    _lock(workdir, other.pid)
    start = time.time()
    r = _main(*_main_args(mnist_data_dir, workdir))
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"in use by process {other.pid} on {os.uname().nodename}" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and time.time() - start < 120
    assert sorted(os.listdir(workdir)) == ["lock"]  # Nothing written beside the holder's lock.
  finally:
    other.kill()
    other.wait()
  # The holder is gone now: its lock is stale and the next start takes it over.
  r = _main(*_main_args(mnist_data_dir, workdir, epochs=1))
  assert r.returncode == 0, r.stderr[-2000:]
  assert "Taking over the lock of a process that no longer runs" in r.stderr


# ----- Config values refused before any data or workdir. ------------------------------------------


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("keep_checkpoints", 0, "config.keep_checkpoints=0: must be a positive integer"),
    ("seed", -1, "config.seed=-1: a seed is an integer >= 0"),
    ("optim.lr", float("inf"), "config.optim.lr=inf: the learning rate is a finite number > 0"),
    ("optim.weight_decay", float("nan"), "config.optim.weight_decay=nan: a finite number >= 0"),
    ("optim.momentum", 5.0, "config.optim.momentum=5.0: momentum is in [0, 1)"),
    ("batch_size", 1024, "config.batch_size=1024 is larger than the 512 training examples"),
    ("subset", 70000, "config (mnist): subset must be in [1, 60000] for mnist, got subset=70000"),
  ],
)
def test_bad_values_are_one_error_before_the_workdir(mnist_data_dir, tmp_path, field, value, message):
  config = _config(mnist_data_dir)
  node, name = (config.optim, field[6:]) if field.startswith("optim.") else (config, field)
  with config.ignore_type():
    node[name] = value
  workdir = tmp_path / "run"
  with pytest.raises(train.ConfigError) as e:
    train.train_and_evaluate(config, str(workdir))
  assert message in str(e.value) and "\n" not in str(e.value), e.value
  assert not workdir.exists()


def test_refused_resume_keeps_a_finished_status(finished, tmp_path):
  workdir, config = _copy(finished, tmp_path), finished[1].copy_and_resolve_references()
  config.optim.lr = 0.5
  with pytest.raises(train.ConfigError, match="different config"):
    train.train_and_evaluate(config, workdir)
  assert rundir.read_status(workdir)["status"] == rundir.FINISHED


# ----- Signals: from process start, SIGINT as SIGTERM, in evaluation, and to the sweep. -------------


def test_sigterm_during_startup_exits_75_preempted(mnist_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  proc = _start_main(mnist_data_dir, workdir)
  time.sleep(2.0)  # Still importing JAX (experiments.main catches signals from its first line).
  proc.send_signal(signal.SIGTERM)
  err = proc.communicate(timeout=300)[1]
  assert proc.returncode == rundir.PREEMPTED_EXIT_CODE, err[-2000:]
  assert rundir.read_status(workdir) | {"time": None} == {"status": "preempted", "step": 0, "time": None}
  assert "Traceback" not in err


def test_sigint_checkpoints_and_exits_75_without_a_traceback(mnist_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  proc = _start_main(mnist_data_dir, workdir)
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if "step 2/4" in line:  # Training is under way.
      proc.send_signal(signal.SIGINT)
      break
  lines.extend(proc.stderr)
  err = "".join(lines)
  assert proc.wait(timeout=120) == rundir.PREEMPTED_EXIT_CODE, err[-3000:]
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert rundir.read_status(workdir)["status"] == rundir.PREEMPTED
  assert _checkpoint_steps(workdir)  # A checkpoint was committed.


def test_sigterm_in_evaluation_stops_between_batches_and_resumes(
  finished, mnist_data_dir, tmp_path, monkeypatch
):
  """The signal lands in epoch 1's evaluation: it stops after the batch in flight (not at the end of the
  evaluation), epoch 1's checkpoint is committed, and the resumed run writes epoch 1's record and ends
  as the uninterrupted run."""
  workdir = str(tmp_path / "run")
  config = _config(mnist_data_dir, keep_checkpoints=3, eval_batch_size=1000)
  real_batches, seen = train.evaluation.data_lib.eval_batches, []

  def batches(*args, **kwargs):
    for batch in real_batches(*args, **kwargs):
      seen.append(1)
      if len(seen) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(train.evaluation.data_lib, "eval_batches", batches)
  with pytest.raises(train.Preempted, match="step 4"):
    train.train_and_evaluate(config, workdir)
  assert len(seen) == 2  # Of the test set's 10 batches.
  assert signals.requested() is None  # Acted on.
  assert _checkpoint_steps(workdir) == [4] and rundir.read_metrics(workdir) == []
  assert rundir.read_status(workdir)["status"] == rundir.PREEMPTED
  monkeypatch.undo()
  history = train.train_and_evaluate(config, workdir)
  assert _without_timing(history) == _without_timing(finished[2])


def test_sigterm_to_the_sweep_stops_its_run_and_exits_75(mnist_data_dir, tmp_path):
  root = tmp_path / "runs"
  cmd = [sys.executable, "-m", "experiments.sweep", "--config_file", "experiments/configs/mnist.py"]
  cmd += [
    "--grid",
    "loss=ce;noise=sym;rate=0.4;seed=0,1",
    "--fixed",
    f"subset=512,epochs=30,log_every_steps=2,data_dir={mnist_data_dir}",
  ]
  cmd += ["--root", str(root)]
  sweep = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
  workdir, log = root / "sym0.4" / "ce" / "seed0", root / "sym0.4" / "ce" / "seed0.log"
  deadline = time.time() + 300
  while time.time() < deadline and not (log.exists() and "step 2/4" in log.read_text()):
    time.sleep(0.5)
  child = json.loads((workdir / "lock").read_text())["pid"]  # 30 epochs: still training.
  sweep.send_signal(signal.SIGTERM)  # To the sweep's PID only.
  out = sweep.communicate(timeout=300)[0]
  assert sweep.returncode == rundir.PREEMPTED_EXIT_CODE, out
  assert rundir.read_status(workdir)["status"] == rundir.PREEMPTED
  assert not os.path.exists(f"/proc/{child}"), "the run outlived the sweep"
  assert not (root / "sym0.4" / "ce" / "seed1").exists()  # No run started after the signal.


# ----- One message for user-caused failures. ------------------------------------------------------


def test_workdir_that_is_a_file_is_one_line(mnist_data_dir, tmp_path):
  path = tmp_path / "a_file"
  path.write_text("")
  for workdir in (path, path / "run"):
    r = _main(*_main_args(mnist_data_dir, workdir))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    error = [line for line in r.stderr.splitlines() if line.startswith("E")]
    assert len(error) == 1 and str(workdir) in error[0], r.stderr[-2000:]


def test_full_disk_before_the_start_is_one_line_and_leaves_no_config(mnist_data_dir, tmp_path):
  """The disk fills before the run writes anything: every write raises ENOSPC (injected)."""
  workdir = str(tmp_path / "run")
  code = f"""
import errno, sys
sys.path.insert(0, {REPO!r})
from etils import epath
def full(self, *a, **k):
  raise OSError(errno.ENOSPC, "No space left on device")
epath.Path.write_text = full
sys.argv = ["main", *{_main_args(mnist_data_dir, workdir)!r}]
from experiments import main
from absl import app
app.run(main.main, flags_parser=main._parse_flags)
"""
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True)
  assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert "the disk is full: free space and rerun the same command" in r.stderr
  assert not [f for f in os.listdir(workdir) if f.startswith("config.json")]


def test_full_disk_during_a_checkpoint_is_one_line_without_library_tracebacks(mnist_data_dir, tmp_path):
  """The checkpoint write fails as on a full disk, and the library logs its traceback as orbax does (a
  logging call outside aplx): experiments.main prints the trainer's one error, no traceback."""
  workdir = str(tmp_path / "run")
  code = f"""
import errno, logging, sys
sys.path.insert(0, {REPO!r})
import orbax.checkpoint as ocp
def full(self, *a, **k):
  try:
    raise OSError(errno.ENOSPC, "No space left on device")
  except OSError:
    logging.getLogger("orbax").exception("Failed to write the checkpoint")  # As orbax logs it.
    raise
ocp.CheckpointManager.save = full
sys.argv = ["main", *{_main_args(mnist_data_dir, workdir, epochs=1)!r}]
from experiments import main
from absl import app
app.run(main.main, flags_parser=main._parse_flags)
"""
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True)
  assert r.returncode == 1, r.stderr[-3000:]
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  assert "Could not write the checkpoint of step 4" in r.stderr and "Is the disk full" in r.stderr
  assert rundir.read_metrics(workdir) == []  # The epoch whose checkpoint was lost is not recorded.


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MB tmpfs (root only: skipped where mounting is not allowed); unmounted afterwards."""
  disk = tmp_path / "disk"
  disk.mkdir()
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
  if r.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
  try:
    yield disk
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("state", ["too_small_for_a_checkpoint", "full_before_start", "read_only"])
def test_real_small_disk_is_one_line(small_disk, mnist_data_dir, state):
  """A real filesystem too small for the first checkpoint (the CNN's state is ~5 MB; the trainer checks
  the room before writing), one that is full before the start, and a read-only one: one error line,
  exit 1, nothing half-written."""
  workdir = small_disk / "run"
  if state == "full_before_start":
    with open(small_disk / "filler", "wb") as f:
      try:
        while True:
          f.write(b"\0" * 65536)
      except OSError:
        pass
  if state == "read_only":
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
  r = _main(*_main_args(mnist_data_dir, workdir, epochs=1))
  errors = [line for line in r.stderr.splitlines() if line.startswith("E")]
  assert r.returncode == 1 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr[-3000:]
  expected = {
    "too_small_for_a_checkpoint": "Could not write the checkpoint of step 4 to",
    "full_before_start": "the disk is full: free space and rerun the same command",
    "read_only": "the filesystem is read-only: pass a writable --workdir",
  }[state]
  assert expected in errors[0], errors[0]
  if workdir.exists():
    assert not [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]  # Nothing half-written.
    assert rundir.read_metrics(str(workdir)) == []


def test_missing_data_and_config_file_are_one_line_and_touch_no_workdir(tmp_path):
  workdir = tmp_path / "run"
  r = _main(
    "--config",
    "experiments/configs/webvision.py:loss=ce,noise=none,rate=0",
    f"--workdir={workdir}",
    f"--config.data_dir={tmp_path / 'tfds'}",
  )
  assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert "cannot be downloaded automatically" in r.stderr and "python -m aplx.data.prepare" in r.stderr
  assert not workdir.exists()
  r = _main("--config", "experiments/configs/nope.py:loss=ce", f"--workdir={workdir}")
  assert r.returncode == 1 and "Traceback" not in r.stderr
  assert "experiments/configs/nope.py: no such file" in r.stderr


def test_corrupt_decoded_cache_is_rebuilt(mnist_data_dir, tmp_path):
  data_dir = str(tmp_path / "tfds")
  shutil.copytree(mnist_data_dir, data_dir)
  from aplx import data  # pylint: disable=import-outside-toplevel

  reference = data.load_dataset("mnist", data_dir=data_dir, download=False)
  caches = [os.path.join(r, n) for r, _, ns in os.walk(data_dir) for n in ns if r.endswith("aplx_decoded")]
  assert caches
  for path in caches:
    open(path, "wb").write(b"PK\x03\x04 not a zip")
  data.pipeline._MEMO.clear()  # The in-process memo would hide the files.
  again = data.load_dataset("mnist", data_dir=data_dir, download=False)
  np.testing.assert_array_equal(again.train_images, reference.train_images)
  np.testing.assert_array_equal(again.train_clean_labels, reference.train_clean_labels)
  assert all(os.path.exists(path + ".damaged") for path in caches)
