"""What a run tells the world: metrics.jsonl and TensorBoard, status.json, and its log lines.

Process 0 writes the run directory's files (`aplx.rundir` describes them); every process logs.
"""

import os
import time

from absl import logging
import jax
import ml_collections
import numpy as np
import scipy.stats

from aplx import rundir
from aplx.train.checkpoint import config_json, short

read_metrics = rundir.read_metrics  # The per-epoch records of a run.


def format_duration(seconds: float) -> str:
  """`h:mm:ss`, e.g. 3725.4 -> '1:02:05'."""
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Preempted(Exception):
  """Raised by `train_and_evaluate` after a preemption checkpoint is committed: rerun to resume.
  `experiments.main` exits with `rundir.PREEMPTED_EXIT_CODE`."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f"Preempted at step {step}; checkpoint committed in {workdir}. Rerun to resume.")
    self.step = step


def train_record(sums: dict, epoch: int, step: int, lr, seconds: float, ds) -> dict:
  """The training fields of an epoch's record, from its on-device sums (one host read each)."""
  count = int(sums["count"])
  record = {
    "epoch": epoch,
    "step": step,
    "lr": float(lr),
    "train_loss": float(sums["loss"]) / count,
    "train_acc_noisy": int(sums["correct_noisy"]) / count,
    "train_acc_clean": int(sums["correct_clean"]) / count,
    "images_per_sec": count / seconds,
  }
  if not ds.clean_train_labels_known:  # Real noise without clean labels: nothing to report.
    del record["train_acc_clean"]
  if "example_loss" in sums:
    record |= memorisation_record(sums, ds)
  return record


def memorisation_record(sums: dict, ds) -> dict:
  """The memorisation and noise-detection fields of an epoch's record (`steps.memorisation_sums`):
  the fractions of the corrupted training examples predicted as their noisy label (memorised), as
  their clean label (corrected) or as neither, the same for the uncorrupted ones, and the AUROC of the
  per-example training loss for telling corrupted from uncorrupted examples (1.0: every corrupted
  example has a higher loss than every uncorrupted one). Fields without examples to count are absent."""
  loss = np.asarray(jax.device_get(sums["example_loss"]))
  seen = ~np.isnan(loss)  # Every example trained on since the sums were reset (not a dropped last batch).
  count, corrupted = int(seen.sum()), int(sums["corrupted"])
  record = {"train_corrupted_fraction": corrupted / count}
  if corrupted:  # The "other" shares from the counts, so that none is 1 - a - b's rounding error.
    memorised, corrected = int(sums["corrupted_memorised"]), int(sums["corrupted_corrected"])
    record["train_corrupted_memorised"] = memorised / corrupted
    record["train_corrupted_corrected"] = corrected / corrupted
    record["train_corrupted_other"] = (corrupted - memorised - corrected) / corrupted
  if count > corrupted:
    uncorrupted, correct = count - corrupted, int(sums["uncorrupted_correct"])
    record["train_uncorrupted_correct"] = correct / uncorrupted
    record["train_uncorrupted_other"] = (uncorrupted - correct) / uncorrupted
  flags = np.zeros(sums["example_loss"].shape, bool)
  flags[ds.train_ids] = ds.train_noisy_labels != ds.train_clean_labels
  auroc = loss_auroc(loss[seen], flags[seen])
  if auroc is not None:
    record["train_loss_auroc"] = auroc
  return record


