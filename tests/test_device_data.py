"""config.device_data: batches made on the devices (aplx.data.device) are the host's, and a run trained
with them is bitwise the run trained from host batches (8 fake CPU devices), resumed either way."""

import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aplx import data, train
from aplx.data import device, pipeline, preprocess
from experiments.configs import mnist as mnist_config


def _random_dataset(kind: str, n: int = 1000) -> pipeline.Dataset:
  rng = np.random.default_rng(0)
  shape = (28, 28, 1) if kind == "none" else (32, 32, 3)
  mean, std = preprocess.NORMALIZATION["mnist" if kind == "none" else "cifar10"]
  clean = rng.integers(0, 10, n).astype(np.int32)
  return pipeline.Dataset(
    name=f"random/{kind}",
    num_classes=10,
    image_shape=shape,
    train_images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
    train_ids=(np.arange(n, dtype=np.int32) * 7 + 3),  # Ids are not row numbers.
    train_clean_labels=clean,
    train_noisy_labels=(clean + rng.integers(0, 2, n).astype(np.int32)) % 10,
    test_images=np.zeros((0, *shape), np.uint8),
    test_labels=np.zeros(0, np.int32),
    mean=mean,
    std=std,
    augment=kind,
    noise={"kind": "sym"},
  )


@pytest.mark.parametrize("kind", ["none", "crop_flip", "crop_flip_rotate"])
@pytest.mark.parametrize("process_index,process_count", [(0, 1), (1, 2)])
def test_device_batches_are_the_host_batches(kind, process_index, process_count):
  """Every field, bitwise, over two epochs with a partial last batch (1,000 = 7 x 128 + 104)."""
  ds = _random_dataset(kind)
  mesh = train.make_mesh()
  args = {
    "global_batch_size": 128,
    "seed": 5,
    "process_index": process_index,
    "process_count": process_count,
    "drop_remainder": False,
    "multiple_of": jax.device_count(),
  }
  on_device = device.put(ds, mesh)
  make = jax.jit(functools.partial(device.make_batch, kind=kind, mean=ds.mean, std=ds.std, augment=True))
  spe = data.steps_per_epoch(ds, 128, drop_remainder=False, multiple_of=jax.device_count())
  assert spe == 8
  for start, n in [(0, 7), (7, 1), (8, 3), (15, 1)]:  # The partial batches (steps 7, 15) alone.
    chunk = device.chunk(ds, start, n, **args)
    assert chunk["rows"].shape[0] == n
    for i in range(n):
      host = data.make_train_batch(ds, start + i, **args)
      made = jax.device_get(make(on_device, {k: v[i] for k, v in chunk.items()}))
      assert set(made) == set(host)
      for k in host:
        assert made[k].dtype == host[k].dtype, k
        np.testing.assert_array_equal(made[k], host[k], err_msg=f"{kind} step {start + i} {k}")
  with pytest.raises(ValueError, match="different batch sizes"):
    device.chunk(ds, 6, 2, **args)  # Steps 6 (128) and 7 (104) cannot share a call.


def test_rotation_is_the_same_on_device_for_many_angles():
  # Each pixel holds its own (y, x), so the output names the source pixel every output pixel read.
  # 3,000 examples (angles) at 32 x 32: a float32 rotation rounded differently under XLA (fused
  # multiply-adds) in about one example in 7,000 (2 of these 3,000, and ids 478, 751, 8920 of 20,000).
  yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
  img = np.stack([yy, xx, np.full_like(yy, 255)], -1).astype(np.uint8)
  ids = np.concatenate([[478, 751, 8920], np.arange(3000)])
  params = preprocess.draws(ids, kind="crop_flip_rotate", seed=3, epoch=7)
  images = np.broadcast_to(img, (len(ids), 32, 32, 3))
  host = preprocess.apply(images, params, kind="crop_flip_rotate")
  made = jax.jit(lambda im, p: preprocess.apply(im, p, kind="crop_flip_rotate", xp=jnp))(images, params)
  np.testing.assert_array_equal(np.asarray(made), host)
  assert 0.05 < float((host[..., 2] == 0).mean()) < 0.3  # Rotated and shifted: some zero fill.


