"""experiments.sweep and experiments.report on synthetic workdirs (fake config.json + metrics.jsonl)."""

import fcntl
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from aplx import rundir
from experiments import per_class, plots, report, screen, sweep
from experiments.configs import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join("experiments", "configs", "mnist.py")


def make_run(
  root, loss, seed, acc, *, noise="sym", rate=0.8, epochs=3, done=None, subset=10000, dataset="mnist"
):
  """A fake workdir at the sweep's layout; `done` epochs written (all by default), last test_acc = acc."""
  workdir = sweep.workdir_for(str(root), {"loss": loss, "noise": noise, "rate": rate, "seed": seed})
  os.makedirs(workdir)
  config = {
    "dataset": dataset,
    "data_dir": None,
    "subset": subset,
    "seed": seed,
    "epochs": epochs,
    "noise": {"type": noise, "rate": rate, "seed": seed},
    "loss": {"name": loss, "params": {}},
  }
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for e in range(1, (epochs if done is None else done) + 1):
      f.write(
        json.dumps(
          {
            "epoch": e,
            "step": 10 * e,
            "lr": 0.01,
            "train_loss": 1.0 / e,
            "train_acc_noisy": 0.1 * e,
            "train_acc_clean": 0.5 - 0.05 * e,
            "test_acc": acc if e == epochs else acc / 2,
            "images_per_sec": 1.0,
          }
        )
        + "\n"
      )
  return workdir


