"""aplx.train: optimiser semantics, sharded step equivalence, recompiles, NaN stop, resume, checkpoints."""

import json
import os
import time

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from aplx import losses, models, rundir, train
from experiments.configs import mnist as mnist_config


def _optim(**kw):
  base = {
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.01,
    "grad_clip": 5.0,
    "schedule": "cosine",
    "eta_min": 0.001,
    "decay_rate": 0.97,
    "l1": 0.0,
  }
  return ml_collections.ConfigDict(dict(base, **kw))


# ----- Optimiser: PyTorch semantics, written out by hand. -------------------------------------------


def _torch_sgd_reference(params, grads_seq, lrs, *, momentum, nesterov, wd, clip, l1=0.0):
  """PyTorch: (loss + l1 sum|p|).backward(); clip_grad_norm_(clip); SGD: d = g + wd p; b = m b + d;
  d = d + m b (nesterov) or b."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buf = None
  for g, lr in zip(grads_seq, lrs):
    g = {k: np.asarray(v, np.float64) + l1 * np.sign(p[k]) for k, v in g.items()}
    norm = np.sqrt(sum(np.sum(v**2) for v in g.values()))
    g = {k: v * min(1.0, clip / (norm + 1e-6)) for k, v in g.items()}
    d = {k: g[k] + wd * p[k] for k in p}
    buf = d if buf is None else {k: momentum * buf[k] + d[k] for k in p}
    step = {k: d[k] + momentum * buf[k] for k in p} if nesterov else buf
    p = {k: p[k] - lr * step[k] for k in p}
  return p


@pytest.mark.parametrize("nesterov", [True, False])
def test_optimizer_matches_pytorch_sgd(nesterov):
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
  grads_seq = [
    {k: (10 * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()} for _ in range(5)
  ]  # Norms well above 5: clipping is active.
  optim = _optim(nesterov=nesterov, schedule="constant")
  tx = train.make_optimizer(optim, train.make_schedule(optim, steps_per_epoch=2, epochs=3))
  p, state = jax.tree.map(jnp.asarray, params), tx.init(params)
  for g in grads_seq:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  ref = _torch_sgd_reference(params, grads_seq, [0.1] * 5, momentum=0.9, nesterov=nesterov, wd=0.01, clip=5.0)
  # optax clips with g * clip / max(norm, clip); PyTorch with clip / (norm + 1e-6): 1e-6 relative.
  chex.assert_trees_all_close(p, ref, rtol=1e-5, atol=1e-6)


def test_l1_penalty_is_added_before_clipping_as_anl():
  """ANL's delta * sum |theta| (optim.l1): its gradient enters before the global-norm clip."""
  rng = np.random.default_rng(1)
  params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}  # sign(0) = 0
  grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()} for _ in range(4)]
  optim = _optim(nesterov=False, weight_decay=0.0, schedule="constant", grad_clip=2.0, l1=0.5)
  tx = train.make_optimizer(optim, train.make_schedule(optim, steps_per_epoch=2, epochs=3))
  p, state = jax.tree.map(jnp.asarray, params), tx.init(params)
  for g in grads_seq:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  ref = _torch_sgd_reference(
    params, grads_seq, [0.1] * 4, momentum=0.9, nesterov=False, wd=0.0, clip=2.0, l1=0.5
  )
  chex.assert_trees_all_close(p, ref, rtol=1e-5, atol=1e-6)
  no_l1 = _torch_sgd_reference(params, grads_seq, [0.1] * 4, momentum=0.9, nesterov=False, wd=0.0, clip=2.0)
  assert np.abs(ref["w"] - no_l1["w"]).max() > 1e-2  # The penalty matters at this size.


def test_cosine_schedule_is_pytorch_cosine_annealing_per_epoch():
  optim = _optim(lr=0.01, eta_min=0.001)
  schedule = train.make_schedule(optim, steps_per_epoch=7, epochs=50)
  for epoch in (0, 1, 17, 49):
    expected = 0.001 + (0.01 - 0.001) * (1 + np.cos(np.pi * epoch / 50)) / 2
    for step in (7 * epoch, 7 * epoch + 6):  # Constant within the epoch.
      np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6)


def test_exponential_schedule_per_epoch():
  schedule = train.make_schedule(_optim(lr=0.4, schedule="exponential"), steps_per_epoch=10, epochs=250)
  np.testing.assert_allclose(float(schedule(35)), 0.4 * 0.97**3, rtol=1e-6)


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(ValueError, match="schedule='step'.*cosine"):
    train.make_schedule(_optim(schedule="step"), steps_per_epoch=1, epochs=1)


