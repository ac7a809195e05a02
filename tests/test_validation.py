"""The validation split (config.val_fraction): held out by example id, evaluated every epoch; and
experiments.report --select val on synthetic run directories."""

import json
import os

import numpy as np
import pytest

from aplx import data, rundir, train
from experiments import report, sweep
from experiments.configs import mnist as mnist_config

# ----- Which examples are held out. -----------------------------------------------------------------


def test_held_out_ids_are_a_pure_function_of_seed_and_id():
  ids = np.arange(60000)
  full = data.validation_mask(ids, 0.2, seed=3)
  # Any subset, in any order (another subset, another process's share): the same decision per id.
  some = np.random.default_rng(0).permutation(ids)[:5000]
  np.testing.assert_array_equal(data.validation_mask(some, 0.2, seed=3), full[some])
  assert abs(full.mean() - 0.2) < 0.01  # 60,000 draws of probability 0.2: std 0.0016.
  other = data.validation_mask(ids, 0.2, seed=4)
  assert 0.25 < (full != other).mean() < 0.39  # Independent splits differ on 2 * 0.2 * 0.8 = 32%.
  # Folds of width 1/n partition the ids (cross-validation), fold 0 being the plain split; n = 49
  # checks the last window, whose float end 49 * (1 / 49) falls short of 1.
  folds = np.stack([data.validation_mask(ids, 0.2, seed=3, fold=k) for k in range(5)])
  np.testing.assert_array_equal(folds.sum(0), np.ones(ids.size))
  np.testing.assert_array_equal(folds[0], full)
  assert 49 * (1 / 49) < 1.0
  np.testing.assert_array_equal(
    sum(data.validation_mask(ids, 1 / 49, seed=3, fold=k).astype(int) for k in range(49)), np.ones(ids.size)
  )
  # 1/n typed as a decimal, short of 1/n (0.3333) or past it (0.1429): still n folds that cover every id
  # (ids 0..199,999: 22 of them fell between the folds of 0.3333 before FOLD_SLACK).
  many = np.arange(200_000)
  for fraction, n in ((0.3333, 3), (0.1429, 7)):
    cover = sum(data.validation_mask(many, fraction, seed=3, fold=k).astype(int) for k in range(n))
    np.testing.assert_array_equal(cover, np.ones(many.size), err_msg=f"{fraction}")
  for fraction, fold, message in ((1.0, 0, r"in \[0, 1\)"), (-0.1, 0, r"in \[0, 1\)"), (0.3, 3, "folds are")):
    with pytest.raises(ValueError, match=message):
      data.validation_mask(ids, fraction, seed=0, fold=fold)