def table_rows(text):
  """{loss: [cells]} of the first markdown table in `text`."""
  rows = {}
  for line in text.splitlines():
    if line.startswith("| ") and not line.startswith("| loss"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      rows.setdefault(cells[0], cells[1:])
  return rows


# --- grid and status ------------------------------------------------------------------------------


def test_expand_grid_and_workdir_layout(tmp_path):
  runs = sweep.expand(
    "loss=ce,nce+rce;noise=sym;rate=0.2,0.8;seed=0,1,2", "subset=10000,epochs=20", str(tmp_path)
  )
  assert len(runs) == 12
  assert runs[0].arg == "loss=ce,noise=sym,rate=0.2,seed=0,subset=10000,epochs=20"
  assert runs[0].workdir == os.path.join(tmp_path, "sym0.2", "ce", "seed0")
  assert runs[-1].workdir == os.path.join(tmp_path, "sym0.8", "nce+rce", "seed2")
  assert runs[-1].log == runs[-1].workdir + ".log"
  assert len({r.workdir for r in runs}) == 12
  # Defaults of the config files fill missing keys: noise=sym, rate=0 -> sym0, seed0.
  assert sweep.expand("loss=ce", "", "r")[0].workdir == os.path.join("r", "sym0", "ce", "seed0")


@pytest.mark.parametrize(
  "grid,fixed",
  [
    ("loss=ce;bogus=1", ""),
    ("loss=ce;rate=2", ""),
    ("loss=ce;loss=gce", ""),
    ("loss=ce", "loss=gce"),
    ("loss=ce;subset=10,20", ""),
  ],
)
def test_bad_grids_raise(grid, fixed):
  with pytest.raises(ValueError):
    sweep.expand(grid, fixed, "r", common.load_config_file(MNIST))


def test_grid_over_config_paths_expands_to_runs_dirs_and_commands(tmp_path):
  module = common.load_config_file(MNIST)
  grid = "loss=nce+rce;noise=sym;rate=0.8;seed=0,1;loss.params.beta=1,10;optim.lr=0.01,0.1"
  runs = sweep.expand(grid, "epochs=3,optim.momentum=0.5", str(tmp_path), module)
  assert len(runs) == 8 and len({r.workdir for r in runs}) == 8
  last = runs[-1]  # The last axis varies fastest.
  assert last.arg == "loss=nce+rce,noise=sym,rate=0.8,seed=1,epochs=3"
  assert last.overrides == (("loss.params.beta", "10"), ("optim.lr", "0.1"), ("optim.momentum", "0.5"))
  # Grid config paths, in grid order, between loss and seed; --fixed ones only in the config.
  assert last.workdir == os.path.join(
    tmp_path, "sym0.8", "nce+rce", "loss.params.beta=10,optim.lr=0.1", "seed1"
  )
  assert runs[0].workdir == os.path.join(
    tmp_path, "sym0.8", "nce+rce", "loss.params.beta=1,optim.lr=0.01", "seed0"
  )
  assert sweep.command(last, MNIST) == [
    "python",
    "-m",
    "experiments.main",
    "--config",
    f"{MNIST}:loss=nce+rce,noise=sym,rate=0.8,seed=1,epochs=3",
    "--config.loss.params.beta=10",
    "--config.optim.lr=0.1",
    "--config.optim.momentum=0.5",
    "--workdir",
    last.workdir,
  ]
  # What experiments.main will get: each value parsed with its field's type.
  config = sweep.expected_config(module, last.arg, last.overrides)
  assert config["loss"]["params"]["beta"] == 10.0 and isinstance(config["loss"]["params"]["beta"], float)
  assert (config["optim"]["lr"], config["optim"]["momentum"], config["epochs"]) == (0.1, 0.5, 3)
  # Without config-path axes the layout is today's, exactly.
  (plain,) = sweep.expand("loss=ce;rate=0.8", "optim.lr=0.5", str(tmp_path), module)
  assert plain.workdir == os.path.join(tmp_path, "sym0.8", "ce", "seed0")


def test_workdir_layout_parses_back(tmp_path):
  root = str(tmp_path)
  for args, overrides in [
    (
      {"loss": "nce+rce", "noise": "sym", "rate": 0.8, "seed": 2},
      {"loss.params.beta": "10", "optim.lr": "0.1"},
    ),
    ({"loss": "ce", "noise": "none", "rate": 0.0, "seed": 0}, {}),
    ({"loss": "gce", "noise": "human:random1", "rate": 0.5, "seed": 1}, {"val_fraction": "0.1"}),
    ({"loss": "ce", "noise": "asym", "rate": 0.4, "seed": 7, "noise_seed": 0}, {}),
  ]:
    workdir = sweep.workdir_for(root, args, overrides)
    parsed = sweep.parse_workdir(root, workdir)
    noise_seed = args.get("noise_seed")
    assert parsed == ((args["noise"], args["rate"]), args["loss"], overrides, args["seed"], noise_seed)
    assert workdir.endswith("seed7-noise0" if noise_seed is not None else f"seed{args['seed']}")
  others = ("sym0.8/ce", "sym0.8/ce/x/seed0", "sym0.8/ce/a=1/b/seed0", "sym/ce/seed0", "sym0.8/ce/seedx")
  for other in (*others, "sym0.8/ce/seed0-noise", "sym0.8/ce/seed0-noisex"):
    assert sweep.parse_workdir(root, os.path.join(root, other)) is None, other


@pytest.mark.parametrize(
  "grid, fixed, message",
  [
    ("beta=1,10", "", "config has no field 'beta'.*Did you mean loss.params.beta\\?"),
    (
      "loss=nce+rce;loss.params.bta=1",
      "",
      "config.loss.params has no field 'bta'; its fields are: alpha, beta",
    ),
    ("loss=ce,nce+rce;loss.params.beta=1", "", "'loss=ce --config.loss.params.beta=1'.*fields are: scale"),
    ("loss=ce", "optim.learning_rate=0.1", "config.optim has no field 'learning_rate'"),
    ("loss=ce;optim.lr=fast", "", "--config.optim.lr=fast: could not convert string to float"),
    ("loss=ce;loss.params..q=1", "", "neither a config-argument key .* nor a config path"),
    ("loss=ce;data_dir=/a,/b", "", "would break the workdir name"),
  ],
)
def test_bad_config_paths_are_clear_errors(grid, fixed, message, tmp_path):
  with pytest.raises(ValueError, match=message):
    sweep.expand(grid, fixed, str(tmp_path), common.load_config_file(MNIST))


def test_sweep_over_a_loss_parameter_with_a_fake_runner(tmp_path):
  """Two runs over loss.params.beta: their workdirs, their config.json (written as experiments.main
  would), skipped when rerun, a conflict when a config.json holds another beta."""
  module = common.load_config_file(MNIST)
  runs = sweep.expand(
    "loss=nce+rce;noise=sym;rate=0.8;loss.params.beta=1,10", "epochs=2", str(tmp_path), module
  )
  expected = lambda run: sweep.expected_config(module, run.arg, run.overrides)  # noqa: E731

  def fake_launch(run):  # "Trains": the config experiments.main would write, and two epochs of metrics.
    os.makedirs(run.workdir)
    rundir.write_config(run.workdir, expected(run))
    rundir.write_metrics(run.workdir, [{"epoch": e, "test_acc": 0.5} for e in (1, 2)])
    return 0

  result = sweep.run_sweep(runs, fake_launch, expected=expected, out=io.StringIO())
  assert len(result["finished"]) == 2 and not result["failed"]
  for beta in (1, 10):
    workdir = os.path.join(tmp_path, "sym0.8", "nce+rce", f"loss.params.beta={beta}", "seed0")
    assert rundir.read_config(workdir)["loss"]["params"]["beta"] == float(beta)
  result = sweep.run_sweep(
    runs, lambda run: pytest.fail("launched again"), expected=expected, out=io.StringIO()
  )
  assert len(result["skipped"]) == 2
  config = rundir.read_config(runs[0].workdir)
  config["loss"]["params"]["beta"] = 5.0
  rundir.write_config(runs[0].workdir, config)
  assert sweep.run_status(runs[0].workdir, expected(runs[0]))[1].endswith("loss.params.beta: 5.0 -> 1.0")


def test_a_run_written_before_the_config_listed_every_default_is_still_finished(tmp_path):
  """results/mnist_full's CE run: its config.json predates the defaults in loss.params and
  model.kwargs (and val_fraction); today's config of that grid point matches it."""
  source = os.path.join(REPO, "results", "mnist_full", "runs", "sym0.8", "ce", "seed0")
  workdir = sweep.workdir_for(str(tmp_path), {"loss": "ce", "noise": "sym", "rate": 0.8, "seed": 0})
  os.makedirs(workdir)
  for name in ("config.json", "metrics.jsonl"):
    shutil.copy(os.path.join(source, name), workdir)
  module = common.load_config_file(MNIST)
  expected = sweep.expected_config(module, "loss=ce,noise=sym,rate=0.8,seed=0")
  saved = rundir.read_config(workdir)
  assert "scale" not in saved["loss"]["params"] and expected["loss"]["params"]["scale"] == 1.0  # Added.
  assert "dtype" not in saved["model"]["kwargs"] and "dtype" in expected["model"]["kwargs"]
  assert sweep.run_status(workdir, expected) == (sweep.FINISHED, "epoch 50/50")
  # Not by ignoring the new fields: another value of one is a conflict.
  scaled = sweep.expected_config(module, "loss=ce,noise=sym,rate=0.8,seed=0", [("loss.params.scale", "2")])
  assert sweep.run_status(workdir, scaled)[0] == sweep.CONFLICT


def test_run_status(tmp_path):
  assert sweep.run_status(str(tmp_path / "nope")) == (sweep.MISSING, "not started")
  os.makedirs(tmp_path / "empty")
  assert sweep.run_status(str(tmp_path / "empty"))[0] == sweep.PARTIAL
  done = make_run(tmp_path, "ce", 0, 0.5, epochs=3)
  part = make_run(tmp_path, "ce", 1, 0.5, epochs=3, done=2)
  assert sweep.run_status(done) == (sweep.FINISHED, "epoch 3/3")
  assert sweep.run_status(part) == (sweep.PARTIAL, "epoch 2/3")
  # A torn last line (killed mid-write) does not break the status.
  with open(os.path.join(part, "metrics.jsonl"), "a") as f:
    f.write('{"epoch": 3, "te')
  assert sweep.run_status(part) == (sweep.PARTIAL, "epoch 2/3")
  # config.json that no longer matches what the grid point gives: a conflict, never resumed.
  expected = rundir.read_config(done)
  assert sweep.run_status(done, expected)[0] == sweep.FINISHED
  status, detail = sweep.run_status(done, dict(expected, epochs=50))
  assert status == sweep.CONFLICT and "epochs: 3 -> 50" in detail
  # The trainer's rule, not a stricter one: a change the trainer resumes over is no conflict.
  assert sweep.run_status(done, dict(expected, log_every_steps=7, eval_batch_size=10))[0] == sweep.FINISHED
  # A preempted run is partial (resumable), and says so.
  rundir.write_status(part, rundir.PREEMPTED, step=5)
  assert sweep.run_status(part) == (sweep.PARTIAL, "epoch 2/3, preempted")
  # A run stopped at its config's max_steps (a screen) has nothing left to run; preempted before it has.
  config = rundir.read_config(part)
  rundir.write_config(part, dict(config, max_steps=7))
  assert sweep.run_status(part)[0] == sweep.PARTIAL  # Preempted at step 5.
  rundir.write_status(part, rundir.STOPPED, step=7, epoch=2)
  assert sweep.run_status(part) == (sweep.FINISHED, "epoch 2/3, stopped at max_steps=7")
  rundir.write_status(part, rundir.RUNNING, step=7, epoch=2)  # As aplx before the 'stopped' status left it.
  assert sweep.run_status(part)[0] == sweep.FINISHED


def test_preempted_run_stops_the_sweep_as_interrupted_not_failed(tmp_path):
  runs = sweep.expand("loss=ce,gce;rate=0.8", "epochs=3", str(tmp_path))
  launched = []

  def launch(run):
    launched.append(run)
    make_run(tmp_path, run.workdir.split(os.sep)[-2], 0, 0.8, epochs=3, done=1)
    return rundir.PREEMPTED_EXIT_CODE

  out = io.StringIO()
  result = sweep.run_sweep(runs, launch, out=out)
  assert len(launched) == 1  # The job is being stopped: nothing more is started.
  assert not result["failed"] and [r for r, _ in result["interrupted"]] == runs[:1]
  assert "interrupted by preemption: rerun the same command to resume" in out.getvalue()


def test_sweep_skips_finished_resumes_partial_reports_failures(tmp_path):
  runs = sweep.expand("loss=ce,gce;rate=0.8;seed=0,1", "epochs=3", str(tmp_path))
  make_run(tmp_path, "ce", 0, 0.5, epochs=3)  # finished: skipped
  make_run(tmp_path, "ce", 1, 0.5, epochs=3, done=1)  # partial: resumed
  launched = []

  def fake_launch(run):  # Trains by writing metrics; gce seed 1 crashes after one epoch.
    launched.append(run.workdir)
    loss, seed = run.workdir.split(os.sep)[-2], int(run.workdir[-1])
    if not os.path.exists(os.path.join(run.workdir, "config.json")):
      make_run(tmp_path, loss, seed, 0.6, epochs=3, done=1 if loss == "gce" and seed == 1 else 3)
      return 1 if loss == "gce" and seed == 1 else 0
    with open(os.path.join(run.workdir, "metrics.jsonl"), "a") as f:
      for e in (2, 3):
        f.write(json.dumps({"epoch": e, "test_acc": 0.6}) + "\n")
    return 0

  out = io.StringIO()
  result = sweep.run_sweep(runs, fake_launch, parallel=2, out=out)
  root = str(tmp_path)
  assert sorted(launched) == sorted(
    os.path.join(root, "sym0.8", l, s) for l, s in (("ce", "seed1"), ("gce", "seed0"), ("gce", "seed1"))
  )
  assert len(result["finished"]) == 3 and len(result["skipped"]) == 1
  ((failed, detail),) = result["failed"]
  assert failed.workdir.endswith(os.path.join("gce", "seed1")) and "exit code 1" in detail
  text = out.getvalue()
  assert "1 finished already" in text and "1 resumed" in text
  assert "3/4 done" in text and f"FAILED {failed.workdir}" in text and failed.log in text
  # A second pass launches only the failed run; a launch that exits 0 but leaves it unfinished fails.
  launched.clear()
  result = sweep.run_sweep(runs, lambda run: launched.append(run.workdir) or 0, out=io.StringIO())
  assert launched == [failed.workdir] and "partial (epoch 1/3)" in result["failed"][0][1]


def test_subprocess_runner_logs_beside_workdir_and_locks(tmp_path):
  run = sweep.Run("loss=ce", str(tmp_path / "sym0" / "ce" / "seed0"))
  # Runs experiments.main with a config file that does not exist: it fails fast.
  rc = sweep.subprocess_runner("cfg.py", python=sys.executable)(run)
  assert rc != 0 and os.path.exists(run.log)
  with open(run.log) as f:
    assert "experiments.main --config cfg.py:loss=ce --workdir" in f.read()
  # While another sweep trains the run (its log locked), it is not launched twice.
  with open(run.log, "a") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    assert sweep.subprocess_runner("cfg.py", python=sys.executable)(run) == -1


def test_print_commands_cli(tmp_path):
  make_run(tmp_path, "ce", 0, 0.5, epochs=20)  # Not a real config: its config.json is a conflict.
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.sweep",
      "--config_file",
      "experiments/configs/mnist.py",
      "--grid",
      "loss=ce,nce+rce;noise=sym;rate=0.8;seed=0,1",
      "--fixed",
      "subset=10000,epochs=20",
      "--root",
      str(tmp_path),
      "--print_commands",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  lines = proc.stdout.splitlines()
  assert len(lines) == 3, proc.stderr  # ce/seed0 exists with another config: reported, not printed.
  assert proc.returncode == 1 and "CONFLICT" in proc.stderr and "ce/seed0" in proc.stderr
  workdir = os.path.join(tmp_path, "sym0.8", "nce+rce", "seed1")
  assert lines[-1] == (
    f"mkdir -p {os.path.dirname(workdir)} && python -m experiments.main --config "
    "experiments/configs/mnist.py:loss=nce+rce,noise=sym,rate=0.8,seed=1,subset=10000,"
    f"epochs=20 --workdir {workdir} >> {workdir}.log 2>&1"
  )
  assert not os.path.exists(workdir)  # Nothing ran.


def _sweep_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "experiments.sweep", "--config_file", MNIST, *args],
    cwd=REPO,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=60,
  )


