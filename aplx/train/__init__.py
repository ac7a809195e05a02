"""Training and evaluation: data parallel over a device mesh, orbax checkpoints, exact resume.

`train_and_evaluate(config, workdir)` is the whole program (`loop.py`, read top to bottom). It is made
of small modules with one job each, whose public names are importable from here:

  config.py      `DEFAULTS` (the one table of optional fields and their defaults), `with_defaults`,
                 `validate_config`, `ConfigError`
  optimizer.py   `make_schedule`, `make_optimizer`: SGD and its schedule as the authors' PyTorch code
  steps.py       `TrainState`, `create_model`, `create_train_state`, `make_mesh`, `global_batch`, the train /
                 multi / eval / predict steps and their jit (`jit_train_step`, `jit_multi_step`),
                 `check_finite`
  feed.py        `load_data`; host-made (`HostFeed`) or device-made (`DeviceFeed`, `config.device_data`)
                 batches behind one `advance(state, sums, step)`
  evaluation.py  `evaluate` (accuracy on a split), `Evaluator` (an epoch's evaluation fields)
  checkpoint.py  `Checkpoints` (save, restore the newest readable, set unreadable ones aside),
                 `restore_checkpoint` (read-only, for tools), `CheckpointError`
  run_log.py     metrics.jsonl / TensorBoard (`MetricWriter`), status.json (`RunStatus`), log lines
  loop.py        `train_and_evaluate`, `PreemptionFlag`

Feeding: batches are made on the host and placed on the mesh one step at a time, or, with
`config.device_data`, the training set stays on the devices and the steps between two log lines run in
one `lax.scan` call whose batches are made there: the same batches, hence the same run.
"""

from aplx import _deps

with _deps.extra("train,data", __name__):
  from aplx.train.checkpoint import CheckpointError, Checkpoints, restore_checkpoint
  from aplx.train.config import DEFAULTS, ConfigError, validate_config, with_defaults
  from aplx.train.evaluation import Evaluator, evaluate
  from aplx.train.feed import DeviceFeed, HostFeed, chunk_length, load_data, make_feed
  from aplx.train.loop import MAX_STEPS_AHEAD, PreemptionFlag, train_and_evaluate
  from aplx.train.optimizer import SCHEDULES, make_optimizer, make_schedule
  from aplx.train.run_log import MetricWriter, Preempted, RunStatus, format_duration, read_metrics
  from aplx.train.steps import (
    NonFiniteLossError,
    TrainState,
    check_finite,
    create_model,
    create_train_state,
    global_batch,
    jit_multi_step,
    jit_train_step,
    make_eval_step,
    make_mesh,
    make_multi_step,
    make_predict_step,
    make_train_step,
    zero_sums,
  )
  from aplx.train.workdir import WorkdirError, WorkdirLock, describe_os_error

__all__ = [
  "DEFAULTS",
  "MAX_STEPS_AHEAD",
  "SCHEDULES",
  "CheckpointError",
  "Checkpoints",
  "ConfigError",
  "DeviceFeed",
  "Evaluator",
  "HostFeed",
  "MetricWriter",
  "NonFiniteLossError",
  "Preempted",
  "PreemptionFlag",
  "RunStatus",
  "TrainState",
  "WorkdirError",
  "WorkdirLock",
  "check_finite",
  "chunk_length",
  "create_model",
  "create_train_state",
  "describe_os_error",
  "evaluate",
  "format_duration",
  "global_batch",
  "jit_multi_step",
  "jit_train_step",
  "load_data",
  "make_eval_step",
  "make_feed",
  "make_mesh",
  "make_multi_step",
  "make_optimizer",
  "make_predict_step",
  "make_schedule",
  "make_train_step",
  "read_metrics",
  "restore_checkpoint",
  "train_and_evaluate",
  "validate_config",
  "with_defaults",
  "zero_sums",
]
