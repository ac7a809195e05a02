"""aplx.rundir: the run-directory format shared by the trainer, the sweep and the report."""

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


def test_status_and_config_files(tmp_path):
  assert rundir.read_status(tmp_path) == {} and rundir.read_config(tmp_path) is None
  rundir.write_status(tmp_path, rundir.PREEMPTED, step=12)
  status = rundir.read_status(tmp_path)
  assert status["status"] == "preempted" and status["step"] == 12 and "time" in status
  rundir.write_config(tmp_path, {"epochs": 3, "loss": {"name": "ce"}})
  assert rundir.read_config(tmp_path) == {"epochs": 3, "loss": {"name": "ce"}}
  assert not list(tmp_path.glob("*.tmp"))  # Written by rename, no leftovers.