def test_print_commands_cli_with_a_config_path_axis(tmp_path):
  grid = "loss=nce+rce;noise=sym;rate=0.8;seed=0;loss.params.beta=1,10"
  proc = _sweep_cli("--grid", grid, "--fixed", "epochs=20", "--root", str(tmp_path), "--print_commands")
  assert proc.returncode == 0, proc.stderr
  workdir = os.path.join(tmp_path, "sym0.8", "nce+rce", "loss.params.beta=10", "seed0")
  assert proc.stdout.splitlines()[-1] == (
    f"mkdir -p {os.path.dirname(workdir)} && python -m experiments.main --config "
    f"{MNIST}:loss=nce+rce,noise=sym,rate=0.8,seed=0,epochs=20 --config.loss.params.beta=10 "
    f"--workdir {workdir} >> {workdir}.log 2>&1"
  )
  proc = _sweep_cli("--grid", "beta=1,10", "--root", str(tmp_path), "--print_commands")
  assert proc.returncode != 0 and "Did you mean loss.params.beta?" in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr and not os.listdir(tmp_path)


# --- report ---------------------------------------------------------------------------------------


@pytest.fixture
def sweep_root(tmp_path):
  root = tmp_path / "runs"
  for seed, acc in enumerate((0.40, 0.50, 0.60)):
    make_run(root, "ce", seed, acc)
  for seed, acc in enumerate((0.70, 0.74)):
    make_run(root, "nce+rce", seed, acc)
  make_run(root, "nce+rce", 2, 0.99, done=1)  # unfinished: not in the mean
  make_run(root, "gce", 0, 0.65)
  make_run(root, "gce", 1, 0.65)
  make_run(root, "gce", 2, 0.65)
  make_run(root, "fl", 0, 0.30)  # fl seeds 1, 2 missing
  make_run(root, "ce", 0, 0.90, noise="asym", rate=0.4)
  make_run(root, "mine", 0, 0.99)  # not a paper loss: last row, no paper cell
  os.makedirs(root / "sym0.8" / "sce" / "seed0")  # crashed before writing config.json
  return root


