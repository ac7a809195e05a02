"""Memorisation and noise-detection diagnostics (aplx.train): counts, AUROC, records, checkpoints."""

import itertools
import json
import os
import types

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aplx import losses, train
from aplx.train import run_log
from experiments.configs import mnist as mnist_config


class _Echo(nnx.Module):
  """Logits = the first 4 pixels (x w, one parameter): the test writes the predictions into the inputs."""

  def __init__(self):
    self.w = nnx.Param(jnp.ones(()))

  def __call__(self, x):
    return x.reshape(x.shape[0], -1)[:, :4] * self.w


def _step_once(batch, num_ids):
  model = _Echo()
  tx = optax.sgd(0.0)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  state = train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=jax.random.PRNGKey(0),
  )
  step = jax.jit(train.make_train_step(graphdef, losses.get("ce"), tx))
  return step(state, batch, train.zero_sums(num_ids))[1]


def test_train_step_counts_memorised_corrected_and_each_examples_loss():
  clean = np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)
  label = np.array([1, 1, 3, 3, 2, 1, 0, 3], np.int32)  # Rows 0, 2, 4, 6 corrupted.
  pred = np.array([1, 1, 2, 0, 3, 1, 0, 3], np.int32)  # 0: memorised, 2: corrected, 4: other, 6: mem.
  ids = np.array([9, 3, 0, 7, 5, 1, 11, 2], np.int32)  # Ids 4, 6, 8, 10 not in the batch.
  logits = 5.0 * np.eye(4, dtype=np.float32)[pred]
  batch = {"image": logits.reshape(8, 2, 2, 1), "label": label, "clean_label": clean, "id": ids}
  sums = _step_once(batch, num_ids=12)
  assert int(sums["corrupted"]) == 4
  assert int(sums["corrupted_memorised"]) == 2  # Rows 0 and 6.
  assert int(sums["corrupted_corrected"]) == 1  # Row 2.
  assert int(sums["uncorrupted_correct"]) == 3  # Rows 1, 5, 7 (row 3 predicted 0, not 3).
  expected = np.full(12, np.nan, np.float32)
  expected[ids] = -jax.nn.log_softmax(logits)[np.arange(8), label]
  np.testing.assert_allclose(sums["example_loss"], expected, rtol=1e-5)
  assert "example_loss" not in _step_once(batch, num_ids=None)  # Off: the five sums only.


def _pairwise_auroc(score, positive):
  pairs = [(p, n) for p, n in itertools.product(score[positive], score[~positive])]
  return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])


def test_loss_auroc_is_the_pairwise_probability_with_ties_as_half():
  rng = np.random.default_rng(0)
  for _ in range(5):
    score = rng.integers(0, 6, 60).astype(np.float32)  # Many ties.
    positive = rng.random(60) < 0.3
    assert run_log.loss_auroc(score, positive) == pytest.approx(_pairwise_auroc(score, positive), abs=1e-12)
  score = np.arange(10.0)
  assert run_log.loss_auroc(score, score >= 7) == 1.0
  assert run_log.loss_auroc(score, score < 3) == 0.0
  assert run_log.loss_auroc(np.ones(10), score < 3) == 0.5
  assert run_log.loss_auroc(score, np.zeros(10, bool)) is None  # No corrupted examples: undefined.


def _fake_ds(noisy, clean, ids):
  return types.SimpleNamespace(
    train_ids=np.asarray(ids), train_noisy_labels=np.asarray(noisy), train_clean_labels=np.asarray(clean)
  )


def test_memorisation_record_fractions_auroc_and_absent_fields():
  ds = _fake_ds(noisy=[1, 1, 3, 3, 2, 1], clean=[0, 1, 2, 3, 0, 1], ids=[4, 0, 1, 2, 3, 5])
  loss = np.array([0.1, 3.0, 0.4, 0.4, 2.0, np.nan], np.float32)  # Id 5 was not trained on (dropped).
  sums = {
    "count": 5,  # Not used: the examples seen are those with a loss.
    "corrupted": 3,
    "corrupted_memorised": 1,
    "corrupted_corrected": 1,
    "uncorrupted_correct": 2,
    "example_loss": jnp.asarray(loss),
  }
  record = run_log.memorisation_record(sums, ds)
  assert record["train_corrupted_fraction"] == 3 / 5
  assert record["train_corrupted_memorised"] == record["train_corrupted_corrected"] == 1 / 3
  assert record["train_corrupted_other"] == 1 / 3  # From the counts: not 1 - 1/3 - 1/3 (0.33...37).
  assert record["train_uncorrupted_correct"] == 1.0 and record["train_uncorrupted_other"] == 0.0
  # Corrupted ids 4, 1, 3 have losses 2.0, 3.0, 0.4; uncorrupted ids 0, 2 have 0.1, 0.4: 5.5 of 6 pairs.
  assert record["train_loss_auroc"] == pytest.approx(5.5 / 6)
  clean_only = run_log.memorisation_record(
    {**sums, "corrupted": 0, "corrupted_memorised": 0, "corrupted_corrected": 0},
    _fake_ds(noisy=[0, 1, 2, 3, 0, 1], clean=[0, 1, 2, 3, 0, 1], ids=[4, 0, 1, 2, 3, 5]),
  )
  assert clean_only["train_corrupted_fraction"] == 0.0
  assert not any(k.startswith("train_corrupted_") and k != "train_corrupted_fraction" for k in clean_only)
  assert "train_loss_auroc" not in clean_only


# ----- In a run: every record, resumable, and old checkpoints. ---------------------------------------


