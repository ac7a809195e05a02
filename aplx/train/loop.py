"""The program: `train_and_evaluate(config, workdir)`, read top to bottom.

Determinism: the batch at global step s and the PRNG key of step s are pure functions of (config.seed,
s), the noisy label of an example is a pure function of (config.noise.seed, example id), and whether it
is held out for validation (`config.val_fraction`) of (config.seed, example id). A run resumed from any
checkpoint therefore ends with exactly the parameters of an uninterrupted run.
"""

import collections
import contextlib
import functools
import os
import signal

from absl import logging
import jax
import ml_collections

from aplx import losses, signals
from aplx.train import evaluation, feed, optimizer, run_log, steps
from aplx.train import workdir as workdir_lib
from aplx.train.checkpoint import Checkpoints
from aplx.train.config import ConfigError, validate_config
from aplx.train.run_log import Preempted

# How many train steps the host may dispatch ahead of the device: bounds how long a preemption signal
# waits for already-queued work (a few step times), without a per-step host read of the metrics.
MAX_STEPS_AHEAD = 2


class PreemptionFlag:
  """`flag(step)` is True once the job is asked to stop: SIGTERM or SIGINT in one process
  (`aplx.signals`, caught from process start by `experiments.main`), or orbax's multi-host preemption
  sync (every process agrees on the same step). `check(step)` raises `Preempted` if so (the caller has
  committed what must be kept); `stop_evaluation(step)` is `check` between evaluation batches in one
  process (with several, the collective decides at the next step)."""

  def __init__(self, checkpoints: Checkpoints, workdir: str):
    self.checkpoints, self.workdir = checkpoints, workdir
    self.local = jax.process_count() == 1
    self.previous = {}

  def __enter__(self):
    if self.local:
      previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
      self.previous = previous if signals.install() else {}
    return self

  def __call__(self, step: int) -> bool:
    if not self.local:
      return self.checkpoints.reached_preemption(step)  # A collective.
    return signals.requested() is not None

  def check(self, step: int) -> None:
    if self(step):
      logging.warning("Stopping at step %d (%s); rerun to resume.", step, signals.requested())
      raise Preempted(step, self.workdir)

  def stop_evaluation(self, step: int) -> None:
    if self.local:
      self.check(step)

  def __exit__(self, kind, e, tb):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)
    if isinstance(e, Preempted):
      signals.clear()  # Acted on.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint. Returns the per-epoch
  metrics. Raises `Preempted` after a preemption checkpoint is committed (rerun to resume).

  `workdir` is a local path or a URI that etils.epath and orbax understand (gs://...). The run
  directory's files are described in `aplx.rundir`.
  """
  config = validate_config(config)  # Before any data or the workdir is touched.
  workdir = str(workdir) if "://" in str(workdir) else os.path.abspath(workdir)
  lock = workdir_lib.WorkdirLock(workdir)
  lock.check()  # Another job trains in it: stop now, not after loading the data.

  # ----- Data: TFDS, label noise from (noise seed, id), validation split from (seed, id); checked
  # against the config before the workdir is touched. ------------------------------------------------
  ds = feed.load_data(config)
  steps_per_epoch = feed.steps_per_epoch(config, ds)
  total_steps = steps_per_epoch * config.epochs
  max_steps = min(config.max_steps or total_steps, total_steps)  # Tests: stop as if killed.

  # ----- Model, optimiser, state replicated over the device mesh, steps. --------------------------
  mesh = steps.make_mesh()
  schedule = optimizer.make_schedule(config.optim, steps_per_epoch, config.epochs)
  tx = optimizer.make_optimizer(config.optim, schedule)
  model = steps.create_model(config, ds.num_classes)
  graphdef, eval_graphdef, state = steps.create_train_state(config, model, tx, mesh)
  step_fn = steps.make_train_step(graphdef, losses.get(config.loss.name, **config.loss.params), tx)
  evaluate = evaluation.Evaluator(config, ds, mesh, eval_graphdef)
  num_ids = int(ds.train_ids.max()) + 1 if config.diagnostics and ds.clean_train_labels_known else None
  fresh_sums = jax.jit(functools.partial(steps.zero_sums, num_ids), out_shardings=state.step.sharding)

  with contextlib.ExitStack() as stack:
    # ----- The workdir, held by this job; resume. --------------------------------------------------
    workdir_lib.create(workdir)
    stack.enter_context(lock)
    checkpoints = stack.enter_context(Checkpoints(workdir, keep=config.keep_checkpoints))
    status = stack.enter_context(run_log.RunStatus(workdir, keeps=(ConfigError,)))  # failed / preempted
    preempted = stack.enter_context(PreemptionFlag(checkpoints, workdir))
    state, sums, epoch, history, pending = checkpoints.restore_newest(state, fresh_sums(), config)
    writer = stack.enter_context(run_log.MetricWriter(workdir, saved=history))
    step = int(state.step)
    status.start(config, step=step, epoch=epoch)
    run_log.log_start(config, ds, steps_per_epoch, workdir)
    preempted.check(step)  # Asked to stop during start-up: nothing new to save.
    if pending is not None:  # The checkpoint ends an epoch; its record may not be written yet.
      writer.write(pending | evaluate(state, stop=lambda: preempted.stop_evaluation(step)))
    kwargs = {"start_step": step, "steps_per_epoch": steps_per_epoch, "max_steps": max_steps}
    batches = stack.enter_context(contextlib.closing(feed.make_feed(config, ds, mesh, step_fn, **kwargs)))
    progress = run_log.Progress(step, total_steps)
    in_flight = collections.deque()  # Small arrays from recent steps: waiting on the oldest bounds the queue.

    # ----- Train: a log line every log_every_steps steps into the epoch and at its end; at the end of
    # an epoch checkpoint (with its training record pending), evaluate, then record. -----------------
    while step < max_steps:
      state, sums, n = batches.advance(state, sums, step)
      step += n
      in_flight.append(state.step + 0)  # A new array: the step's outputs are donated to the next step.
      if len(in_flight) > MAX_STEPS_AHEAD:
        in_flight.popleft().block_until_ready()
      if n > 1 or step % steps_per_epoch % config.log_every_steps == 0:  # Device feed: every call.
        steps.check_finite(sums, config.optim)
        loss = float(sums["loss"]) / max(int(sums["count"]), 1)
        run_log.log_step(epoch + 1, config.epochs, step - epoch * steps_per_epoch, steps_per_epoch, loss)
      if step % steps_per_epoch == 0:
        seconds = progress.epoch_seconds()  # Training only: the loss read above waited for the steps.
        train = run_log.train_record(sums, epoch + 1, step, schedule(step - 1), seconds, ds)
        epoch += 1
        sums = fresh_sums()
        checkpoints.save(state, sums, epoch, config, writer.history, pending=train)  # Then the record.
        record = train | evaluate(state, stop=lambda: preempted.stop_evaluation(step))
        writer.write(record)
        run_log.log_epoch(record, config.epochs, progress.eta(step))
        progress.next_epoch()
        if step < max_steps:
          preempted.check(step)
      elif preempted(step):
        logging.warning("Stopping at step %d: saving a mid-epoch checkpoint.", step)
        checkpoints.save(state, sums, epoch, config, writer.history)
        raise Preempted(step, workdir)
    status.end(finished=step >= total_steps, step=step, epoch=len(writer.history))
  return writer.history