def test_report_table(sweep_root):
  text = report.report(str(sweep_root))
  rows = table_rows(text)
  assert list(rows) == ["CE", "FL", "GCE", "NCE+RCE", "MINE"]  # The paper's order, then others.
  # CE sym 0.8: mean 50 +- std(40, 50, 60) = 8.16 (ddof=0) over 3; paper 47.08 +- 1.15.
  ce = rows["CE"]
  assert ce[0] == f"50.00 ± {np.std([40, 50, 60]):.2f} (3)"
  assert ce[1] == "47.08 ± 1.15" and ce[2] == "+2.92 †"
  # Top 2 of sym 0.8 in bold: MINE 99 and NCE+RCE 72 (the unfinished 99 does not count).
  assert rows["MINE"][0] == "**99.00** (1)" and rows["NCE+RCE"][0] == "**72.00 ± 2.00** (2)"
  assert "**" not in rows["GCE"][0] and rows["GCE"][0] == "65.00 ± 0.00 (3)"
  assert rows["MINE"][1] == "" and rows["MINE"][2] == ""
  # asym 0.4 column, from Table 3: CE paper 85.74.
  assert "asym 0.4 ours" in text and rows["CE"][3] == "**90.00** (1)" and rows["CE"][4].startswith("85.74")
  assert rows["GCE"][3] == ""  # Never run at asym 0.4: empty, and listed as missing below.
  assert "Tables 2, 3" in text


def test_report_lists_unfinished_and_missing(sweep_root):
  text = report.report(str(sweep_root))
  unfinished = os.path.join(sweep_root, "sym0.8", "nce+rce", "seed2")
  assert f"partial: `{unfinished}` — epoch 1/3" in text
  crashed = os.path.join(sweep_root, "sym0.8", "sce", "seed0")
  assert f"partial: `{crashed}` — started, no config.json" in text
  for workdir in (
    ("sym0.8", "fl", "seed1"),
    ("sym0.8", "fl", "seed2"),
    ("asym0.4", "gce", "seed0"),
    ("asym0.4", "ce", "seed1"),
  ):
    assert f"missing: `{os.path.join(sweep_root, *workdir)}` — no workdir" in text
  assert "Left out of the means" in text
  # With the sweep's grid, only its points are expected.
  text = report.report(str(sweep_root), grid="loss=ce,sgd;noise=sym;rate=0.8;seed=0")
  assert f"missing: `{os.path.join(sweep_root, 'sym0.8', 'sgd', 'seed0')}`" in text
  assert os.path.join(sweep_root, "sym0.8", "fl", "seed1") not in text