# ----- The train step on a device mesh. -------------------------------------------------------------


MODEL_KW = {}


def _setup(mesh, loss="nce+rce"):
  config = ml_collections.ConfigDict({"seed": 0})
  model = models.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0), **MODEL_KW)
  optim = _optim(lr=0.05)
  tx = train.make_optimizer(optim, train.make_schedule(optim, steps_per_epoch=4, epochs=2))
  graphdef, _, state = train.create_train_state(config, model, tx, mesh)
  step = train.make_train_step(graphdef, losses.get(loss, beta=10.0), tx)
  return state, step


def _batches(n, size=64):
  rng = np.random.default_rng(1)
  return [
    {
      "image": rng.normal(size=(size, 28, 28, 1)).astype(np.float32),
      "label": rng.integers(0, 10, size).astype(np.int32),
      "clean_label": rng.integers(0, 10, size).astype(np.int32),
    }
    for _ in range(n)
  ]


def _run(mesh, batches):
  state, step = _setup(mesh)
  step = train.jit_train_step(step, mesh)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  sums = train.zero_sums()
  for b in batches:
    state, sums = step(state, train.global_batch(b, sharding), sums)
  return state, sums


def test_sharded_step_equals_single_device_step():
  assert jax.device_count() == 8
  batches = _batches(3)
  one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  state1, sums1 = _run(one, batches)
  state8, sums8 = _run(train.make_mesh(), batches)
  assert len(jax.tree.leaves(state8.params)[0].sharding.device_set) == 8
  chex.assert_trees_all_close(state8.params, state1.params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(state8.batch_stats, state1.batch_stats, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(sums8["loss"]), float(sums1["loss"]), rtol=1e-5)
  assert int(sums8["correct_noisy"]) == int(sums1["correct_noisy"])


def test_train_step_compiles_once():
  mesh = train.make_mesh()
  state, step = _setup(mesh)
  step = train.jit_train_step(chex.assert_max_traces(step, n=1), mesh)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  # As in train_and_evaluate: fresh sums placed like the state (committed, replicated).
  sums = jax.device_put(train.zero_sums(), state.step.sharding)
  for b in _batches(3):
    state, sums = step(state, train.global_batch(b, sharding), sums)
  assert int(state.step) == 3


class _Echo(nnx.Module):
  """Logits = the first K pixels of the image: the test writes the predictions into the inputs."""

  def __call__(self, x):
    return x.reshape(x.shape[0], -1)[:, :4]


def test_eval_step_counts_per_class_over_unpadded_rows():
  model = _Echo()
  model.eval()
  state = train.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=nnx.state(model, nnx.Param),
    batch_stats=nnx.state(model, nnx.BatchStat),
    opt_state=(),
    rng=jax.random.PRNGKey(0),
  )
  label = np.array([0, 0, 0, 1, 1, 2, 3, 3], np.int32)
  pred = np.array([0, 0, 1, 1, 0, 2, 3, 0], np.int32)  # Class 0: 2/3, 1: 1/2, 2: 1/1, 3: 1/2.
  mask = np.array([1, 1, 1, 1, 1, 1, 1, 0], np.int32)  # The last row is padding: class 3 is 1/1.
  image = np.eye(4, dtype=np.float32)[pred].reshape(8, 2, 2, 1)
  sums = jax.jit(train.make_eval_step(nnx.graphdef(model)))(
    state, {"image": image, "label": label, "mask": mask}
  )
  assert int(sums["correct"]) == 5 and int(sums["count"]) == 7
  np.testing.assert_array_equal(sums["correct_per_class"], [2, 1, 1, 1])
  np.testing.assert_array_equal(sums["count_per_class"], [3, 2, 1, 1])


def test_nonfinite_loss_is_reported_with_its_step():
  mesh = train.make_mesh()
  state, step = _setup(mesh)
  step = train.jit_train_step(step, mesh)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batches = _batches(4)
  batches[2]["image"][0, 0, 0, 0] = np.nan  # Step 2's loss is NaN.
  sums = train.zero_sums()
  for i, b in enumerate(batches):
    state, sums = step(state, train.global_batch(b, sharding), sums)
    if i < 2:
      train.check_finite(sums, _optim())  # Nothing to report yet.
  with pytest.raises(train.NonFiniteLossError, match="NaN or inf at step 2.*clipping is already on"):
    train.check_finite(sums, _optim(grad_clip=5.0))
  with pytest.raises(train.NonFiniteLossError, match="NaN or inf at step 2.*enable gradient clipping"):
    train.check_finite(sums, _optim(grad_clip=0.0))


# ----- End to end on real MNIST: accuracy, resume, checkpoints. -------------------------------------


