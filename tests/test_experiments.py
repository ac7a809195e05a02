"""experiments/: config arguments, the authors' hyperparameters, and the absl entry point end to end."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aplx import losses, models, rundir, train
from experiments import demo, report, sweep
from experiments.configs import cifar10, cifar100, clothing1m, common, mnist, webvision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
  "mnist": mnist,
  "cifar10": cifar10,
  "cifar100": cifar100,
  "webvision": webvision,
  "clothing1m": clothing1m,
}


def _authors_rows():
  with open(os.path.join(REPO, "experiments", "configs", "authors_hparams.csv")) as f:
    return list(csv.DictReader(f))


# ----- Config arguments. ------------------------------------------------------------------------


def test_argument_parsing():
  args = common.parse_arg("loss=nfl+rce,noise=asym,rate=0.4,seed=2,subset=100,epochs=3")
  assert args == {
    "loss": "nfl+rce",
    "noise": "asym",
    "rate": 0.4,
    "seed": 2,
    "noise_seed": None,  # Unset: the noise is drawn from `seed`.
    "subset": 100,
    "epochs": 3,
    "fidelity": "authors",
  }
  assert common.parse_arg("seed=2,noise_seed=0")["noise_seed"] == 0


@pytest.mark.parametrize(
  "arg, message",
  [
    ("lr=0.1", "Bad config argument 'lr=0.1'.*keys"),
    ("loss", "Bad config argument 'loss'"),
    ("rate=high", "rate='high' must be a float"),
    ("rate=1.5", "rate=1.5: a noise rate must be in \\[0, 1\\]"),
    ("noise=gaussian", "noise='gaussian': use one of"),
    ("fidelity=exact", "fidelity='exact': use 'authors'"),
  ],
)
def test_bad_arguments_are_clear_errors(arg, message):
  with pytest.raises(ValueError, match=message):
    mnist.get_config(arg)


def test_unknown_loss_is_reported_by_the_registry():
  config = mnist.get_config("loss=nce+xyz")
  with pytest.raises(ValueError, match="Unknown loss 'nce\\+xyz'. Valid names"):
    losses.get(config.loss.name, **config.loss.params)


# ----- Every configured loss builds, with the authors' numbers. ----------------------------------


@pytest.mark.parametrize("dataset", sorted(CONFIGS))
@pytest.mark.parametrize("fidelity", ["authors", "paper"])
def test_every_configured_loss_builds(dataset, fidelity):
  module = CONFIGS[dataset]
  z, y = np.zeros((2, 50), np.float32), np.array([0, 1], np.int32)
  for loss in [*module.LOSSES, *common.ANL_LOSSES]:
    config = module.get_config(f"loss={loss},noise=none,fidelity={fidelity}")
    fn = losses.get(config.loss.name, **config.loss.params)  # Validates every parameter.
    key = {"key": jax.random.key(0)} if fn.needs_key else {}
    assert fn(z, y, **key).shape == (2,), (dataset, loss)


# The authors' file stems that name another aplx loss, and the rows where the file builds a class other
# than its name says (aplx builds what the name says; docs/fidelity.md).
_STEM_TO_LOSS = {"focal": "fl"}
_MISNAMED = {
  ("cifar10", "asym", "ngce+rce"),
  ("cifar100", "sym", "ngce+rce"),
  ("cifar100", "asym", "ngce+rce"),
}


def test_configs_carry_the_authors_hyperparameters():
  """Cross-checks the configs against every YAML file of the authors' `configs/` tree (sym, asym and
  WebVision), transcribed in authors_hparams.csv."""
  checked = 0
  for row in _authors_rows():
    loss = _STEM_TO_LOSS.get(row["config_name"], row["config_name"])
    noise = {"real": "none"}.get(row["noise"], row["noise"])
    where = (row["dataset"], row["noise"], row["config_name"])
    c = CONFIGS[row["dataset"]].get_config(f"loss={loss},noise={noise},rate=0.4")
    p = c.loss.params
    for key in ("alpha", "beta", "gamma", "q"):
      if row[key]:
        assert p[key] == pytest.approx(float(row[key])), (where, key)
    if row["a"]:
      assert p["log_zero"] == pytest.approx(float(row["a"])), where
    elif where not in _MISNAMED:
      assert "log_zero" not in p or "rce" in loss, where
    assert p.get("scale", 1.0) == pytest.approx(float(row["scale"] or 1.0)), where
    if loss == "nlnl":
      assert f"ln_neg={p['num_negatives']}" in row["notes"], where
    assert c.optim.lr == pytest.approx(float(row["lr"])), where
    assert c.optim.weight_decay == pytest.approx(float(row["weight_decay"])), where
    assert c.optim.nesterov == (row["nesterov"] == "True"), where
    assert c.optim.grad_clip == pytest.approx(float(row["grad_clip"])), where
    assert c.epochs == int(row["epochs"]), where
    assert c.batch_size == int(row["batch_size"]), where
    if row["eta_min"]:
      assert c.optim.eta_min == pytest.approx(float(row["eta_min"])), where
    checked += 1
  assert checked == 102  # Every file.


def test_configs_carry_the_anl_hyperparameters():
  """Cross-checks anl-ce / anl-fl against the official ANL configs (anl_hparams.csv)."""
  with open(os.path.join(REPO, "experiments", "configs", "anl_hparams.csv")) as f:
    rows = list(csv.DictReader(f))
  models = {
    "toymodel4l": "mnist_cnn",
    "toymodel8l": "cifar10_cnn",
    "resnet34": "resnet34",
    "resnet50": "resnet50_imagenet",
  }
  for row in rows:
    loss = row["loss"].replace("_", "-")
    c = CONFIGS[row["dataset"]].get_config(f"loss={loss},noise=sym,rate=0.4")
    where = (row["dataset"], loss)
    p = c.loss.params
    assert (p.alpha, p.beta, p.min_prob) == (
      float(row["alpha"]),
      float(row["beta"]),
      float(row["min_prob"]),
    ), where
    assert p.get("gamma") == (float(row["gamma"]) if row["gamma"] else None), where
    assert c.optim.l1 == float(row["delta"]), where
    assert (c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (
      float(row["lr"]),
      float(row["momentum"]),
      float(row["weight_decay"]),
    ), where
    assert c.optim.nesterov == (row["nesterov"] == "true"), where
    assert (c.epochs, c.batch_size, c.optim.grad_clip) == (int(row["epochs"]), int(row["batch_size"]), 5.0), (
      where
    )
    if row["eta_min"]:
      assert c.optim.eta_min == float(row["eta_min"]), where
    assert c.optim.schedule == ("cosine" if row["schedule"].startswith("cosine") else "exponential")
    assert c.model.name == models[row["model"]], where
  assert len(rows) == 7


def test_authors_fidelity_options_reach_the_losses():
  p = mnist.get_config("loss=nfl+mae").loss.params
  assert p["halved"] is True and p["detach_focal_factor"] is True
  p = cifar10.get_config("loss=nce+rce").loss.params
  assert p["log_zero"] == pytest.approx(losses.AUTHORS_LOG_ZERO) and p["min_prob"] == 1e-7
  assert mnist.get_config("loss=ce,noise=asym,rate=0.4").noise.options.to_dict() == {"method": "transition"}
  assert cifar10.get_config("loss=ce,noise=asym,rate=0.4").noise.options.sequential is True


def test_paper_fidelity_uses_the_paper_numbers():
  c = mnist.get_config("loss=nce+rce,fidelity=paper")
  assert (c.loss.params.beta, c.optim.weight_decay) == (100.0, 1e-3)
  # aplx's defaults, the paper's: A = -4, no probability clamp.
  assert (c.loss.params.log_zero, c.loss.params.min_prob) == (-4.0, None)
  assert cifar100.get_config("loss=nce+mae,fidelity=paper").model.name == "resnet34"
  assert cifar100.get_config("loss=nce+mae,fidelity=paper").loss.params.beta == 0.1
  assert cifar100.get_config("loss=nce+mae").model.name == "resnet50"


# ----- Every loss parameter and the model dtype are config fields. -------------------------------


def _loss_and_grad(fn, z, y):
  kw = {"key": jax.random.key(3)} if fn.needs_key else {}
  return jax.value_and_grad(lambda z: fn(z, y, **kw).sum())(z)


@pytest.mark.parametrize("name", losses.names())
def test_loss_params_hold_every_parameter_and_the_defaults_change_nothing(name):
  """loss.params lists every parameter of the loss, so any can be overridden; spelling out the
  defaults computes the same loss (values and gradients) as leaving them out."""
  z = jax.random.normal(jax.random.key(0), (6, 10), jnp.float32) * 3
  y = jnp.arange(6) % 10
  defaults = rundir.loss_defaults(name)
  assert "scale" in defaults or "alpha" in defaults  # Not vacuous: every loss has a weight.
  chex.assert_trees_all_equal(
    _loss_and_grad(losses.get(name, **defaults), z, y), _loss_and_grad(losses.get(name), z, y)
  )
  for dataset, module in CONFIGS.items():
    params = module.get_config(f"loss={name},noise=sym,rate=0.4").loss.params
    assert set(defaults) <= set(params), dataset
    preset = {k: v for k, v in params.items() if k not in defaults or v != defaults[k]}
    if not preset:
      continue  # All defaults: checked above.
    chex.assert_trees_all_equal(
      _loss_and_grad(losses.get(name, **params), z, y), _loss_and_grad(losses.get(name, **preset), z, y)
    )


def test_loss_params_and_model_dtype_are_overridable_like_any_field():
  """`--config.<path>` (as experiments.main parses it, `common.override`) for a loss parameter the
  setting does not preset, an off-by-default clamp, and the model's compute dtype."""
  config = mnist.get_config("loss=nce+agce")  # Not in the authors' table: every parameter a default.
  config = common.override(
    config,
    {"loss.params.beta": "10", "loss.params.q": "2", "model.kwargs.dtype": "bfloat16", "optim.lr": "1"},
  )
  assert (config.loss.params.beta, config.loss.params.q, config.optim.lr) == (10.0, 2.0, 1.0)
  assert isinstance(config.loss.params.beta, float)
  losses.get(config.loss.name, **config.loss.params)
  min_prob = common.override(mnist.get_config("loss=gce,fidelity=paper"), {"loss.params.min_prob": "1e-6"})
  assert min_prob.loss.params.min_prob == 1e-6
  # The dtype reaches the model's computation (traced, not run: the convolutions compute in bf16).
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  for dtype, has_bf16 in (("float32", False), ("bfloat16", True)):
    kwargs = common.override(mnist.get_config(), {"model.kwargs.dtype": dtype}).model.kwargs
    program = jax.make_jaxpr(lambda x: models.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0), **kwargs)(x))
    assert ("bf16" in str(program(x))) == has_bf16, dtype