def test_report_flags_protocol(tmp_path):
  make_run(tmp_path / "a", "ce", 0, 0.5, epochs=20, subset=10000)
  assert "10k-image subset, 20 epochs — not the paper's 60k/50 epochs" in report.report(str(tmp_path / "a"))
  make_run(tmp_path / "b", "ce", 0, 0.5, epochs=50, subset=None)
  text = report.report(str(tmp_path / "b"))
  assert "Not the paper's protocol" not in text and "Protocol: the paper's" in text
  # Two protocols under one root are never averaged together: one table each.
  make_run(tmp_path / "b", "ce", 1, 0.7, epochs=20, subset=10000)
  text = report.report(str(tmp_path / "b"))
  assert text.count("## mnist") == 2 and "**50.00** (1)" in text and "**70.00** (1)" in text


def test_report_empty_root(tmp_path):
  assert "No runs found." in report.report(str(tmp_path / "nothing"))


def test_paper_numbers_joined():
  paper = report.load_paper()
  assert report.paper_cell(paper, "mnist", "sym", 0.8, "nce+rce")["mean"] == 75.18
  assert report.paper_cell(paper, "cifar10", "asym", 0.4, "ce")["table"] == "3"
  assert report.paper_cell(paper, "mnist", "clean", 0.0, "ce")["mean"] == 99.25
  # Table 5 reports the ILSVRC2012 validation images: no paper cell for WebVision's own test_acc.
  table5 = report.paper_cell(paper, "webvision", "clean", 0.0, "nce+rce", "test_acc_imagenet_val")
  assert table5["mean"] == 62.64 and table5["table"] == "5"
  assert report.paper_cell(paper, "webvision", "clean", 0.0, "nce+rce") is None
  assert report.paper_cell(paper, "mnist", "sym", 0.8, "nce+rce", "test_acc_imagenet_val") is None
  assert report.paper_cell(paper, "mnist", "sym", 0.8, "mine") is None


def test_top2_ties():
  assert report.top2({"a": 1.0, "b": 3.0, "c": 2.0}) == {"b", "c"}
  assert report.top2({"a": 3.0, "b": 3.0, "c": 2.0}) == {"a", "b"}
  assert report.top2({"a": 3.0, "b": 2.0, "c": 2.001}) == {"a", "b", "c"}  # Tie as printed.
  assert report.top2({"a": 1.0}) == {"a"} and report.top2({}) == set()


def test_plots_written(sweep_root, tmp_path):
  out = tmp_path / "results"
  text = report.report(str(sweep_root), out=str(out / "table.md"), plots_dir=str(out))
  names = sorted(os.listdir(out))
  assert names == [
    "mnist_n10000_e3_asym0.4_memorisation.png",
    "mnist_n10000_e3_asym0.4_test_acc.png",
    "mnist_n10000_e3_sym0.8_memorisation.png",
    "mnist_n10000_e3_sym0.8_test_acc.png",
    "table.md",
  ]
  for name in names[:-1]:
    with open(out / name, "rb") as f:
      head = f.read()
    assert head.startswith(b"\x89PNG") and len(head) > 5000
    assert f"]({name})" in text  # Linked from the table, relative to it.
  with open(out / "table.md") as f:
    assert f.read() == text


def test_run_trained_by_another_sweep_is_busy_not_failed(tmp_path):
  runs = sweep.expand("loss=ce;rate=0.8;seed=0", "epochs=3", str(tmp_path))
  out = io.StringIO()
  result = sweep.run_sweep(runs, lambda run: -1, out=out)  # -1: its log is locked elsewhere.
  assert not result["failed"] and len(result["busy"]) == 1
  assert "busy" in out.getvalue() and "1 being trained by another sweep" in out.getvalue()


def test_one_epoch_curve_is_drawn_with_a_visible_marker():
  """A 1-epoch sweep gives one point per curve: without a marker nothing would show."""
  plt = plots._pyplot()
  fig, ax = plt.subplots()
  one = [[{"epoch": 1, "test_acc": 0.5}]]
  plots._band(ax, one, "test_acc", "ce", "C0")
  long = [[{"epoch": e, "test_acc": 0.5} for e in range(1, 51)]]
  plots._band(ax, long, "test_acc", "ce", "C0")
  assert ax.lines[0].get_marker() == "o" and len(ax.lines[0].get_xdata()) == 1
  assert ax.lines[1].get_marker() in (None, "None", "")  # Dense curves stay plain lines.
  plt.close(fig)


def test_initialisation_seeds_over_one_noise_draw(tmp_path):
  """noise_seed= fixes the noise draw while seed= varies the initialisation and batch order: separate
  config fields, separate workdirs, and the report counts each as a seed."""
  module = common.load_config_file(os.path.join(REPO, "experiments", "configs", "mnist.py"))
  runs = sweep.expand(
    "loss=nce+rce;noise=asym;rate=0.4;seed=0,1,2;noise_seed=0", "epochs=1", str(tmp_path), module
  )
  configs = [sweep.expected_config(module, run.arg) for run in runs]
  assert [(c["seed"], c["noise"]["seed"]) for c in configs] == [(0, 0), (1, 0), (2, 0)]
  assert [os.path.basename(r.workdir) for r in runs] == ["seed0-noise0", "seed1-noise0", "seed2-noise0"]
  assert sweep.expected_config(module, "loss=ce,seed=3")["noise"]["seed"] == 3  # Default: the run's seed.
  with pytest.raises(ValueError, match="noise_seed=-1"):
    common.parse_arg("noise_seed=-1")
  for run, config in zip(runs, configs):  # Two finished, one missing: the report names the missing one.
    if config["seed"] < 2:
      os.makedirs(run.workdir)
      rundir.write_config(run.workdir, config)
      rundir.write_metrics(run.workdir, [{"epoch": 1, "test_acc": 0.9}])
  infos = report.collect(str(tmp_path))
  assert [(r.seed, r.noise_seed) for r in infos] == [(0, 0), (1, 0)]
  assert report.expected_missing(infos, str(tmp_path)) == []  # Only the seeds that exist are expected.
  missing = report.expected_missing(
    infos, str(tmp_path), "loss=nce+rce;noise=asym;rate=0.4;seed=0,1,2;noise_seed=0"
  )
  assert missing == [runs[2].workdir]