def _tiny_config(mnist_data_dir, **overrides):
  config = mnist_config.get_config("loss=nce+rce,noise=sym,rate=0.4,subset=1024,epochs=2")
  config.data_dir = mnist_data_dir
  config.eval_batch_size = 2000
  config.log_every_steps = 4
  for k, v in overrides.items():
    config[k] = v
  return config


def _final_params(workdir, config):
  """Restores the last checkpoint of a finished run."""
  mesh = train.make_mesh()
  model = train.create_model(config, 10)
  optim = config.optim
  tx = train.make_optimizer(optim, train.make_schedule(optim, 8, config.epochs))
  _, _, state = train.create_train_state(config, model, tx, mesh)
  return train.restore_checkpoint(workdir, state, config)[0]


def _strip_timing(history):
  return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in history]


@pytest.fixture(scope="module")
def uninterrupted(mnist_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  config = _tiny_config(mnist_data_dir)
  history = train.train_and_evaluate(config, workdir)
  return workdir, config, history


def test_end_to_end_learns_and_writes_metrics(uninterrupted):
  workdir, _, history = uninterrupted
  assert [r["epoch"] for r in history] == [1, 2]
  # 1,024 images at 40% symmetric noise, 16 steps: far above chance (10%).
  assert history[-1]["test_acc"] > 0.6, history
  assert history[-1]["train_acc_clean"] > history[-1]["train_acc_noisy"]  # Noise is not yet fit.
  per_class = history[-1]["test_acc_per_class"]
  assert len(per_class) == 10 and all(0 <= a <= 1 for a in per_class)
  assert min(per_class) < history[-1]["test_acc"] < max(per_class)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(l)["epoch"] for l in f] == [1, 2]
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_killed_mid_epoch_then_resumed_equals_uninterrupted(uninterrupted, mnist_data_dir, tmp_path):
  ref_dir, config, ref_history = uninterrupted
  workdir = str(tmp_path)
  train.train_and_evaluate(_tiny_config(mnist_data_dir, max_steps=11), workdir)  # Dies in epoch 2.
  assert len(train.read_metrics(workdir)) == 1
  assert rundir.read_status(workdir) | {"time": None} == {
    "status": "stopped",
    "step": 11,
    "epoch": 1,
    "time": None,
  }
  history = train.train_and_evaluate(_tiny_config(mnist_data_dir), workdir)
  assert _strip_timing(history) == _strip_timing(ref_history)
  chex.assert_trees_all_equal(_final_params(workdir, config).params, _final_params(ref_dir, config).params)


def test_preempted_mid_epoch_checkpoint_resumes_exactly(uninterrupted, mnist_data_dir, tmp_path, monkeypatch):
  ref_dir, config, ref_history = uninterrupted
  workdir = str(tmp_path)
  monkeypatch.setattr(train.PreemptionFlag, "__call__", lambda self, step: step == 13)
  with pytest.raises(train.Preempted, match="step 13"):
    train.train_and_evaluate(_tiny_config(mnist_data_dir), workdir)
  assert rundir.read_status(workdir) | {"time": None} == {"status": "preempted", "step": 13, "time": None}
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == [8, 13]
  monkeypatch.undo()
  history = train.train_and_evaluate(_tiny_config(mnist_data_dir), workdir)
  assert _strip_timing(history) == _strip_timing(ref_history)
  chex.assert_trees_all_equal(_final_params(workdir, config).params, _final_params(ref_dir, config).params)


def test_changed_config_refuses_to_resume(uninterrupted, mnist_data_dir, tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(_tiny_config(mnist_data_dir, max_steps=8), workdir)
  config = _tiny_config(mnist_data_dir)
  config.loss.params.beta = 1.0
  with pytest.raises(ValueError, match=r"different config \(loss.params.beta: 10.0 -> 1.0\).*new --workdir"):
    train.train_and_evaluate(config, workdir)


def _corrupt(workdir, step):
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step))):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")


def test_corrupted_only_checkpoint_is_an_error_not_a_fresh_start(mnist_data_dir, tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(_tiny_config(mnist_data_dir, max_steps=8), workdir)
  _corrupt(workdir, 8)
  with pytest.raises(train.CheckpointError, match="No checkpoint in .* could be restored.*Refusing") as e:
    train.train_and_evaluate(_tiny_config(mnist_data_dir), workdir)
  assert len(str(e.value)) < 800  # One short message, no TensorStore spec dump.
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "8"))  # Nothing moved or deleted.
  assert rundir.read_status(workdir)["status"] == rundir.FAILED