# ----- The entry point, as a user runs it. -------------------------------------------------------


def _main(*args, timeout=600):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # One CPU device, as on a laptop.
  return subprocess.run(
    [sys.executable, "-m", "experiments.main", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_script_trains_with_overrides(mnist_data_dir, tmp_path):
  workdir = tmp_path / "run"
  r = _main(
    "--config",
    "experiments/configs/mnist.py:loss=nce+rce,noise=sym,rate=0.2,subset=1024,epochs=2",
    f"--config.data_dir={mnist_data_dir}",
    "--config.optim.lr=0.02",
    "--config.batch_size=64",
    f"--workdir={workdir}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  with open(workdir / "config.json") as f:
    saved = json.load(f)
  assert saved["optim"]["lr"] == 0.02 and saved["batch_size"] == 64
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(l) for l in f]
  assert [r["epoch"] for r in records] == [1, 2]
  assert records[-1]["test_acc"] > 0.8, records  # 1,024 images, 20% noise: clearly learning.
  assert "ETA" in r.stderr and "test acc" in r.stderr  # Readable progress.
  assert "orbax" not in r.stderr  # Library INFO chatter is filtered.


@pytest.mark.parametrize(
  "args, message",
  [
    (["--config", "experiments/configs/mnist.py:loss=ce"], "--workdir is required"),
    (["--config", "experiments/configs/mnist.py:rate=2", "--workdir=/tmp/x"], "rate=2.0: a noise rate"),
    (
      ["--config", "experiments/configs/mnist.py", "--config.optim.learning_rate=1", "--workdir=/tmp/x"],
      "config.optim has no field 'learning_rate'; its fields are: decay_rate, eta_min",
    ),
    (
      [
        "--config",
        "experiments/configs/mnist.py:loss=nce+rce",
        "--config.loss.params.bta=1",
        "--workdir=/tmp/x",
      ],
      "config.loss.params has no field 'bta'; its fields are: alpha, beta, log_zero, min_prob.",
    ),
    (["--config", "experiments/configs/mnist.py:epochs=0", "--workdir=/tmp/x"], "epochs=0: must be >= 1"),
    (["--config", "experiments/configs/mnist.py:loss=nce+xyz", "--workdir=/tmp/x"], "Unknown loss 'nce+xyz'"),
    (["--no_such_flag"], "no_such_flag"),
    (["stray"], "Unexpected arguments"),
  ],
)
def test_bad_command_lines_fail_clearly(args, message):
  r = _main(*args, timeout=120)
  assert r.returncode != 0
  assert message in r.stderr + r.stdout, r.stderr[-2000:]
  assert "Traceback" not in r.stderr, r.stderr[-2000:]


def test_sweep_over_a_config_path_trains_with_the_override(mnist_data_dir, tmp_path):
  """One tiny real run from `experiments.sweep` with a loss.params axis: the override reaches
  experiments.main (config.json, the log's command), and the sweep's expected config agrees with what
  experiments.main wrote (rerun: finished, not a conflict)."""
  root = tmp_path / "runs"
  grid = "loss=nce+rce;noise=sym;rate=0.2;seed=0;loss.params.beta=2"
  fixed = f"subset=256,epochs=1,data_dir={mnist_data_dir}"
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, "-m", "experiments.sweep", "--config_file", "experiments/configs/mnist.py"]
  cmd += ["--grid", grid, "--fixed", fixed, "--root", str(root)]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  workdir = root / "sym0.2" / "nce+rce" / "loss.params.beta=2" / "seed0"
  log = (root / "sym0.2" / "nce+rce" / "loss.params.beta=2" / "seed0.log").read_text()
  assert r.returncode == 0, r.stdout[-2000:] + log[-3000:]
  params = rundir.read_config(workdir)["loss"]["params"]
  assert (params["beta"], params["alpha"]) == (2.0, 1.0)  # MNIST's beta is 10; alpha stays.
  assert f"--config.loss.params.beta=2 --config.data_dir={mnist_data_dir} --workdir" in log  # Grid, fixed.
  assert [m["epoch"] for m in rundir.read_metrics(workdir)] == [1]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and "1 finished already, 0 conflicts" in r.stdout, r.stdout[-2000:]


def test_sigterm_stops_within_a_few_steps_exits_75_and_resumes(mnist_data_dir, tmp_path):
  """A preempted run checkpoints promptly, exits with the documented status, and resumes to the end."""
  workdir = tmp_path / "run"
  args = [
    "--config",
    "experiments/configs/mnist.py:loss=ce,noise=sym,rate=0.2,subset=2048,epochs=1",
    f"--config.data_dir={mnist_data_dir}",
    "--config.log_every_steps=4",
    f"--workdir={workdir}",
  ]
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.main", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
  )
  lines = []
  for line in proc.stderr:  # Signal once training is under way (the first progress line, step 4).
    lines.append(line)
    if "step 4/16" in line:
      proc.send_signal(signal.SIGTERM)
      signalled = time.time()
      break
  lines.extend(proc.stderr)
  assert proc.wait(timeout=120) == rundir.PREEMPTED_EXIT_CODE, "".join(lines)[-3000:]
  exit_seconds = time.time() - signalled
  status = rundir.read_status(workdir)
  assert status["status"] == rundir.PREEMPTED
  # Host at most MAX_STEPS_AHEAD steps ahead of the device: the checkpoint lands within a few steps
  # of the signal, not at the end of the epoch (16 steps).
  assert 4 <= status["step"] <= 4 + train.MAX_STEPS_AHEAD + 3, (status, exit_seconds)
  r = _main(*args)
  assert r.returncode == 0, r.stderr[-3000:]
  assert rundir.read_status(workdir)["status"] == rundir.FINISHED
  assert [m["epoch"] for m in rundir.read_metrics(workdir)] == [1]