# --- report: the protocol card, the collapse screen, the memorisation diagnostics ----------------


def per_class_acc(lost=None, low=0.0, rest=0.97):
  """Ten per-class accuracies: `rest` for every class but `lost`, which has `low`."""
  return [low if c == lost else rest for c in range(10)]


def write_run(workdir, config, records, status=None):
  """A run directory as the trainer (or the harness) leaves it: config.json, metrics.jsonl and, given
  (state, step), status.json."""
  os.makedirs(workdir)
  rundir.write_config(workdir, config)
  rundir.write_metrics(workdir, records)
  if status is not None:
    rundir.write_status(workdir, status[0], step=status[1], epoch=len(records))
  return workdir


def card_rows(text):
  """{(loss, setting): cells} of the protocol card's tables."""
  rows = {}
  for line in text[text.index("## Protocol card") :].splitlines():
    if line.startswith("| ") and not line.startswith("| loss"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      rows[(cells[0], cells[1])] = cells[2:]
  return rows


def test_per_class_lowest_and_lost():
  record = {"epoch": 1, "test_acc_per_class": [0.5, None, 0.03, 0.12, 0.099]}
  assert per_class.lowest(record) == 0.03 and per_class.lost(record) == [2, 4]
  assert per_class.lowest({"epoch": 1}) is None and per_class.lost({"epoch": 1}) is None  # Not 0.
  metrics = [{"epoch": 1, "test_acc_per_class": [0.5, 0.5]}, {"epoch": 2, "test_acc_per_class": [0.05, 0.5]}]
  assert per_class.first_lost(metrics, 0) == 2 and per_class.first_lost(metrics, 1) is None
  assert per_class.describe_lost([[5], [5, 7], [], None]) == "lost: 5 (2/3 seeds), 7 (1/3 seeds)"
  assert per_class.describe_lost([[], []]) == "" and per_class.describe_lost([None]) == "n/a"


@pytest.fixture
def card_root(tmp_path):
  """CE asym 0.4: three finished seeds with known last / best / validation-selected accuracies and
  per-class accuracies (one class at 3% in seed 0, 12% in seed 1, none in seed 2, an older run); NCE+RCE:
  one finished seed without per-class accuracies, one unfinished."""
  root = tmp_path / "runs"
  tests = {0: (0.80, 0.95, 0.90), 1: (0.85, 0.88, 0.92), 2: (0.70, 0.60, 0.94)}
  vals = {0: (0.5, 0.7, 0.6), 1: (0.9, 0.4, 0.5), 2: (0.1, 0.2, 0.3)}
  last_classes = {0: per_class_acc(9, 0.03), 1: per_class_acc(5, 0.12), 2: None}
  for seed in range(3):
    workdir = make_run(root, "ce", seed, 0.5, noise="asym", rate=0.4)
    records = []
    for e in range(1, 4):
      record = {
        "epoch": e,
        "step": 10 * e,
        "test_acc": tests[seed][e - 1],
        "val_acc_noisy": vals[seed][e - 1],
      }
      if last_classes[seed] is not None:
        record["test_acc_per_class"] = last_classes[seed] if e == 3 else per_class_acc()
      records.append(record)
    rundir.write_metrics(workdir, records)
  make_run(root, "nce+rce", 0, 0.93, noise="asym", rate=0.4)
  make_run(root, "nce+rce", 1, 0.93, noise="asym", rate=0.4, done=1)
  return root


def test_card_last_best_validation_selected_and_lowest_class(card_root):
  runs = report.collect(str(card_root))
  ce = report.card_stats(runs)[(("ce", ""), ("asym", 0.4))]
  assert ce["last"]["accs"] == pytest.approx([90, 92, 94]) and ce["last"]["std"] == pytest.approx(
    np.std([90, 92, 94])
  )
  assert ce["best"]["accs"] == pytest.approx([95, 92, 94])
  assert ce["val"]["accs"] == pytest.approx([95, 85, 94])  # Epochs 2, 1, 3: the highest val_acc_noisy.
  assert ce["lowest"]["accs"] == pytest.approx([3, 12]) and ce["lost"] == [[9], [], None]
  nce = report.card_stats(runs)[(("nce+rce", ""), ("asym", 0.4))]
  assert nce["last"]["n"] == 1 and nce["lowest"] is None and nce["lost"] == [None]

  text = report.report(str(card_root), seeds=4)
  assert (
    table_rows(text)["CE"][0] == f"**92.00 ± {np.std([90, 92, 94]):.2f}** (3)"
  )  # The main table as before.
  rows = card_rows(text)
  assert rows[("CE", "asym 0.4")] == [
    "3/4",
    f"92.00 ± {np.std([90, 92, 94]):.2f}",
    f"{np.mean([95, 92, 94]):.2f} ± {np.std([95, 92, 94]):.2f}",
    f"{np.mean([95, 85, 94]):.2f} ± {np.std([95, 85, 94]):.2f}",
    "7.50 ± 4.50 (2)",  # The run without per-class accuracies is not a 0.
    "lost: 9 (1/2 seeds)",  # 3% is lost, 12% is not.
    "85.74 ± 2.70",
  ]
  assert rows[("NCE+RCE", "asym 0.4")][:2] == ["1/4 (+1 unfinished)", "93.00"]
  assert rows[("NCE+RCE", "asym 0.4")][4:7] == ["n/a", "n/a", "93.12 ± 1.17"]
  assert "mean ± std (population, ddof=0)" in text and "val-selected" in text
  for loss, seed in (("ce", 3), ("nce+rce", 2), ("nce+rce", 3)):  # --seeds 4: seeds 0..3 expected.
    assert f"missing: `{os.path.join(card_root, 'asym0.4', loss, f'seed{seed}')}` — no workdir" in text
  assert f"partial: `{os.path.join(card_root, 'asym0.4', 'nce+rce', 'seed1')}` — epoch 1/3" in text
  assert "Protocol card" not in report.report(str(card_root), card=False)
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.report", f"--root={card_root}", "--seeds=3", "--nocard"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0 and "Protocol card" not in proc.stdout, proc.stderr[-2000:]
  assert proc.stdout.count("missing: ") == 1  # nce+rce seed 2; seed 1 is unfinished, not missing.
  assert f"missing: `{os.path.join(card_root, 'asym0.4', 'nce+rce', 'seed2')}`" in proc.stdout


def _diagnostics(epoch, memorised):
  return {
    "train_corrupted_memorised": memorised,
    "train_corrupted_corrected": 0.9 - memorised,
    "train_corrupted_other": 0.1,
    "train_uncorrupted_correct": 0.95,
    "train_uncorrupted_other": 0.05,
    "train_corrupted_fraction": 0.2,
    "train_loss_auroc": 0.9 - 0.1 * epoch,
  }


def test_memorisation_diagnostics_in_the_card_and_figures_only_where_recorded(tmp_path):
  root = tmp_path / "runs"
  for seed, memorised in ((0, 0.2), (1, 0.4)):  # asym 0.4: records with the diagnostics.
    workdir = make_run(root, "ce", seed, 0.9, noise="asym", rate=0.4)
    records = rundir.read_metrics(workdir)
    rundir.write_metrics(workdir, [r | _diagnostics(r["epoch"], memorised * r["epoch"] / 3) for r in records])
  make_run(root, "ce", 0, 0.5)  # sym 0.8: an older run, without them.
  out = tmp_path / "results"
  text = report.report(str(root), out=str(out / "table.md"), plots_dir=str(out))
  header = next(l for l in text.splitlines() if l.startswith("| loss | setting"))
  assert header.endswith("| memorised | loss AUROC | paper |")
  # Last epoch: memorised 20% and 40%, AUROC 0.6 in both.
  assert card_rows(text)[("CE", "asym 0.4")][-3:] == ["30.00 ± 10.00", "0.600 ± 0.000", "85.74 ± 2.70"]
  assert card_rows(text)[("CE", "sym 0.8")][-3:] == ["—", "—", "47.08 ± 1.15"]
  assert sorted(os.listdir(out)) == [
    "mnist_n10000_e3_asym0.4_corrupted.png",
    "mnist_n10000_e3_asym0.4_loss_auroc.png",
    "mnist_n10000_e3_asym0.4_memorisation.png",
    "mnist_n10000_e3_asym0.4_test_acc.png",
    "mnist_n10000_e3_sym0.8_memorisation.png",
    "mnist_n10000_e3_sym0.8_test_acc.png",
    "table.md",
  ]
  with open(out / "mnist_n10000_e3_asym0.4_corrupted.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  x, mean, _ = plots.curve(
    [rundir.read_metrics(r.workdir) for r in report.collect(str(root))[:2]], "train_corrupted_memorised"
  )
  assert list(x) == [1, 2, 3] and mean[-1] == pytest.approx(0.3)


def _screen_records(epochs, lost=None, lost_from=None, acc=0.9):
  """Per-epoch records; class `lost` at 3% from epoch `lost_from` on."""
  return [
    {
      "epoch": e,
      "step": 469 * e,
      "lr": 0.01,
      "train_loss": 1.0,
      "train_acc_noisy": 0.6,
      "train_acc_clean": 0.8,
      "test_acc": acc,
      "test_acc_per_class": per_class_acc(lost, 0.03) if lost_from and e >= lost_from else per_class_acc(),
    }
    for e in range(1, epochs + 1)
  ]


@pytest.fixture
def screen_roots(tmp_path):
  """aplx screens stopped at max_steps=2345 (fidelity=authors and paper, one root), a harness root, and a
  finished full run beside the screens."""
  module = common.load_config_file(os.path.join(REPO, MNIST))
  aplx_root, torch_root = tmp_path / "screen", tmp_path / "screen_torch"

  def aplx_run(seed, fidelity, records, status):
    arg = f"loss=ce,noise=asym,rate=0.4,seed={seed},noise_seed=0,fidelity={fidelity}"
    config = sweep.expected_config(module, arg, [("max_steps", "2345")])
    workdir = sweep.workdir_for(
      str(aplx_root), {"loss": "ce", "noise": "asym", "rate": 0.4, "seed": seed, "noise_seed": 0}
    )
    return write_run(workdir, config, records, status)

  aplx_run(0, "authors", _screen_records(5, lost=5, lost_from=3, acc=0.80), ("running", 2345))
  aplx_run(1, "authors", _screen_records(5, acc=0.90), ("stopped", 2345))
  aplx_run(2, "authors", _screen_records(2), ("running", 0))  # In progress: not counted.
  aplx_run(3, "paper", _screen_records(5, lost=7, lost_from=4, acc=0.85), ("running", 2345))
  full = sweep.workdir_for(
    str(aplx_root), {"loss": "ce", "noise": "asym", "rate": 0.4, "seed": 9, "noise_seed": 0}
  )
  config = sweep.expected_config(module, "loss=ce,noise=asym,rate=0.4,seed=9,noise_seed=0,epochs=2")
  write_run(full, config, _screen_records(2, acc=0.97), ("finished", 938))

  def torch_run(seed, records):
    config = {"code": "authors-pytorch", "loss": "ce", "noise": "asym", "rate": 0.4, "seed": seed}
    config |= {"noise_seed": 0, "epochs": 50, "max_epochs": 5, "lr": 0.01}
    workdir = sweep.workdir_for(
      str(torch_root), {"loss": "ce", "noise": "asym", "rate": 0.4, "seed": seed, "noise_seed": 0}
    )
    return write_run(workdir, config, records)

  torch_run(0, _screen_records(5, lost=5, lost_from=2, acc=0.80))
  torch_run(1, _screen_records(3))  # 3 of 5 epochs: not counted.
  return aplx_root, torch_root


def test_screen_runs_are_left_out_of_the_report(screen_roots):
  aplx_root, _ = screen_roots
  text = report.report(str(aplx_root))
  assert table_rows(text)["CE"][0] == "**97.00** (1)"  # The full run only.
  assert "4 screen runs stopped on purpose" in text and "3 reached it, 1 on their way" in text
  assert "seed0-noise0" not in text and "seed2-noise0" not in text  # Neither unfinished nor missing.
  assert "All expected runs finished" in text


def test_screen_table_counts_lost_classes_per_code(screen_roots):
  aplx_root, torch_root = screen_roots
  screens, others = screen.collect([str(aplx_root), str(torch_root)])
  assert [os.path.basename(r.workdir) for _, r in others] == ["seed9-noise0"]
  assert {screen.fidelity(r.config) for _, r in screens if r.code == "aplx"} == {"authors", "paper"}
  assert [screen.code_label(r) for _, r in screens] == [
    "aplx (fidelity=authors)",
    "aplx (fidelity=authors)",
    "aplx (fidelity=authors)",
    "aplx (fidelity=paper)",
    "authors' PyTorch",
    "authors' PyTorch",
  ]
  entries = screen.summarise(screens)
  authors = entries[(str(aplx_root), "aplx (fidelity=authors)", ("asym", 0.4), ("ce", ""))]
  assert len(authors["done"]) == 2 and len(authors["not_done"]) == 1
  assert authors["lost"] == [[5], []] and authors["first_lost"] == {5: [3]}
  assert authors["acc"]["mean"] == pytest.approx(85.0) and authors["acc"]["std"] == pytest.approx(5.0)
  torch = entries[(str(torch_root), "authors' PyTorch", ("asym", 0.4), ("ce", ""))]
  assert len(torch["done"]) == 1 and len(torch["not_done"]) == 1 and torch["first_lost"] == {5: [2]}

  text = screen.screen([str(aplx_root), str(torch_root), str(aplx_root) + "_none"])
  rows = {
    tuple(c.strip() for c in l.strip("|").split("|"))[:4]: l for l in text.splitlines() if l.startswith("| `")
  }
  line = rows[(f"`{aplx_root}`", "aplx (fidelity=authors)", "asym 0.4", "CE")]
  assert line.endswith("| 2 | 1/2 | 5: 1 (first lost at epoch 3) | 85.00 ± 5.00 | 5 | 1 |")
  line = rows[(f"`{aplx_root}`", "aplx (fidelity=paper)", "asym 0.4", "CE")]
  assert line.endswith("| 1 | 1/1 | 7: 1 (first lost at epoch 4) | 85.00 | 5 | 0 |")
  line = rows[(f"`{torch_root}`", "authors' PyTorch", "asym 0.4", "CE")]
  assert line.endswith("| 1 | 1/1 | 5: 1 (first lost at epoch 2) | 80.00 | 5 | 1 |")
  assert "on its way to max_steps 2345" in text and "epoch 3/5" in text
  assert f"No run under `{aplx_root}_none`." in text
  # Side by side per seed: a column per code, a row per seed, the lost (or lowest) class of each run.
  by_seed = text[text.index("## Per seed, side by side") :]
  assert (
    f"| seed | aplx (fidelity=authors) (`{aplx_root}`) | aplx (fidelity=paper) (`{aplx_root}`) |" in by_seed
  )
  assert "| 0 (noise 0) | 80.00, **lost 5** | — | 80.00, **lost 5** |" in by_seed
  assert "| 1 (noise 0) | 90.00, lowest 0: 97.0% | — | — |" in by_seed
  assert "| 3 (noise 0) | — | 85.00, **lost 7** | — |" in by_seed
  assert "| 2 (noise 0)" not in by_seed  # Not done in any code.
  # From the command line, with --root repeated.
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.screen", f"--root={aplx_root}", f"--root={torch_root}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0 and proc.stdout == screen.screen([str(aplx_root), str(torch_root)]), (
    proc.stderr[-2000:]
  )


def test_harness_run_dir_being_written_is_a_partial_run(tmp_path):
  workdir = sweep.workdir_for(
    str(tmp_path), {"loss": "ce", "noise": "asym", "rate": 0.4, "seed": 0, "noise_seed": 0}
  )
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write('{"code": "authors-pyt')  # Half written.
  (run,) = report.collect(str(tmp_path))
  assert run.status == sweep.PARTIAL and "does not parse" in run.detail
