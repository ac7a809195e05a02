"""experiments.predict: class probabilities of a trained run by example id (the input of cleanlab)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from aplx import rundir, train
from experiments import predict
from experiments.configs import mnist as mnist_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(mnist_data_dir, tmp_path_factory):
  """One epoch on 1,024 MNIST images at 40% symmetric noise, a quarter held out for validation."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = mnist_config.get_config("loss=nce+rce,noise=sym,rate=0.4,subset=1024,epochs=1")
  config.data_dir = mnist_data_dir
  config.eval_batch_size = 2000
  config.val_fraction = 0.25
  history = train.train_and_evaluate(config, workdir)
  return workdir, train.load_data(config), history


def test_train_split_npz_by_id_from_the_command_line_on_one_device_equals_eight(run, tmp_path):
  workdir, ds, history = run
  out = tmp_path / "train.npz"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.predict",
      "--workdir",
      workdir,
      "--split",
      "train",
      "--out",
      str(out),
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  z = np.load(out)
  n = ds.num_train
  assert z["probs"].shape == (n, 10) and z["probs"].dtype == np.float32
  assert str(z["split"]) == "train" and int(z["step"]) == history[-1]["step"] and int(z["epoch"]) == 1
  np.testing.assert_array_equal(z["example_id"], np.sort(ds.train_ids))  # The examples trained on.
  np.testing.assert_array_equal(z["noisy_label"], ds.train_noisy_labels)
  np.testing.assert_array_equal(z["clean_label"], ds.train_clean_labels)
  assert (z["noisy_label"] != z["clean_label"]).mean() > 0.3  # The labels the run was given, not clean.
  np.testing.assert_allclose(z["probs"].sum(1), 1.0, rtol=0, atol=1e-5)
  assert (z["probs"] >= 0).all()
  # The same checkpoint on the 8 devices of this process.
  eight = predict.predict(workdir, "train")
  np.testing.assert_array_equal(eight["example_id"], z["example_id"])
  np.testing.assert_allclose(eight["probs"], z["probs"], rtol=1e-4, atol=1e-6)


def test_val_and_test_predictions_reproduce_the_logged_accuracies(run):
  workdir, ds, history = run
  val = predict.predict(workdir, "val")
  np.testing.assert_array_equal(val["example_id"], ds.val_ids)
  np.testing.assert_array_equal(val["noisy_label"], ds.val_noisy_labels)
  pred = val["probs"].argmax(1)
  n = ds.num_val
  # Counts of correct predictions out of n: equal, not merely close.
  assert round((pred == val["clean_label"]).mean() * n) == round(history[-1]["val_acc_clean"] * n)
  assert round((pred == val["noisy_label"]).mean() * n) == round(history[-1]["val_acc_noisy"] * n)
  assert history[-1]["val_acc_noisy"] != history[-1]["val_acc_clean"]
  test = predict.predict(workdir, "test")
  np.testing.assert_array_equal(test["example_id"], np.arange(ds.num_test))
  np.testing.assert_array_equal(test["noisy_label"], ds.test_labels)
  assert round((test["probs"].argmax(1) == test["clean_label"]).mean() * 1e4) == round(
    history[-1]["test_acc"] * 1e4
  )


def test_predict_errors_name_the_fix(run, tmp_path):
  workdir, _, history = run
  with pytest.raises(
    train.CheckpointError, match=rf"No checkpoint of step 3 .*its steps are \[{history[-1]['step']}\]"
  ):
    predict.predict(workdir, "val", checkpoint_step=3)
  with pytest.raises(ValueError, match="appear in more than one of the 2 runs"):
    predict.predict_folds([workdir, workdir], "val")
  no_val = tmp_path / "no_val"
  no_val.mkdir()
  config = rundir.read_config(workdir) | {"val_fraction": 0.0}
  rundir.write_config(str(no_val), config)
  with pytest.raises(ValueError, match="has no validation split .*val_fraction > 0"):
    predict.predict(str(no_val), "val")
  with pytest.raises(ValueError, match=r"not a fold of the cross-validation of .*val_fraction: 0.25 -> 0.0"):
    predict.predict_folds([workdir, str(no_val)], "val")
  with pytest.raises(FileNotFoundError, match="No config.json"):
    predict.predict(str(tmp_path), "train")