@pytest.mark.slow  # Two training runs, by design of the demo (~1 min).
def test_demo_reports_total_progress_and_where_its_outputs_are(mnist_data_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("APLX_DATA_DIR", mnist_data_dir)
  monkeypatch.setattr(demo, "ARG", "noise=sym,rate=0.8,subset=1024,epochs=1")
  history = demo.run(str(tmp_path))
  out = capsys.readouterr().out
  assert "Demo: 2 runs one after the other (ce, nce+rce)" in out
  assert "=== run 1/2: ce" in out and "=== run 2/2: nce+rce" in out and "demo ETA" in out
  with open(tmp_path / "comparison.md") as f:
    table = f.read()
  assert table.startswith("Clean test accuracy (%)") and f"{100 * history['ce'][-1]['test_acc']:.2f}" in table
  assert f"tensorboard --logdir {tmp_path}" in out and str(tmp_path / "comparison.md") in out


# ----- experiments.report --metric: WebVision's Table 5 on the ILSVRC2012 validation images. ------


def _webvision_run(root, loss, seed, records):
  """A finished webvision workdir at the sweep's layout, as the trainer writes one (no train_acc_clean:
  real noise). `records` are per epoch (test_acc, test_acc_imagenet_val or None, val_acc_noisy or
  None); None leaves the key out, as a dataset prepared without that split does."""
  workdir = sweep.workdir_for(str(root), {"loss": loss, "noise": "none", "rate": 0.0, "seed": seed})
  os.makedirs(workdir)
  config = {
    "dataset": "webvision",
    "subset": None,
    "val_fraction": 0.0 if records[0][2] is None else 0.1,
    "seed": seed,
    "epochs": len(records),
    "noise": {"type": "none", "rate": 0.0, "seed": seed},
    "loss": {"name": loss, "params": {}},
  }
  rundir.write_config(workdir, config)
  lines = []
  for epoch, (test, imagenet, val) in enumerate(records, 1):
    line = {"epoch": epoch, "step": 10 * epoch, "train_loss": 1.0, "train_acc_noisy": 0.5, "test_acc": test}
    if imagenet is not None:
      line["test_acc_imagenet_val"] = imagenet
    if val is not None:
      line["val_acc_noisy"] = val
    lines.append(line)
  rundir.write_metrics(workdir, lines)
  return workdir


def _report_rows(text):
  """{row label: cells} of the first markdown table in `text`."""
  rows = {}
  for line in text.splitlines():
    if line.startswith("| ") and not line.startswith("| loss"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      rows.setdefault(cells[0], cells[1:])
  return rows


def test_report_metric_picks_that_key_for_the_table_and_the_figure(tmp_path):
  root = tmp_path / "runs"
  # Last epochs: test_acc (WebVision val) 0.70 / 0.72 / 0.50, ILSVRC12 val 0.60 / 0.64 / 0.55.
  _webvision_run(root, "ce", 0, [(0.3, 0.2, None), (0.70, 0.60, None)])
  _webvision_run(root, "ce", 1, [(0.3, 0.2, None), (0.72, 0.64, None)])
  _webvision_run(root, "gce", 0, [(0.3, 0.2, None), (0.50, 0.55, None)])
  text = report.report(str(root), metric="test_acc_imagenet_val")
  assert "## webvision: last-epoch test_acc_imagenet_val (%)" in text
  assert "Accuracies are the runs' test_acc_imagenet_val (metrics.jsonl), not test_acc" in text
  rows = _report_rows(text)
  assert rows["CE"][:3] == ["**62.00 ± 2.00** (2)", "58.88", "+3.12"]  # Table 5: CE 58.88, no std.
  assert rows["GCE"][:3] == ["**55.00** (1)", "53.68", "+1.32"]
  # The default is the dataset's test split, as before.
  text = report.report(str(root))
  assert "## webvision: last-epoch clean test accuracy (%)" in text and "Accuracies are" not in text
  assert _report_rows(text)["CE"][0] == "**71.00 ± 1.00** (2)"
  # The per-epoch figure draws the same key (memorisation needs clean train labels: none here).
  paths = report.write_plots(report.collect(str(root)), str(tmp_path / "fig"), (), "test_acc_imagenet_val")
  assert [os.path.basename(p) for p in paths] == ["webvision_e2_none0_test_acc_imagenet_val.png"]


def test_report_metric_with_select_val(tmp_path):
  root = tmp_path / "runs"
  # Best validation accuracy at epoch 2 (seed 0) and epoch 1 (seed 1): ILSVRC12 val 0.61 and 0.52,
  # test_acc there 0.91 and 0.82; last epochs 0.43 and 0.44 on ILSVRC12 val.
  _webvision_run(root, "ce", 0, [(0.81, 0.51, 0.3), (0.91, 0.61, 0.5), (0.93, 0.43, 0.4)])
  _webvision_run(root, "ce", 1, [(0.82, 0.52, 0.6), (0.92, 0.62, 0.2), (0.94, 0.44, 0.1)])
  text = report.report(str(root), select="val", metric="test_acc_imagenet_val")
  assert "## webvision: test_acc_imagenet_val (%) at the epoch of best validation accuracy" in text
  assert "last: the same runs' last-epoch test_acc_imagenet_val." in text
  ce = _report_rows(text)["CE"]
  assert ce[0] == "**56.50 ± 4.50** (2)" and ce[1] == "43.50 ± 0.50"
  assert "CE, clean: val 55.00, epochs 2, 1" in text
  ce = _report_rows(report.report(str(root), select="val"))["CE"]  # The default: test_acc there.
  assert ce[:2] == ["**86.50 ± 4.50** (2)", "93.50 ± 0.50"]


def test_report_missing_metric_is_a_clear_error(tmp_path):
  root = tmp_path / "runs"
  _webvision_run(root, "ce", 0, [(0.70, 0.60, None), (0.71, 0.61, None)])  # Another protocol: 2 epochs.
  lacking = _webvision_run(root, "gce", 0, [(0.50, None, None)])  # Prepared without --imagenet_val_dir.
  unfinished = _webvision_run(root, "sce", 0, [(0.50, None, None), (0.60, None, None)])
  rundir.write_metrics(unfinished, rundir.read_metrics(unfinished)[:1])  # Epoch 1/2: not counted.
  message = (
    f"test_acc_imagenet_val is not in {os.path.join(lacking, 'metrics.jsonl')} (it has train_loss, "
    "train_acc_noisy, test_acc; 1 of 2 finished runs lack it): was the dataset prepared with "
    "--imagenet_val_dir? Or pick one of those with --metric."
  )
  with pytest.raises(ValueError) as error:
    report.report(str(root), metric="test_acc_imagenet_val")
  assert str(error.value) == message
  with pytest.raises(ValueError, match="test_acc_clean_val is not in .* 2 of 2 finished runs lack it"):
    report.report(str(root), select="val", metric="test_acc_clean_val")
  # From the command line: the message, no traceback.
  r = subprocess.run(
    [sys.executable, "-m", "experiments.report", f"--root={root}", "--metric=test_acc_imagenet_val"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