def _dataset(noisy_shift: int, n: int = 600) -> data.Dataset:
  rng = np.random.default_rng(0)
  clean = rng.integers(0, 10, n).astype(np.int32)
  return data.Dataset(
    name="mnist",
    num_classes=10,
    image_shape=(28, 28, 1),
    train_images=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
    train_ids=np.sort(rng.choice(60000, n, replace=False)).astype(np.int32),
    train_clean_labels=clean,
    train_noisy_labels=(clean + noisy_shift) % 10,
    test_images=np.zeros((5, 28, 28, 1), np.uint8),
    test_labels=np.zeros(5, np.int32),
    mean=(0.1307,),
    std=(0.3081,),
    augment="none",
    noise={},
    extra={"coarse_label": clean // 2},
  )


def test_hold_out_moves_examples_by_id_independent_of_the_noise():
  ds = _dataset(noisy_shift=1)
  split = data.hold_out(ds, 0.25, seed=7)
  expected = data.validation_mask(ds.train_ids, 0.25, seed=7)
  np.testing.assert_array_equal(split.val_ids, ds.train_ids[expected])
  np.testing.assert_array_equal(split.train_ids, ds.train_ids[~expected])
  assert split.num_val == expected.sum() > 100 and split.num_train == ds.num_train - split.num_val
  # Every row keeps its own labels, image and extra fields.
  np.testing.assert_array_equal(split.val_noisy_labels, ds.train_noisy_labels[expected])
  np.testing.assert_array_equal(split.val_clean_labels, ds.train_clean_labels[expected])
  np.testing.assert_array_equal(split.val_images, ds.train_images[expected])
  np.testing.assert_array_equal(split.extra["coarse_label"], ds.extra["coarse_label"][~expected])
  # Other label noise, same held-out examples.
  np.testing.assert_array_equal(data.hold_out(_dataset(noisy_shift=3), 0.25, seed=7).val_ids, split.val_ids)
  assert data.hold_out(ds, 0.0, seed=7) is ds
  with pytest.raises(ValueError, match="already has a validation split"):
    data.hold_out(split, 0.25, seed=7)
  # Two processes read halves of each global eval batch of the val split: together the same rows.
  one = list(data.eval_batches(split, batch_size=64, split="val"))
  two = [
    list(data.eval_batches(split, batch_size=64, split="val", process_index=p, process_count=2))
    for p in (0, 1)
  ]
  for k in ("id", "label", "noisy_label", "mask"):
    both = np.concatenate([np.concatenate([a[k], b[k]]) for a, b in zip(*two)])
    np.testing.assert_array_equal(both, np.concatenate([b[k] for b in one]))
  assert sum(b["mask"].sum() for b in one) == split.num_val
  with pytest.raises(ValueError, match="no validation split"):
    next(data.eval_batches(ds, batch_size=64, split="val"))


# ----- The trainer. -----------------------------------------------------------------------------------


def _tiny_config(data_dir, **overrides):
  config = mnist_config.get_config("loss=nce+rce,noise=sym,rate=0.4,subset=1024,epochs=1")
  config.data_dir = data_dir
  config.eval_batch_size = 2000
  config.log_every_steps = 4
  for k, v in overrides.items():
    config[k] = v
  return config


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"val_fraction": 1.0}, r"config.val_fraction=1.0: .* in \[0, 1\)"),
    ({"val_fraction": -0.1}, r"config.val_fraction=-0.1: .* in \[0, 1\)"),
    ({"val_fraction": 0.2, "val_fold": 5}, r"config.val_fold=5: with val_fraction=0.2 the folds are 0 .. 4"),
    ({"val_fold": 1}, r"config.val_fold=1: needs config.val_fraction > 0"),
  ],
)
def test_bad_validation_split_is_rejected_before_data_or_workdir(tmp_path, overrides, message):
  workdir = tmp_path / "run"
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(_tiny_config("/nonexistent/data_dir", **overrides), str(workdir))
  assert not workdir.exists()


@pytest.mark.parametrize(
  "fraction, message",
  [
    (1e-7, r"val_fraction=1e-07 .* holds out none of the 1024 training examples"),
    (0.95, r"val_fraction=0.95 leaves \d+ of the 1024 training examples, fewer than config.batch_size=128"),
  ],
)
def test_validation_split_that_leaves_nothing_is_a_config_error(mnist_data_dir, fraction, message):
  with pytest.raises(train.ConfigError, match=message):
    train.load_data(_tiny_config(mnist_data_dir, val_fraction=fraction))


def test_validation_split_shrinks_training_and_is_evaluated_every_epoch(mnist_data_dir, tmp_path):
  config = _tiny_config(mnist_data_dir, val_fraction=0.2, epochs=2)
  history = train.train_and_evaluate(config, str(tmp_path))
  ds = train.load_data(config)
  everything = train.load_data(_tiny_config(mnist_data_dir))
  held_out = data.validation_mask(everything.train_ids, 0.2, seed=config.seed)
  np.testing.assert_array_equal(ds.val_ids, everything.train_ids[held_out])
  np.testing.assert_array_equal(ds.val_noisy_labels, everything.train_noisy_labels[held_out])
  assert not set(ds.val_ids) & set(ds.train_ids) and ds.num_train == 1024 - held_out.sum()
  # Authors' loaders (drop_last=False), batch 128 on 8 devices: 1024 images are 8 steps an epoch; the
  # ~820 left are 6 full steps and a partial one.
  steps = ds.num_train // 128 + int(ds.num_train % 128 >= 8)
  assert steps < 8 and [r["step"] for r in history] == [steps, 2 * steps]
  for record in rundir.read_metrics(str(tmp_path)):
    for key in ("val_acc_noisy", "val_acc_clean"):
      assert abs(record[key] * ds.num_val - round(record[key] * ds.num_val)) < 1e-6  # k / num_val
  # 40% of the held-out labels are wrong: a model that learns the clean signal agrees less with them.
  last = history[-1]
  assert last["val_acc_clean"] > 0.6 and last["val_acc_noisy"] < last["val_acc_clean"] - 0.1


