"""aplx.rundir: the run-directory format shared by the trainer, the sweep and the report."""

import json

from aplx import rundir


def test_metrics_round_trip_and_torn_last_line(tmp_path):
  records = [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.6}]
  rundir.write_metrics(tmp_path, records)
  rundir.append_metrics(tmp_path, {"epoch": 3, "test_acc": 0.7})
  assert [r["epoch"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 4, "test')  # Killed mid-write.
  assert [r["epoch"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
  assert rundir.read_metrics(tmp_path / "missing") == []


def test_config_diff_ignores_only_the_resumable_fields():
  saved = {"epochs": 50, "log_every_steps": 100, "optim": {"lr": 0.01, "momentum": 0.9}, "data_dir": None}
  now = {"epochs": 50, "log_every_steps": 7, "optim": {"lr": 0.02, "momentum": 0.9}, "data_dir": "/d"}
  assert rundir.config_diff(saved, now) == ["optim.lr: 0.01 -> 0.02"]
  assert rundir.config_diff(saved, dict(saved, seed=1)) == ["seed: None -> 1"]  # Added fields count.
  # Worker processes do not change the batches: a run may resume with another count (another node).
  assert rundir.config_diff(dict(saved, data_workers=8), dict(saved, data_workers=2)) == []
  assert rundir.config_diff(dict(saved, image_size=224), dict(saved, image_size=64)) == [
    "image_size: 224 -> 64"
  ]


def test_status_and_config_files(tmp_path):
  assert rundir.read_status(tmp_path) == {} and rundir.read_config(tmp_path) is None
  rundir.write_status(tmp_path, rundir.PREEMPTED, step=12)
  status = rundir.read_status(tmp_path)
  assert status["status"] == "preempted" and status["step"] == 12 and "time" in status
  rundir.write_config(tmp_path, {"epochs": 3, "loss": {"name": "ce"}})
  assert rundir.read_config(tmp_path) == {"epochs": 3, "loss": {"name": "ce"}}
  assert not list(tmp_path.glob("*.tmp"))  # Written by rename, no leftovers.


def _set(config: dict, dotted: str, value) -> dict:
  out = json.loads(json.dumps(config))
  *parents, name = dotted.split(".")
  node = out
  for p in parents:
    node = node[p]
  node[name] = value
  return out


def test_config_diff_a_field_one_side_lacks_equals_its_default():
  """Fields added to the configs later (every loss parameter, the model dtype, the validation split)
  leave a config.json written without them resumable, as long as the value is the default."""
  saved = {"epochs": 3, "loss": {"name": "gce", "params": {}}, "model": {"name": "mnist_cnn", "kwargs": {}}}
  now = {
    "epochs": 3,
    "val_fraction": 0.0,
    "val_fold": 0,
    "loss": {"name": "gce", "params": {"q": 0.7, "min_prob": None, "scale": 1.0}},  # GCE's defaults.
    "model": {"name": "mnist_cnn", "kwargs": {"dtype": "float32", "kernels": "auto"}},
  }
  assert rundir.config_diff(saved, now) == [] and rundir.config_diff(now, saved) == []
  for path, value in [
    ("loss.params.q", 0.5),
    ("loss.params.scale", 2.0),
    ("model.kwargs.dtype", "bfloat16"),
    ("val_fraction", 0.1),
  ]:
    assert rundir.config_diff(saved, _set(now, path, value)) == [f"{path}: None -> {value!r}"]
  # The defaults are those of the config's own loss: NCE has no q, so a q that it lacks is a difference.
  nce = {"loss": {"name": "nce", "params": {}}}
  assert rundir.config_diff(nce, _set(nce, "loss.params.q", 0.7)) == ["loss.params.q: None -> 0.7"]
  assert rundir.config_diff(nce, _set(nce, "loss.params.scale", 1.0)) == []