def _config(mnist_data_dir, **overrides):
  config = mnist_config.get_config("loss=ce,noise=sym,rate=0.4,subset=1024,epochs=2")
  config.data_dir = mnist_data_dir
  config.eval_batch_size = 2000
  for k, v in overrides.items():
    config[k] = v
  return config


DIAGNOSTICS = (
  "train_corrupted_fraction",
  "train_corrupted_memorised",
  "train_corrupted_corrected",
  "train_corrupted_other",
  "train_uncorrupted_correct",
  "train_uncorrupted_other",
  "train_loss_auroc",
)


def test_every_record_has_the_diagnostics_and_they_agree_with_the_accuracies(mnist_data_dir, tmp_path):
  history = train.train_and_evaluate(_config(mnist_data_dir), str(tmp_path))
  for r in history:
    assert set(DIAGNOSTICS) <= set(r), r
    assert r["train_corrupted_fraction"] == pytest.approx(0.4 * 9 / 10, abs=0.05)  # Sym: 1 in 10 keeps.
    f = r["train_corrupted_fraction"]
    # Predicted as the noisy label: memorised corrupted + correct uncorrupted; as the clean one: corrected.
    noisy = f * r["train_corrupted_memorised"] + (1 - f) * r["train_uncorrupted_correct"]
    clean = f * r["train_corrupted_corrected"] + (1 - f) * r["train_uncorrupted_correct"]
    assert r["train_acc_noisy"] == pytest.approx(noisy, abs=1e-9)
    assert r["train_acc_clean"] == pytest.approx(clean, abs=1e-9)
  assert history[-1]["train_loss_auroc"] > 0.7  # CE early on: the corrupted examples' loss is high.
  off = train.train_and_evaluate(_config(mnist_data_dir, diagnostics=False), str(tmp_path / "off"))
  assert not set(DIAGNOSTICS) & set(off[-1])
  assert [r["test_acc"] for r in off] == [r["test_acc"] for r in history]  # Diagnostics change nothing.


def test_checkpoint_without_the_diagnostic_sums_resumes(mnist_data_dir, tmp_path, monkeypatch):
  """A mid-epoch checkpoint of an older aplx (the five sums, no description of them in its metadata)
  resumes: the diagnostics restart at the resumed step, with a warning."""
  zero_sums = train.steps.zero_sums
  monkeypatch.setattr(train.steps, "zero_sums", lambda num_ids=None: zero_sums(None))  # Older aplx.
  monkeypatch.setattr(train.PreemptionFlag, "__call__", lambda self, step: step == 5)
  with pytest.raises(train.Preempted, match="step 5"):
    train.train_and_evaluate(_config(mnist_data_dir), str(tmp_path))
  monkeypatch.undo()
  (meta_file,) = [
    p
    for p in (tmp_path / "checkpoints" / "5").rglob("*")
    if p.is_file() and '"sums"' in p.read_text(errors="ignore")
  ]
  meta = json.loads(meta_file.read_text())
  assert set(meta.pop("sums")) == set(train.checkpoint.LEGACY_SUMS)
  meta_file.write_text(json.dumps(meta))
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
  history = train.train_and_evaluate(_config(mnist_data_dir), str(tmp_path))
  assert [r["epoch"] for r in history] == [1, 2]
  assert any("without the running sums corrupted" in w for w in warnings), warnings
  assert set(DIAGNOSTICS) <= set(history[0]) and set(DIAGNOSTICS) <= set(history[1])
  # Epoch 1's diagnostics count its last 3 steps only (384 of 1,024 images), its accuracy all of them:
  # each over its own examples.
  assert history[0]["train_corrupted_fraction"] == pytest.approx(0.36, abs=0.08)


@pytest.mark.parametrize("first", [False, True])
def test_diagnostics_can_be_switched_when_resuming(mnist_data_dir, tmp_path, monkeypatch, first):
  """A run started with diagnostics off resumes with them on (they restart at the resumed step), and the
  other way round (the checkpoint's extra sums are not read); training is the same either way."""
  monkeypatch.setattr(train.PreemptionFlag, "__call__", lambda self, step: step == 5)
  with pytest.raises(train.Preempted, match="step 5"):
    train.train_and_evaluate(_config(mnist_data_dir, diagnostics=first), str(tmp_path))
  monkeypatch.undo()
  history = train.train_and_evaluate(_config(mnist_data_dir, diagnostics=not first), str(tmp_path))
  assert [r["epoch"] for r in history] == [1, 2]
  if first:
    assert not set(DIAGNOSTICS) & (set(history[0]) | set(history[1]))
  else:
    assert set(DIAGNOSTICS) <= set(history[0]) and set(DIAGNOSTICS) <= set(history[1])
  straight = train.train_and_evaluate(_config(mnist_data_dir), str(tmp_path / "straight"))
  assert [r["test_acc"] for r in history] == [r["test_acc"] for r in straight]


def test_restore_checkpoint_for_tools_reads_a_checkpoint_with_the_diagnostics(mnist_data_dir, tmp_path):
  config = _config(mnist_data_dir, epochs=1)
  train.train_and_evaluate(config, str(tmp_path))
  model = train.create_model(config, 10)
  tx = train.make_optimizer(config.optim, train.make_schedule(config.optim, 8, config.epochs))
  _, _, state = train.create_train_state(config, model, tx, train.make_mesh())
  restored, epoch = train.restore_checkpoint(str(tmp_path), state, config)
  assert epoch == 1 and int(restored.step) == 8
  assert os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))