def loss_auroc(loss: np.ndarray, corrupted: np.ndarray) -> float | None:
  """AUROC of `loss` as a score for `corrupted` (Mann-Whitney U / (n1 n0), ties count 1/2), float64;
  None without examples of both kinds."""
  n1 = int(corrupted.sum())
  n0 = corrupted.size - n1
  if not n1 or not n0:
    return None
  ranks = scipy.stats.rankdata(loss.astype(np.float64))  # Average ranks for ties.
  return float((ranks[corrupted].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


class MetricWriter:
  """metrics.jsonl (append-only) and TensorBoard summaries in the workdir; process 0 only.

  At the start, lines of metrics.jsonl that do not parse are copied to metrics.jsonl.damaged (never
  deleted) with a warning, and the records of `saved` (the checkpoint's) that the file lacks are
  appended. An epoch already recorded is not recorded again (an epoch redone after a fallback gives the
  same record). `history` holds every record of the run so far (on process 0), in epoch order.
  """

  def __init__(self, workdir: str, saved: list[dict]):
    self.active = jax.process_index() == 0
    self.workdir = workdir
    self.tb = None
    self.history = []
    if not self.active:
      return
    records, damaged = rundir.read_metrics_lines(workdir)
    if damaged:
      self._set_aside(damaged)
    have = {r["epoch"] for r in records}
    missing = [r for r in saved if r["epoch"] not in have]
    for record in missing:
      rundir.append_metrics(workdir, record)
    if missing:
      logging.warning(
        "metrics.jsonl lacked the records of epochs %s: appended them from the checkpoint.",
        [r["epoch"] for r in missing],
      )
    self.history = sorted(records + missing, key=lambda r: r["epoch"])
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _set_aside(self, damaged: list[str]) -> None:
    aside = rundir.path(self.workdir) / "metrics.jsonl.damaged"
    known = set(aside.read_bytes().decode(errors="replace").splitlines()) if aside.exists() else set()
    new = [line for line in damaged if line not in known]
    if new:
      with aside.open("a") as f:
        f.write("".join(line + "\n" for line in new))
    logging.warning(
      "metrics.jsonl has %d line(s) that are not records (torn by a kill, or damaged): kept in %s and "
      "skipped. The records they held are restored from the checkpoint where it has them.",
      len(damaged),
      aside,
    )

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def write(self, record: dict) -> None:
    if not self.active or any(r["epoch"] == record["epoch"] for r in self.history):
      return
    self.history.append(record)
    rundir.append_metrics(self.workdir, record)
    for k, v in record.items():
      if isinstance(v, list):  # Per class: its lowest value (e.g. a lost class) as one curve.
        v = min((x for x in v if x is not None), default=None)
        k = f"{k}/min"
      if k != "epoch" and v is not None:
        self.tb.add_scalar(k, v, record["epoch"])
    self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


class RunStatus:
  """status.json (process 0): `start` writes config.json and 'running', `end` 'finished' (or 'stopped'
  at config.max_steps); leaving the block with an exception writes 'preempted' (`Preempted`) or
  'failed'. It never goes backwards: a run whose status
  is 'finished' stays so, and errors that leave the run as it was (`keeps`, e.g. a refused resume)
  write nothing."""

  def __init__(self, workdir: str, keeps: tuple[type[BaseException], ...] = ()):
    self.workdir = workdir
    self.keeps = keeps
    self.active = jax.process_index() == 0

  def __enter__(self):
    self.finished = self.active and rundir.read_status(self.workdir).get("status") == rundir.FINISHED
    return self

  def start(self, config: ml_collections.ConfigDict, step: int, epoch: int) -> None:
    if self.active:
      rundir.write_config(self.workdir, config_json(config))
      if not self.finished:
        rundir.write_status(self.workdir, rundir.RUNNING, step=step, epoch=epoch)

  def end(self, finished: bool, step: int, epoch: int) -> None:
    if self.active:
      rundir.write_status(
        self.workdir, rundir.FINISHED if finished else rundir.STOPPED, step=step, epoch=epoch
      )

  def __exit__(self, kind, e, tb):
    if not self.active or e is None or isinstance(e, self.keeps) or self.finished:
      return
    try:
      if isinstance(e, Preempted):
        rundir.write_status(self.workdir, rundir.PREEMPTED, step=e.step)
      else:
        rundir.write_status(self.workdir, rundir.FAILED, error=short(e, 1000))
    except OSError as write_error:  # A full disk: the error that brought us here is the one to report.
      logging.warning("Could not update %s/status.json (%s).", self.workdir, write_error)


def log_start(config: ml_collections.ConfigDict, ds, steps_per_epoch: int, workdir: str) -> None:
  """The run in one line (and its validation split in another)."""
  logging.info(
    "%s | %s noise %.2f | loss %s | model %s | %d train images, %d steps/epoch x %d epochs "
    "| %d devices, %d processes | workdir %s",
    config.dataset,
    config.noise.type,
    config.noise.rate,
    config.loss.name,
    config.model.name,
    ds.num_train,
    steps_per_epoch,
    config.epochs,
    jax.device_count(),
    jax.process_count(),
    workdir,
  )
  if ds.num_val:
    logging.info(
      "Validation split: %d training examples held out by id (val_fraction %g, fold %d); %d left to "
      "train on, hence %d steps/epoch.",
      ds.num_val,
      config.val_fraction,
      config.val_fold,
      ds.num_train,
      steps_per_epoch,
    )


class Progress:
  """Times the run: images/s of an epoch's training (evaluation excluded), and the ETA."""

  def __init__(self, start_step: int, total_steps: int):
    self.start, self.start_step, self.total_steps = time.time(), start_step, total_steps
    self.epoch_start = self.start

  def epoch_seconds(self) -> float:
    """Seconds since the epoch started, to be read when its training is done (before evaluating)."""
    return max(time.time() - self.epoch_start, 1e-9)

  def next_epoch(self) -> None:
    self.epoch_start = time.time()

  def eta(self, step: int) -> str:
    return format_duration((time.time() - self.start) / (step - self.start_step) * (self.total_steps - step))


def log_step(epoch: int, epochs: int, step_in_epoch: int, steps_per_epoch: int, loss: float) -> None:
  logging.info("epoch %d/%d  step %d/%d  loss %.4f", epoch, epochs, step_in_epoch, steps_per_epoch, loss)


def _lowest_class(per_class: list | None) -> str:
  known = [(v, k) for k, v in enumerate(per_class or []) if v is not None]
  return f"  lowest class {min(known)[1]} {100 * min(known)[0]:.2f}%" if known else ""


def log_epoch(record: dict, epochs: int, eta: str) -> None:
  """The epoch's line: its losses, accuracies, learning rate, speed and the run's ETA."""
  logging.info(
    "epoch %d/%d  loss %.4f  train acc noisy %.2f%%%s  test acc %.2f%%%s  lr %.5f  %.0f img/s  ETA %s",
    record["epoch"],
    epochs,
    record["train_loss"],
    100 * record["train_acc_noisy"],
    f" clean {100 * record['train_acc_clean']:.2f}%" if "train_acc_clean" in record else "",
    100 * record["test_acc"],
    "".join(
      f"  {k} {100 * v:.2f}%"
      for k, v in record.items()
      if k.startswith(("val_", "test_acc_")) and isinstance(v, float)
    )
    + _lowest_class(record.get("test_acc_per_class")),
    record["lr"],
    record["images_per_sec"],
    eta,
  )
