"""Checkpoints: save, restore the newest readable one, set unreadable ones aside, read-only restore.

One orbax checkpoint per finished epoch (and one at a preemption) holds the whole `TrainState`, the
epoch's running sums, and as JSON metadata: the number of completed epochs, the run's config, the
metrics records so far (`history`, and `pending`: the training fields of the epoch this checkpoint
ends, whose evaluation follows the save), and a SHA-256 of every array. Restoring recomputes the
checksums: a checkpoint whose data changed on disk (bit flips, an overwrite) or whose parameters are not
finite is unreadable. A checkpoint that cannot be read is never deleted: it is moved to
`<workdir>/checkpoints_unreadable/`, loudly, and the run falls back to the one before.
"""

import hashlib
import json
import os
import shutil
import time
from typing import NamedTuple

from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from aplx import rundir
from aplx.train.config import ConfigError
from aplx.train.steps import zero_sums


class CheckpointError(RuntimeError):
  """A checkpoint could not be read or written; the message says what to do."""


def short(e: BaseException, limit: int = 240) -> str:
  """An exception in one short line: orbax/TensorStore errors can carry kilobytes of spec."""
  text = " ".join(str(e).split()) or type(e).__name__
  return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def config_json(config: ml_collections.ConfigDict) -> dict:
  """The config as config.json and the checkpoints' metadata hold it."""
  return json.loads(config.to_json_best_effort())


LEGACY_SUMS = ("loss", "correct_noisy", "correct_clean", "count", "first_bad_step")


class Restored(NamedTuple):
  """What a checkpoint gives back (`Checkpoints.restore`)."""

  state: object
  sums: dict
  epoch: int  # Completed epochs.
  history: list  # The metrics records of the epochs before `epoch`'s.
  pending: dict | None  # The training fields of epoch `epoch`'s record (its evaluation follows the save).