def test_chunk_lengths_stop_at_log_points_epoch_ends_and_partial_batches():
  out, step = [], 0
  while step < 2 * 469:
    n = train.chunk_length(step, 469, 100, 2 * 469, True)
    out.append(n)
    step += n
  assert out == [100, 100, 100, 100, 68, 1] * 2  # Epoch-aligned; the partial 469th step alone.
  assert train.chunk_length(469 + 250, 469, 100, 10**6, True) == 50  # Resumed mid-way: to step 300.
  assert train.chunk_length(460, 469, 100, 462, True) == 2  # max_steps
  assert train.chunk_length(400, 468, 100, 10**6, False) == 68  # No partial batch: to the end.


def _config(mnist_data_dir, **overrides):
  """1,000 MNIST images, batch 128 over 8 devices: 7 full steps and a partial one per epoch."""
  config = mnist_config.get_config("loss=nce+rce,noise=sym,rate=0.4,subset=1000,epochs=2")
  config.data_dir = mnist_data_dir
  config.eval_batch_size = 2000
  config.log_every_steps = 3  # Device calls of 3, 3, 1 (up to the partial batch) and 1 (it).
  for k, v in overrides.items():
    config[k] = v
  return config


def _final_params(workdir, config):
  mesh = train.make_mesh()
  tx = train.make_optimizer(config.optim, train.make_schedule(config.optim, 8, config.epochs))
  _, _, state = train.create_train_state(config, train.create_model(config, 10), tx, mesh)
  return train.restore_checkpoint(workdir, state, config)[0].params


def _strip_timing(history):
  return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in history]


def test_device_data_run_is_the_host_run_and_resumes_either_way(mnist_data_dir, tmp_path, monkeypatch):
  assert not _config(mnist_data_dir).drop_remainder  # The authors' loader: partial batches kept.
  runs = {}
  for name, device_data in [("host", False), ("device", True)]:
    workdir = str(tmp_path / name)
    history = train.train_and_evaluate(_config(mnist_data_dir, device_data=device_data), workdir)
    runs[name] = (workdir, history)
  # Preempted mid-epoch 2 (step 11, where a device call ends) on one path, its checkpoint resumed on the
  # other: device_data is a resumable change.
  for name, first in [("device_then_host", True), ("host_then_device", False)]:
    workdir = str(tmp_path / name)
    with monkeypatch.context() as m:
      m.setattr(train.PreemptionFlag, "__call__", lambda self, step: step == 11)
      with pytest.raises(train.Preempted, match="step 11"):
        train.train_and_evaluate(_config(mnist_data_dir, device_data=first), workdir)
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == [8, 11]
    runs[name] = (workdir, train.train_and_evaluate(_config(mnist_data_dir, device_data=not first), workdir))
  reference = _strip_timing(runs["host"][1])
  assert [r["step"] for r in reference] == [8, 16]
  config = _config(mnist_data_dir)
  for name in ("device", "device_then_host", "host_then_device"):
    assert _strip_timing(runs[name][1]) == reference, name
    chex.assert_trees_all_equal(_final_params(runs[name][0], config), _final_params(runs["host"][0], config))


def test_device_data_config_errors(tmp_path):
  config = _config("/nonexistent")
  with config.ignore_type():
    config.device_data = "yes"
  with pytest.raises(train.ConfigError, match="config.device_data='yes': True .* or False"):
    train.train_and_evaluate(config, str(tmp_path / "a"))
  from experiments.configs import webvision  # pylint: disable=import-outside-toplevel

  config = webvision.get_config("loss=ce,noise=none,rate=0")
  config.device_data = True
  with pytest.raises(train.ConfigError, match="device_data=True: webvision is streamed from disk"):
    train.train_and_evaluate(config, str(tmp_path / "b"))
  assert not (tmp_path / "b").exists()