def test_run_made_before_the_validation_split_resumes(mnist_data_dir, tmp_path):
  """config.json and checkpoints without val_fraction / val_fold (as written before they existed):
  resuming with today's config (val_fraction 0.0) is no config conflict."""
  train.train_and_evaluate(_tiny_config(mnist_data_dir, max_steps=4), str(tmp_path))
  # The trainer records every field (its defaults filled in): remove the two as older versions did
  # (max_steps=4 stops before the first checkpoint; a checkpoint's metadata holds its config too).
  metas = [tmp_path / "config.json", *tmp_path.glob("checkpoints/*/meta/metadata")]
  for path in metas:
    saved = json.loads(path.read_text())
    config = saved.get("config", saved)  # A checkpoint's metadata holds the config under "config".
    del config["val_fraction"], config["val_fold"]
    path.write_text(json.dumps(saved))
  saved = rundir.read_config(str(tmp_path))
  assert "val_fraction" not in saved and "val_fold" not in saved
  history = train.train_and_evaluate(_tiny_config(mnist_data_dir), str(tmp_path))
  assert [r["epoch"] for r in history] == [1] and "val_acc_noisy" not in history[0]
  assert rundir.read_status(str(tmp_path))["status"] == rundir.FINISHED


# ----- experiments.report --select val. ------------------------------------------------------------


def _run(root, loss, seed, records, *, variant=None, rate=0.8):
  """A finished workdir at the sweep's layout; `records` are (test_acc, val_acc_noisy, val_acc_clean),
  one per epoch (val None: a run without a validation split)."""
  overrides = dict(item.split("=") for item in variant.split(",")) if variant else None
  workdir = sweep.workdir_for(
    str(root), {"loss": loss, "noise": "sym", "rate": rate, "seed": seed}, overrides
  )
  os.makedirs(workdir)
  config = {
    "dataset": "mnist",
    "subset": 10000,
    "val_fraction": 0.0 if records[0][1] is None else 0.1,
    "seed": seed,
    "epochs": len(records),
    "noise": {"type": "sym", "rate": rate, "seed": seed},
    "loss": {"name": loss, "params": {}},
  }
  rundir.write_config(workdir, config)
  lines = []
  for epoch, (test, noisy, clean) in enumerate(records, 1):
    line = {"epoch": epoch, "step": 10 * epoch, "train_acc_noisy": 0.1, "train_acc_clean": 0.2}
    line["test_acc"] = test
    if noisy is not None:
      line |= {"val_acc_noisy": noisy, "val_acc_clean": clean}
    lines.append(line)
  rundir.write_metrics(workdir, lines)
  return workdir


