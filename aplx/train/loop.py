"""The program: `train_and_evaluate(config, workdir)`, read top to bottom.

Determinism: the batch at global step s and the PRNG key of step s are pure functions of (config.seed,
s), the noisy label of an example is a pure function of (config.noise.seed, example id), and whether it
is held out for validation (`config.val_fraction`) of (config.seed, example id). A run resumed from any
checkpoint therefore ends with exactly the parameters of an uninterrupted run.
"""

import collections
import contextlib
import os
import signal
import threading

from absl import logging
import jax
import ml_collections

from aplx import data as data_lib
from aplx import losses, rundir
from aplx.train import evaluation, feed, optimizer, run_log, steps
from aplx.train.checkpoint import Checkpoints
from aplx.train.config import validate_config
from aplx.train.run_log import Preempted

# How many train steps the host may dispatch ahead of the device: bounds how long a preemption signal
# waits for already-queued work (a few step times), without a per-step host read of the metrics.
MAX_STEPS_AHEAD = 2


class PreemptionFlag:
  """`flag(step)` is True once the job is asked to stop: SIGTERM (one process), or orbax's multi-host
  preemption sync (every process agrees on the same step)."""

  def __init__(self, checkpoints: Checkpoints):
    self.checkpoints = checkpoints
    self.received = False
    self.previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __call__(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self.checkpoints.reached_preemption(step)  # A collective.
    return self.received

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint. Returns the per-epoch
  metrics. Raises `Preempted` after a preemption checkpoint is committed (rerun to resume).

  `workdir` is a local path or a URI that etils.epath and orbax understand (gs://...). The run
  directory's files are described in `aplx.rundir`.
  """
  config = validate_config(config)  # Before any data or the workdir is touched.
  workdir = str(workdir) if "://" in str(workdir) else os.path.abspath(workdir)
  rundir.path(workdir).mkdir(parents=True, exist_ok=True)

  # ----- Data: TFDS, label noise from (noise seed, id), validation split from (seed, id). ----------
  ds = feed.load_data(config)
  steps_per_epoch = data_lib.steps_per_epoch(ds, config.batch_size, **feed.layout(config))
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
  fresh_sums = jax.jit(steps.zero_sums, out_shardings=state.step.sharding)

  with contextlib.ExitStack() as stack:
    # ----- Resume. --------------------------------------------------------------------------------
    checkpoints = stack.enter_context(Checkpoints(workdir, keep=config.keep_checkpoints))
    status = stack.enter_context(run_log.RunStatus(workdir))  # 'failed' / 'preempted' on the way out.
    state, sums, epoch = checkpoints.restore_newest(state, fresh_sums(), config)
    writer = stack.enter_context(run_log.MetricWriter(workdir, resume_epoch=epoch))
    step = int(state.step)
    status.start(config, step=step, epoch=epoch)
    run_log.log_start(config, ds, steps_per_epoch, workdir)
    kwargs = {"start_step": step, "steps_per_epoch": steps_per_epoch, "max_steps": max_steps}
    batches = stack.enter_context(contextlib.closing(feed.make_feed(config, ds, mesh, step_fn, **kwargs)))
    preempted = stack.enter_context(PreemptionFlag(checkpoints))
    progress = run_log.Progress(step, total_steps)
    in_flight = collections.deque()  # Small arrays from recent steps: waiting on the oldest bounds the queue.

    # ----- Train: a log line every log_every_steps steps into the epoch and at its end; at the end of
    # an epoch evaluate, checkpoint, then record. --------------------------------------------------
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
        record = run_log.train_record(sums, epoch + 1, step, schedule(step - 1), seconds, ds) | evaluate(
          state
        )
        epoch += 1
        sums = fresh_sums()
        checkpoints.save(state, sums, epoch, config)  # Committed before the record is written.
        writer.write(record)
        run_log.log_epoch(record, config.epochs, progress.eta(step))
        progress.next_epoch()
        if step < max_steps and preempted(step):
          logging.warning("Preempted at step %d (end of epoch %d; its checkpoint is committed).", step, epoch)
          raise Preempted(step, workdir)
      elif preempted(step):
        logging.warning("Preempted at step %d: saving a mid-epoch checkpoint and stopping.", step)
        checkpoints.save(state, sums, epoch, config)
        raise Preempted(step, workdir)
    status.end(finished=step >= total_steps, step=step, epoch=len(writer.history))
  return writer.history