def checksums(tree) -> dict[str, str]:
  """{path: SHA-256 of the array's bytes} for every leaf of `tree`, from this process's copy (every
  array of a run is replicated)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
    jax.tree_util.keystr(path): hashlib.sha256(np.ascontiguousarray(_local(x)).tobytes()).hexdigest()
    for path, x in leaves
  }


def _saved_sums(meta: dict, sums: dict) -> dict:
  """The running sums as checkpoint `meta` describes them, placed like `sums`: the same arrays where
  both have them, shape-only placeholders for sums that `sums` lacks. Checkpoints from before the
  description hold the five sums of the first releases."""
  if "sums" not in meta:
    return {k: v for k, v in sums.items() if k in LEGACY_SUMS}
  sharding = next(iter(sums.values())).sharding
  return {
    k: sums[k] if k in sums else jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), sharding=sharding)
    for k, (shape, dtype) in meta["sums"].items()
  }


def _local(x) -> np.ndarray:
  return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def _verify(restored, saved: dict | None, where: str) -> None:
  """CheckpointError if the restored arrays differ from their checksums at save, or a parameter is not
  finite. Checkpoints written before checksums existed are checked for finiteness only."""
  if saved is not None:
    bad = [k for k, v in checksums(restored).items() if saved.get(k) != v]
    if bad:
      raise CheckpointError(
        f"{where} does not match the checksums written with it ({len(bad)} of {len(saved)} arrays differ, "
        f"e.g. {bad[0]}): its files were damaged after the save"
      )
  state = restored[0]
  for path, x in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    if not np.isfinite(_local(x)).all():
      raise CheckpointError(f"{where} holds non-finite parameters ({jax.tree_util.keystr(path)})")


class Checkpoints:
  """The checkpoints of one workdir (`<workdir>/checkpoints`), through an orbax CheckpointManager.

  `keep`: how many of the newest are kept. `read_only`: nothing is created, moved or deleted.
  """

  def __init__(self, workdir: str, keep: int | None = None, *, read_only: bool = False):
    self.directory = os.path.join(workdir, "checkpoints")
    self.aside = os.path.join(workdir, "checkpoints_unreadable")
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    self.manager.close()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def reached_preemption(self, step: int) -> bool:
    """Orbax's multi-host preemption sync: every process agrees on the same step (a collective)."""
    return self.manager.reached_preemption(step)

  def save(
    self,
    state,
    sums: dict,
    epoch: int,
    config: ml_collections.ConfigDict,
    history: list[dict],
    pending: dict | None = None,
  ) -> None:
    """Saves (state, running epoch sums), `epoch` (the number of completed epochs), the metrics records
    so far (`history`, `pending`: see the module's docstring) and the arrays' checksums, and waits
    until the checkpoint is committed. A failed write (full disk, lost bucket) raises one
    CheckpointError."""
    step = int(state.step)
    self._check_space(step, sum(x.nbytes for x in jax.tree.leaves((state, sums))))
    meta = {
      "epoch": epoch,
      "step": step,
      "config": config_json(config),
      "history": history,
      "pending": pending,
      "checksums": checksums((state, sums)),
      "sums": {k: [list(v.shape), str(v.dtype)] for k, v in sums.items()},  # What `restore` reads back.
    }
    try:
      self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave((state, sums)), meta=ocp.args.JsonSave(meta)),
      )
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(
        f"Could not write the checkpoint of step {step} to {self.directory} ({short(e)}). Is the disk "
        "full or the directory not writable? Free space and rerun the same command: the run resumes "
        "from its last committed checkpoint."
      ) from e

  def _check_space(self, step: int, nbytes: int) -> None:
    """CheckpointError before the write if the local disk has clearly too little room for one more
    checkpoint (its arrays plus 10% and 1 MiB): one clear message instead of a write that fails half-way
    in orbax's background threads. A disk that fills up during the write still fails there."""
    if "://" in self.directory or not os.path.isdir(self.directory):
      return
    need, free = nbytes * 1.1 + 2**20, shutil.disk_usage(self.directory).free
    if free < need:
      raise CheckpointError(
        f"Could not write the checkpoint of step {step} to {self.directory}: it needs about "
        f"{need / 2**20:.1f} MiB and the disk has {free / 2**20:.1f} MiB free. Free space and rerun the "
        "same command: the run resumes from its last committed checkpoint."
      )

  def restore(self, step: int, state, sums: dict, config) -> Restored:
    """Checkpoint `step`; `state` and `sums` give the structure and shardings. CheckpointError if it is
    unreadable or damaged (`_verify`), ConfigError if its config differs from `config` (not a
    corruption: falling back would not help)."""
    where = os.path.join(self.directory, str(step))
    try:
      meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001 -- any failure here means an unreadable checkpoint.
      raise CheckpointError(f"cannot read the metadata of {where} ({short(e)})") from e
    diff = rundir.config_diff(meta["config"], config_json(config))
    if diff:
      raise ConfigError(
        f"The checkpoint at {where} was written with a different config ({'; '.join(diff)}). Resume "
        "with the original config, or use a new --workdir to start a different run."
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (state, _saved_sums(meta, sums)))
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    try:
      restored = self.manager.restore(step, args=args)["state"]
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(
        f"cannot restore the training state from {where} ({short(e)}): corrupted, or written by "
        "another model / optimiser"
      ) from e
    _verify(restored, meta.get("checksums"), where)
    missing = [k for k in sums if k not in restored[1]]
    if missing:
      logging.warning(
        "%s was written without the running sums %s (by an older aplx, or with diagnostics off): they "
        "restart at this step, so epoch %d's memorisation diagnostics cover only the steps after it.",
        where,
        ", ".join(missing),
        meta["epoch"] + 1,
      )
    restored_sums = {k: restored[1].get(k, v) for k, v in sums.items()}  # Only the sums asked for.
    return Restored(restored[0], restored_sums, meta["epoch"], meta.get("history", []), meta.get("pending"))

  def restore_newest(self, state, sums: dict, config) -> Restored:
    """The newest checkpoint that restores, else the inputs at epoch 0 (no checkpoint).

    A newer checkpoint that cannot be read (e.g. corrupted by a crash mid-write) is moved aside (never
    deleted) and the run resumes from the one before, with a warning. If no checkpoint restores,
    nothing is moved and the run refuses to start over.
    """
    failures = []
    for step in reversed(self.steps()):
      try:
        restored = self.restore(step, state, sums, config)
      except CheckpointError as e:
        failures.append((step, str(e)))
        continue
      if failures:
        self._set_aside([s for s, _ in failures])
        logging.warning(
          "RESUMING FROM AN OLDER CHECKPOINT (step %d): the newer %s could not be restored and %s moved "
          "to %s: %s",
          step,
          ", ".join(str(s) for s, _ in failures),
          "was" if len(failures) == 1 else "were",
          self.aside,
          "; ".join(f for _, f in failures),
        )
      logging.info(
        "Resumed from %s (epoch %d, step %d).", os.path.join(self.directory, str(step)), restored.epoch, step
      )
      return restored
    if failures:
      raise CheckpointError(
        f"No checkpoint in {self.directory} could be restored ({failures[0][1]}). Refusing to start "
        "from scratch over them: move the directory away (or use another --workdir) to start over."
      )
    return Restored(state, sums, 0, [], None)

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable checkpoint steps out of the directory (process 0), then every process rescans."""
    if jax.process_index() == 0:
      aside = rundir.path(self.aside)
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        src = rundir.path(self.directory) / str(step)
        src.rename(aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices("aplx_checkpoints_set_aside")
    self.manager.reload()


def restore_checkpoint(
  workdir: str, state, config: ml_collections.ConfigDict, step: int | None = None
) -> tuple:
  """(state, completed epochs) from the checkpoint of `step` (default: the newest) in `workdir`, read
  only: nothing is moved or written. For tools that use a trained run (`experiments.predict`); `state`
  (`create_train_state`) gives the structure and the shardings; `config` must be the run's."""
  directory = os.path.join(workdir, "checkpoints")
  if not rundir.path(directory).exists():
    raise CheckpointError(f"No checkpoint directory {directory}: is {workdir} a run's workdir?")
  with Checkpoints(workdir, read_only=True) as checkpoints:
    steps = checkpoints.steps()
    if step is None and not steps:
      raise CheckpointError(f"No checkpoint in {directory} yet: a run saves one per finished epoch.")
    if step is not None and step not in steps:
      raise CheckpointError(
        f"No checkpoint of step {step} in {directory}; its steps are {steps} (the run keeps the "
        "newest config.keep_checkpoints)."
      )
    restored = checkpoints.restore(steps[-1] if step is None else step, state, zero_sums(), config)
  return restored.state, restored.epoch
