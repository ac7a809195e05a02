"""Multi-host training for real: 2 processes x 4 CPU devices over jax.distributed on localhost (gloo).

The workers are started by `launch/local.sh`, the same launcher a user runs, with a clean environment (the
8-device XLA_FLAGS of conftest.py must not reach them). They train the tiny MNIST config; this process
trains the same config on 1 process x 8 devices, the same 8-device mesh and global batches. Compared:

- after one epoch (2 processes, killed mid-epoch 2 by max_steps): parameters equal the 1-process run's;
- after resuming that 2-process run from its multi-process orbax checkpoint: parameters and per-epoch
  metrics equal the uninterrupted 1-process run's, and only process 0 wrote metrics.

Equality is to float tolerance: XLA may order the cross-process (gloo) all-reduce differently from the
in-process one. A wrong data slice, PRNG key or restored step would differ by orders of magnitude more.
"""

import os

import chex
import jax
import launching
import numpy as np
import pytest

from aplx import train
from experiments.configs import mnist as mnist_config

CONFIG_ARG = "loss=nce+rce,noise=sym,rate=0.4,subset=128,epochs=2"
OVERRIDES = {"batch_size": 64, "eval_batch_size": 2000, "log_every_steps": 2}  # 128/64: 2 steps an epoch.
KILL_AT = 3  # Mid-epoch 2: the last checkpoint is the end of epoch 1 (step 2).


@pytest.fixture
def launch(tmp_path):
  """Starts `launch/local.sh` with 4 CPU devices per process on the tiny MNIST config; kills what is
  left at teardown."""
  started = []

  def start(num_processes, workdir, data_dir, log_path, **overrides):
    flags = [
      f"--config={launching.REPO}/experiments/configs/mnist.py:{CONFIG_ARG}",
      f"--workdir={workdir}",
      f"--config.data_dir={data_dir}",
    ]
    flags += [f"--config.{k}={v}" for k, v in {**OVERRIDES, **overrides}.items()]
    # Compiled programs shared by the workers and the two launches: the second ~30% faster.
    started.append(launching.start(num_processes, flags, log_path, tmp_path / "jax_cache"))
    return started[-1]

  yield start
  for proc in started:
    launching.kill(proc)


def test_two_processes_equal_one_and_resume_from_a_multiprocess_checkpoint(mnist_data_dir, tmp_path, launch):
  assert jax.device_count() == 8 and jax.process_count() == 1
  multi = str(tmp_path / "multi")
  # 2 processes x 4 devices, "killed" at step KILL_AT. Runs while this process trains the reference.
  workers = launch(2, multi, mnist_data_dir, tmp_path / "killed.log", max_steps=KILL_AT)

  config = mnist_config.get_config(CONFIG_ARG)
  config.data_dir = mnist_data_dir
  config.update(OVERRIDES)
  single = str(tmp_path / "single")
  ref_history = train.train_and_evaluate(config, single)  # 1 process x 8 devices, uninterrupted.
  launching.wait(workers)

  assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["2"]
  ref, got = launching.checkpoint(single, 2), launching.checkpoint(multi, 2)
  assert int(got["step"]) == 2
  chex.assert_trees_all_close(got["params"], ref["params"], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(got["batch_stats"], ref["batch_stats"], rtol=1e-5, atol=1e-6)

  # Resume the 2-process run from its multi-process checkpoint and finish it.
  launching.wait(launch(2, multi, mnist_data_dir, tmp_path / "resumed.log"))

  ref, got = launching.checkpoint(single, 4), launching.checkpoint(multi, 4)
  assert int(got["step"]) == 4
  for part in ("params", "batch_stats", "opt_state"):
    chex.assert_trees_all_close(got[part], ref[part], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got["rng"], ref["rng"])
  # Only process 0 writes metrics: one line per epoch, equal to the uninterrupted run's.
  history = launching.without_timing(train.read_metrics(multi))
  expected = launching.without_timing(ref_history)
  assert [r["epoch"] for r in history] == [1, 2]
  for got, ref in zip(history, expected):
    np.testing.assert_allclose(got.pop("test_acc_per_class"), ref.pop("test_acc_per_class"), atol=1e-3)
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-3), (got, ref)  # With the diagnostics' fields.
