"""Evaluation: accuracy on a split, and the evaluation fields of an epoch's record."""

import collections
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from aplx import cpu
from aplx import data as data_lib
from aplx.train import steps


def evaluate(
  eval_step,
  state,
  ds,
  batch_size: int,
  batch_sharding,
  split: str = "test",
  num_threads: int = 1,
  stop: Callable[[], None] | None = None,
) -> dict:
  """Accuracy on a split of `ds` (`data.eval_batches`: every process reads its rows of each global
  batch): {"acc_clean"} against the clean labels and {"acc_per_class"} (a list, None for a class with
  no example), plus {"acc_noisy"} on the train and val splits. `stop()` is called between batches (it
  raises to stop the evaluation: a preemption)."""
  totals = collections.defaultdict(int)
  for batch in data_lib.eval_batches(
    ds,
    batch_size=batch_size,
    split=split,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_threads=num_threads,
  ):
    if stop is not None:
      stop()
    for k, v in jax.device_get(
      eval_step(state, steps.global_batch(batch, batch_sharding))
    ).items():  # 1 read.
      totals[k] = totals[k] + v.astype(np.int64)  # Scalars and per-class counts.
  count = max(int(totals["count"]), 1)
  per_class = zip(
    np.ravel(totals["correct_per_class"]).tolist(), np.ravel(totals["count_per_class"]).tolist()
  )
  out = {
    "acc_clean": int(totals["correct"]) / count,
    "acc_per_class": [c / n if n else None for c, n in per_class],
  }
  if "correct_noisy" in totals:
    out["acc_noisy"] = int(totals["correct_noisy"]) / count
  return out


class Evaluator:
  """Every evaluation an epoch's record holds: the test set, the dataset's other evaluation sets and the
  validation split, with the test set's code path (`evaluate`)."""

  def __init__(self, config: ml_collections.ConfigDict, ds, mesh, eval_graphdef):
    self.ds = ds
    self.eval_step = jax.jit(steps.make_eval_step(eval_graphdef), compiler_options=cpu.compiler_options())
    self.batch_size = config.eval_batch_size
    self.sharding = jax.sharding.NamedSharding(mesh, steps.P("data"))
    self.num_threads = max(1, config.data_workers)  # Streamed datasets decode in this many threads.

  def split(self, state, split: str, stop=None) -> dict:
    args = (self.batch_size, self.sharding, split, self.num_threads, stop)
    return evaluate(self.eval_step, state, self.ds, *args)

  def __call__(self, state, stop: Callable[[], None] | None = None) -> dict:
    """{"test_acc", "test_acc_per_class" (a list over the classes), "test_acc_<name>" per extra
    evaluation set, "val_acc_noisy" and "val_acc_clean" with a validation split (the latter when the
    clean labels are known)}. `stop`: see `evaluate`."""
    test = self.split(state, "test", stop)
    record = {"test_acc": test["acc_clean"], "test_acc_per_class": test["acc_per_class"]}
    for name in self.ds.eval_sets:  # e.g. webvision's ILSVRC2012 validation images.
      record[f"test_acc_{name}"] = self.split(state, name, stop)["acc_clean"]
    if self.ds.num_val:  # Against both labels of the held-out examples.
      val = self.split(state, "val", stop)
      record["val_acc_noisy"] = val["acc_noisy"]
      if self.ds.clean_train_labels_known:
        record["val_acc_clean"] = val["acc_clean"]
    return record