def test_corrupted_latest_checkpoint_falls_back_and_is_kept_aside(
  uninterrupted, mnist_data_dir, tmp_path, monkeypatch
):
  """Epoch 2's checkpoint is unreadable: resume from epoch 1's, set the bad one aside, end as the
  uninterrupted run. Also: a torn metrics line is kept aside, and images/s counts training time only."""
  ref_dir, config, ref_history = uninterrupted
  workdir = str(tmp_path)
  train.train_and_evaluate(_tiny_config(mnist_data_dir, keep_checkpoints=3), workdir)
  _corrupt(workdir, 16)
  # Epoch 2's record lost too, so that the redone epoch writes it (timed with the slow evaluation).
  rundir.write_metrics(workdir, rundir.read_metrics(workdir)[:1])
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"epoch": 3, "te')  # A write torn by a kill.
  slow_eval = train.Evaluator.__call__

  def evaluate(self, state, stop=None):
    time.sleep(12.0)  # Longer than compiling and training the 8 steps of an epoch here.
    return slow_eval(self, state, stop)

  monkeypatch.setattr(train.Evaluator, "__call__", evaluate)
  config2 = _tiny_config(mnist_data_dir, keep_checkpoints=3, epochs=2)
  history = train.train_and_evaluate(config2, workdir)
  assert _strip_timing(history) == _strip_timing(ref_history)
  assert open(os.path.join(workdir, "metrics.jsonl.damaged")).read() == '{"epoch": 3, "te\n'
  aside = os.listdir(os.path.join(workdir, "checkpoints_unreadable"))
  assert len(aside) == 1 and aside[0].startswith("16-")
  chex.assert_trees_all_equal(_final_params(workdir, config).params, _final_params(ref_dir, config).params)
  # 1,024 images per epoch; with the 12 s of evaluation counted the rate would be below 1024 / 12.
  assert history[-1]["images_per_sec"] > 1024 / 12
  assert rundir.read_status(workdir)["status"] == rundir.FINISHED


def test_torn_metrics_line_resumes(uninterrupted, mnist_data_dir, tmp_path):
  _, _, ref_history = uninterrupted
  workdir = str(tmp_path)
  train.train_and_evaluate(_tiny_config(mnist_data_dir, max_steps=11), workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"epoch": 2, "step": 1')
  assert len(rundir.read_metrics(workdir)) == 1
  history = train.train_and_evaluate(_tiny_config(mnist_data_dir), workdir)
  assert _strip_timing(history) == _strip_timing(ref_history)


def test_failed_checkpoint_write_is_one_clear_error_and_no_metrics_line(
  mnist_data_dir, tmp_path, monkeypatch
):
  workdir = str(tmp_path)

  def full_disk(self, step, *args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(train.CheckpointError, match=r"checkpoint of step 8 to .*checkpoints.*disk full"):
    train.train_and_evaluate(_tiny_config(mnist_data_dir), workdir)
  assert rundir.read_metrics(workdir) == []  # The epoch whose checkpoint was lost is not recorded.


@pytest.mark.parametrize(
  "override, message",
  [
    ({"epochs": 0}, "config.epochs=0: must be a positive integer"),
    ({"loss.name": "nce+xyz"}, "Unknown loss 'nce\\+xyz'"),
    ({"model.name": "vgg"}, "config.model.name='vgg': use one of"),
    ({"dataset": "imagenet"}, "config.dataset='imagenet'"),
    ({"optim.schedule": "step"}, "config.optim.schedule='step'"),
    ({"noise.type": "gaussian"}, "config.noise.type='gaussian'"),
  ],
)
def test_bad_config_is_rejected_before_data_or_workdir(tmp_path, override, message):
  config = _tiny_config("/nonexistent/data_dir")
  for path, value in override.items():
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()  # Neither the data nor the workdir was touched.


@pytest.mark.parametrize("field", ["batch_size", "eval_batch_size"])
def test_batch_sizes_must_divide_over_devices(mnist_data_dir, tmp_path, field):
  with pytest.raises(ValueError, match=f"config.{field}=100: must be divisible by the number of devices"):
    train.train_and_evaluate(_tiny_config(mnist_data_dir, **{field: 100}), str(tmp_path))


def test_last_partial_batch_is_trained_as_the_authors_loaders(mnist_data_dir, tmp_path):
  """1,000 images, batch 128: 7 full steps and an 8th of 104 over the 8 devices (drop_remainder=True
  gives 7 steps: tests/test_data.py)."""
  config = _tiny_config(mnist_data_dir, subset=1000, epochs=1, drop_remainder=False)
  history = train.train_and_evaluate(config, str(tmp_path))
  assert [r["step"] for r in history] == [8]