def _rows(text, title_part):
  """{row label: cells} of the table whose title contains `title_part`."""
  block = text[text.index(title_part) :]
  rows = {}
  for line in block.splitlines()[1:]:
    if line.startswith("## "):
      break
    if line.startswith("| ") and not line.startswith("| loss"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      rows[cells[0]] = cells[1:]
  return rows


def test_best_epoch_is_the_highest_validation_accuracy_earliest_on_ties():
  metrics = [
    {"epoch": 1, "val_acc_noisy": 0.3, "val_acc_clean": 0.6},
    {"epoch": 2, "val_acc_noisy": 0.5, "val_acc_clean": 0.5},
    {"epoch": 3, "val_acc_noisy": 0.5, "val_acc_clean": 0.7},
    {"epoch": 4, "val_acc_noisy": 0.4, "val_acc_clean": 0.7},
  ]
  assert report.best_epoch(metrics, "val_acc_noisy")["epoch"] == 2
  assert report.best_epoch(metrics, "val_acc_clean")["epoch"] == 3
  assert report.best_epoch([{"epoch": 1, "test_acc": 0.5}], "val_acc_noisy") is None


def test_report_selects_the_epoch_and_the_variant_by_validation_accuracy(tmp_path):
  root = tmp_path / "runs"
  # CE, no variants: epoch 2 by the noisy labels (tie with 3: the earliest; test 20 and 30), epoch 1 by
  # the clean labels (tie with 3; test 10 and 20); last epoch 40 and 50.
  for seed in (0, 1):
    s = seed / 10
    _run(root, "ce", seed, [(0.1 + s, 0.3, 0.7), (0.2 + s, 0.5, 0.5), (0.4 + s, 0.5, 0.7)])
  # NCE+RCE, three variants. Mean best noisy validation accuracy over the seeds: beta=1 (0.50, 0.60) ->
  # 0.55; beta=10 (0.70, 0.30) -> 0.50, the best single seed but not the best mean; none -> 0.20.
  b1 = "loss.params.beta=1"
  _run(root, "nce+rce", 0, [(0.61, 0.40, 0.9), (0.62, 0.50, 0.1), (0.63, 0.45, 0.1)], variant=b1)
  _run(root, "nce+rce", 1, [(0.71, 0.60, 0.1), (0.72, 0.10, 0.1), (0.73, 0.10, 0.1)], variant=b1)
  b10 = "loss.params.beta=10"
  _run(root, "nce+rce", 0, [(0.91, 0.70, 0.1), (0.92, 0.10, 0.1), (0.93, 0.10, 0.1)], variant=b10)
  _run(root, "nce+rce", 1, [(0.81, 0.30, 0.1), (0.82, 0.10, 0.1), (0.83, 0.10, 0.1)], variant=b10)
  _run(root, "nce+rce", 0, [(0.99, 0.20, 0.1)] * 3)
  _run(root, "nce+rce", 1, [(0.99, 0.20, 0.1)] * 3)
  text = report.report(str(root), select="val")
  rows = _rows(text, "at the epoch of best validation accuracy (noisy labels)")
  assert list(rows) == ["CE", "NCE+RCE"]
  assert rows["CE"][0] == "**25.00 ± 5.00** (2)" and rows["CE"][1] == "45.00 ± 5.00"  # last epoch: 40, 50
  # beta=1 chosen; its seeds' selected epochs 2 and 1: test 62 and 71.
  assert rows["NCE+RCE"][0] == "**66.50 ± 4.50** (2) [loss.params.beta=1]"
  assert rows["NCE+RCE"][1] == "68.00 ± 5.00"  # beta=1's last epochs: 63, 73.
  assert rows["NCE+RCE"][2] == "75.18 ± 1.19" and rows["NCE+RCE"][3] == "-8.68 †"
  assert "NCE+RCE, sym 0.8: `loss.params.beta=1`, val 55.00, epochs 2, 1; of `no override` 20.00 (2)" in text
  assert "`loss.params.beta=10` 50.00 (2)" in text
  assert "the one with the highest validation accuracy averaged over its seeds" in text
  # With the clean labels (an oracle): CE's epoch 1; NCE+RCE beta=1 (mean 0.5 against 0.1).
  text = report.report(str(root), select="val", val_labels="clean")
  rows = _rows(text, "(clean labels)")
  assert rows["CE"][0] == "**15.00 ± 5.00** (2)"
  assert "[loss.params.beta=1]" in rows["NCE+RCE"][0] and "an oracle" in text
  # --select last (the default): one row per variant, last epochs, nothing mixed.
  rows = _rows(report.report(str(root)), "last-epoch clean test accuracy")
  assert list(rows) == ["CE", "NCE+RCE", "NCE+RCE [loss.params.beta=1]", "NCE+RCE [loss.params.beta=10]"]
  assert rows["NCE+RCE [loss.params.beta=10]"][0] == "**88.00 ± 5.00** (2)"
  assert rows["NCE+RCE"][0] == "**99.00 ± 0.00** (2)" and rows["CE"][0] == "45.00 ± 5.00 (2)"
  with pytest.raises(ValueError, match="select='best'"):
    report.report(str(root), select="best")


def test_runs_without_validation_split_are_listed_not_read_as_last(tmp_path):
  root = tmp_path / "runs"
  no_val = _run(root, "ce", 0, [(0.5, None, None), (0.6, None, None)])
  _run(root, "gce", 0, [(0.7, 0.5, 0.5), (0.8, 0.4, 0.4)])
  text = report.report(str(root), select="val")
  # Own tables (another protocol); the CE cell is empty, its last-epoch column too: not read as last.
  assert "| CE | — (no validation split) |  | 47.08 ± 1.15 |  |" in text
  assert "| GCE | **70.00** (1) | 80.00 | 12.77 ± 2.00 | +57.23 † |" in text
  assert "10k-image subset less 10% held out for validation, 2 epochs — not the paper's" in text
  assert f"no validation split: `{no_val}`" in text and "Left out of the means: 1 run" in text
  # A crashed run of a variant (no config.json yet) is read from its path.
  os.makedirs(os.path.join(root, "sym0.8", "gce", "loss.params.q=0.5", "seed0"))
  runs = report.collect(str(root))
  crashed = [(r.loss, r.variant, r.status) for r in runs if r.dataset is None]
  assert crashed == [("gce", "loss.params.q=0.5", "partial")]
  assert report.aggregate(runs, "val")[(("gce", ""), ("sym", 0.8))]["epochs"] == [1]
