"""Training and evaluation: data parallel over a device mesh, orbax checkpoints, exact resume.

`train_and_evaluate(config, workdir)` is the whole program, readable top to bottom. The parts it is made of
(`load_data`, `make_optimizer`, `make_train_step`, `make_eval_step`, `create_train_state`) are importable
on their own for tests, benchmarks and tools (`experiments.predict` adds `make_predict_step` and
`restore_checkpoint`).

Parallelism: one `jax.jit` over a 1-D device mesh with axis 'data'. Batches are sharded `P('data')`,
parameters, batch statistics and optimiser state are replicated `P()`; XLA inserts the all-reduces, so
BatchNorm statistics and gradients are global across devices and hosts. The same code runs on 1 CPU, 8
fake CPU devices, a GPU node, a multi-host GPU cluster or a TPU slice.

Feeding: batches are made on the host (`data.train_batches`) and placed on the mesh one step at a time,
or, with `config.device_data`, the training set stays on the devices and the steps between two log lines
run in one `lax.scan` call whose batches are made there (`make_multi_step`, `aplx.data.device`): the same
batches, hence the same run.

Determinism: the batch at global step s and the PRNG key of step s are pure functions of (config.seed,
s), the noisy label of an example is a pure function of (config.noise.seed, example id), and whether it
is held out for validation (`config.val_fraction`) of (config.seed, example id). A run resumed from any
checkpoint therefore ends with exactly the parameters of an uninterrupted run.
"""

import collections
from collections.abc import Callable, Mapping
import functools
import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from aplx import _deps, cpu, losses
from aplx import noise as noise_lib

with _deps.extra("train,data", __name__):
  from absl import logging
  from flax import nnx, struct
  import ml_collections
  import optax
  import orbax.checkpoint as ocp

  from aplx import data as data_lib
  from aplx import models, rundir

# How many train steps the host may dispatch ahead of the device: bounds how long a preemption signal
# waits for already-queued work (a few step times), without a per-step host read of the metrics.
MAX_STEPS_AHEAD = 2


@struct.dataclass
class TrainState:
  """Everything that determines the rest of a run. Saved whole in every checkpoint."""

  step: jax.Array
  params: nnx.State
  batch_stats: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # Raw uint32[2] root key; step s uses fold_in(rng, s).


# ---------------------------------------------------------------------------------------------------
# Optimiser.
# ---------------------------------------------------------------------------------------------------


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int, epochs: int) -> optax.Schedule:
  """The learning rate as a function of the step, constant within an epoch like PyTorch's schedulers.

  - "cosine": `CosineAnnealingLR(T_max=epochs, eta_min)` stepped once per epoch:
    lr(e) = eta_min + (lr - eta_min) (1 + cos(pi e / epochs)) / 2.
  - "exponential": `ExponentialLR(gamma=decay_rate)` stepped per epoch: lr(e) = lr * decay_rate^e.
  - "constant".
  """
  if optim.schedule == "cosine":
    alpha = optim.eta_min / optim.lr if optim.lr else 0.0
    per_epoch = optax.cosine_decay_schedule(optim.lr, decay_steps=epochs, alpha=alpha)
  elif optim.schedule == "exponential":
    per_epoch = optax.exponential_decay(optim.lr, transition_steps=1, decay_rate=optim.decay_rate)
  elif optim.schedule == "constant":
    per_epoch = optax.constant_schedule(optim.lr)
  else:
    raise ValueError(f"config.optim.schedule={optim.schedule!r}: use 'cosine', 'exponential' or 'constant'.")
  return lambda step: per_epoch(step // steps_per_epoch)


def make_optimizer(
  optim: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """SGD as the authors ran it in PyTorch, from optax parts.

  Order of PyTorch's `clip_grad_norm_(5.0)` then `SGD(momentum, nesterov, weight_decay)`: clip the raw
  gradient by its global norm, add `weight_decay * param` to it (coupled L2, applied to every parameter
  like PyTorch), then heavy-ball or Nesterov momentum with dampening 0, then the learning rate.

  `optim.l1` (ANL's delta, default 0): the gradient of `l1 * sum |theta|` over every parameter, sign(theta)
  with sign(0) = 0 as torch's abs().backward(), added before clipping, as the ANL code adds the
  penalty to the loss before `backward()`.
  """
  parts = []
  if optim.get("l1"):
    l1 = optim.l1
    parts.append(
      optax.stateless(
        lambda updates, params: jax.tree.map(lambda g, p: g + l1 * jnp.sign(p), updates, params)
      )
    )
  if optim.grad_clip:
    parts.append(optax.clip_by_global_norm(optim.grad_clip))
  if optim.weight_decay:
    parts.append(optax.add_decayed_weights(optim.weight_decay))
  parts.append(optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov))
  return optax.chain(*parts)


# ---------------------------------------------------------------------------------------------------
# Model and state.
# ---------------------------------------------------------------------------------------------------


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nnx.Module:
  return models.get(
    config.model.name, num_classes=num_classes, rngs=nnx.Rngs(config.seed), **config.model.get("kwargs", {})
  )


def create_train_state(
  config, model: nnx.Module, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> tuple[nnx.GraphDef, nnx.GraphDef, TrainState]:
  """Returns (train graphdef, eval graphdef, state replicated over `mesh`)."""
  model.eval()
  eval_graphdef = nnx.graphdef(model)
  model.train()
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def init(params, batch_stats):
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      opt_state=tx.init(params),
      rng=jax.random.PRNGKey(config.seed),
    )

  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.jit(init, out_shardings=replicated)(params, batch_stats)
  return graphdef, eval_graphdef, state


# ---------------------------------------------------------------------------------------------------
# Train and eval steps.
# ---------------------------------------------------------------------------------------------------


def make_train_step(
  graphdef: nnx.GraphDef, loss_fn: Callable[..., jax.Array], tx: optax.GradientTransformation
) -> Callable[..., tuple[TrainState, dict]]:
  """Returns `step(state, batch, sums) -> (state, sums)`, to be jitted by the caller.

  `sums` accumulates on device (no host sync per step): loss sum, correct against noisy and clean
  labels, example count, and `first_bad_step` (the first step whose loss was NaN/inf, else int max).
  """
  needs_key = getattr(loss_fn, "needs_key", False)

  def step(state: TrainState, batch: Mapping[str, jax.Array], sums: dict) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(state.rng, state.step)

    model = nnx.merge(graphdef, state.params, state.batch_stats)

    def objective(model):
      logits = model(batch["image"])
      per_example = loss_fn(logits, batch["label"], key=key) if needs_key else loss_fn(logits, batch["label"])
      return per_example.mean(), (per_example, logits)

    # nnx.grad differentiates w.r.t. the nnx.Param variables and carries the BatchNorm updates out.
    grads, (per_example, logits) = nnx.grad(objective, has_aux=True)(model)
    batch_stats = nnx.state(model, nnx.BatchStat)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    pred = logits.argmax(-1)
    loss = per_example.mean()
    sums = {
      "loss": sums["loss"] + per_example.sum(),
      "correct_noisy": sums["correct_noisy"] + (pred == batch["label"]).sum(),
      "correct_clean": sums["correct_clean"] + (pred == batch["clean_label"]).sum(),
      "count": sums["count"] + per_example.size,
      "first_bad_step": jnp.where(
        jnp.isfinite(loss), sums["first_bad_step"], jnp.minimum(sums["first_bad_step"], state.step)
      ),
    }
    new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, sums

  return step


def jit_train_step(step: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """jit with explicit layouts: state and sums replicated, batch sharded over 'data', state and sums
  donated. Pinning the output layouts to the input layouts keeps the step from recompiling after
  its first call. On a CPU, XLA's multi-threaded convolutions (`aplx.cpu.compiler_options`)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  return jax.jit(
    step,
    in_shardings=(replicated, batch, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0, 2),
    compiler_options=cpu.compiler_options(),
  )


def make_multi_step(step: Callable, make_batch: Callable) -> Callable[..., tuple[TrainState, dict]]:
  """Returns `multi(state, data, chunk, sums) -> (state, sums)`: `step` (`make_train_step`) over the
  steps of `chunk` in a `lax.scan`, each batch made on the device by `make_batch(data, inputs)` from
  the device-resident `data` and that step's slice of `chunk` (`aplx.data.device`)."""

  def multi(state: TrainState, data: Mapping, chunk: Mapping, sums: dict) -> tuple[TrainState, dict]:
    def body(carry, inputs):
      return step(carry[0], make_batch(data, inputs), carry[1]), None

    return jax.lax.scan(body, (state, sums), chunk)[0]

  return multi


def jit_multi_step(multi: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """`jit_train_step` for `make_multi_step`: the data replicated, each step's inputs of the chunk
  sharded over 'data' along the batch axis, state and sums donated."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  chunk = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  return jax.jit(
    multi,
    in_shardings=(replicated, replicated, chunk, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0, 3),
    compiler_options=cpu.compiler_options(),
  )


def zero_sums() -> dict:
  """Fresh epoch accumulators for `make_train_step` (jit with a replicated out_sharding to place them)."""
  return {
    "loss": jnp.zeros((), jnp.float32),
    "correct_noisy": jnp.zeros((), jnp.int32),
    "correct_clean": jnp.zeros((), jnp.int32),
    "count": jnp.zeros((), jnp.int32),
    "first_bad_step": jnp.array(np.iinfo(np.int32).max, jnp.int32),
  }


def make_eval_step(eval_graphdef: nnx.GraphDef) -> Callable[..., dict]:
  """Returns `step(state, batch) -> {"correct", "count"}` over the unpadded (mask == 1) rows, correct
  against `batch["label"]` (clean); plus "correct_noisy" against `batch["noisy_label"]` when the batch
  has one (the train and validation splits)."""

  def step(state: TrainState, batch: Mapping[str, jax.Array]) -> dict:
    model = nnx.merge(eval_graphdef, state.params, state.batch_stats)
    pred = model(batch["image"]).argmax(-1)
    mask = batch["mask"].astype(jnp.int32)
    sums = {"correct": ((pred == batch["label"]) * mask).sum(), "count": mask.sum()}
    if "noisy_label" in batch:
      sums["correct_noisy"] = ((pred == batch["noisy_label"]) * mask).sum()
    return sums

  return step


def evaluate(
  eval_step, state: TrainState, ds, batch_size: int, batch_sharding, split: str = "test", num_threads: int = 1
) -> dict:
  """Accuracy on a split of `ds` (`data.eval_batches`: every process reads its rows of each global
  batch): {"acc_clean"} against the clean labels, plus {"acc_noisy"} on the train and val splits."""
  totals = collections.Counter()
  for batch in data_lib.eval_batches(
    ds,
    batch_size=batch_size,
    split=split,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    num_threads=num_threads,
  ):
    for k, v in jax.device_get(eval_step(state, global_batch(batch, batch_sharding))).items():  # 1 read.
      totals[k] += int(v)
  count = max(totals["count"], 1)
  out = {"acc_clean": totals["correct"] / count}
  if "correct_noisy" in totals:
    out["acc_noisy"] = totals["correct_noisy"] / count
  return out


def make_predict_step(eval_graphdef: nnx.GraphDef) -> Callable[..., jax.Array]:
  """Returns `step(state, batch) -> probs`, float32 [b, K]: the softmax of the model in eval mode
  (`experiments.predict`)."""

  def step(state: TrainState, batch: Mapping[str, jax.Array]) -> jax.Array:
    model = nnx.merge(eval_graphdef, state.params, state.batch_stats)
    return jax.nn.softmax(model(batch["image"]).astype(jnp.float32), axis=-1)

  return step


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process, axis 'data', with compiler-chosen (Auto)
  shardings for intermediates: only the inputs' layout is fixed."""
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def global_batch(local: Mapping[str, np.ndarray], sharding: jax.sharding.NamedSharding) -> dict:
  """Assembles this process's share of a batch into one global array sharded over the mesh."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


# ---------------------------------------------------------------------------------------------------
# Checkpoints.
# ---------------------------------------------------------------------------------------------------


def _config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


class CheckpointError(RuntimeError):
  """A checkpoint could not be read or written; the message says what to do."""


def _short(e: BaseException, limit: int = 240) -> str:
  """An exception in one short line: orbax/TensorStore errors can carry kilobytes of spec."""
  text = " ".join(str(e).split()) or type(e).__name__
  return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _restore_step(manager, step: int, state: TrainState, sums: dict, config) -> tuple[TrainState, dict, int]:
  """Restores one checkpoint step; CheckpointError if it is unreadable, ConfigError if its config
  differs from `config` (not a corruption: falling back would not help)."""
  where = os.path.join(str(manager.directory), str(step))
  try:
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  except Exception as e:  # noqa: BLE001 -- any failure here means an unreadable checkpoint.
    raise CheckpointError(f"cannot read the metadata of {where} ({_short(e)})") from e
  diff = rundir.config_diff(meta["config"], _config_json(config))
  if diff:
    raise ConfigError(
      f"The checkpoint at {where} was written with a different config ({'; '.join(diff)}). Resume "
      "with the original config, or use a new --workdir to start a different run."
    )
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (state, sums))
  try:
    restored, sums = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))[
      "state"
    ]
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(
      f"cannot restore the training state from {where} ({_short(e)}): corrupted, or written by "
      "another model / optimiser"
    ) from e
  return restored, sums, meta["epoch"]


def _restore_or_keep(
  manager: ocp.CheckpointManager, state: TrainState, sums: dict, config
) -> tuple[TrainState, dict, int]:
  """Restores (state, epoch sums, completed epochs) from the newest checkpoint that restores, else
  returns the inputs (no checkpoint).

  A newer checkpoint that cannot be read (e.g. corrupted by a crash mid-write) is moved aside to
  `<workdir>/checkpoints_unreadable/<step>` (never deleted) and the run resumes from the one before,
  with a warning. If no checkpoint restores, nothing is moved and the run refuses to start over.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  failures = []
  for step in steps:
    try:
      restored = _restore_step(manager, step, state, sums, config)
    except CheckpointError as e:
      failures.append((step, str(e)))
      continue
    if failures:
      _set_aside(manager, [s for s, _ in failures])
      logging.warning(
        "RESUMING FROM AN OLDER CHECKPOINT (step %d): the newer %s could not be restored and %s moved "
        "to %s: %s",
        step,
        ", ".join(str(s) for s, _ in failures),
        "was" if len(failures) == 1 else "were",
        _aside_dir(manager),
        "; ".join(f for _, f in failures),
      )
    logging.info(
      "Resumed from %s (epoch %d, step %d).",
      os.path.join(str(manager.directory), str(step)),
      restored[2],
      step,
    )
    return restored
  if failures:
    raise CheckpointError(
      f"No checkpoint in {manager.directory} could be restored ({failures[0][1]}). Refusing to start "
      "from scratch over them: move the directory away (or use another --workdir) to start over."
    )
  return state, sums, 0


def restore_checkpoint(
  workdir: str, state: TrainState, config: ml_collections.ConfigDict, step: int | None = None
) -> tuple[TrainState, int]:
  """(state, completed epochs) from the checkpoint of `step` (default: the newest) in `workdir`, read
  only: nothing is moved or written. For tools that use a trained run (`experiments.predict`); `state`
  (`create_train_state`) gives the structure and the shardings; `config` must be the run's."""
  directory = os.path.join(workdir, "checkpoints")
  if not rundir.path(directory).exists():
    raise CheckpointError(f"No checkpoint directory {directory}: is {workdir} a run's workdir?")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    steps = sorted(manager.all_steps())
    if step is None and not steps:
      raise CheckpointError(f"No checkpoint in {directory} yet: a run saves one per finished epoch.")
    if step is not None and step not in steps:
      raise CheckpointError(
        f"No checkpoint of step {step} in {directory}; its steps are {steps} (the run keeps the "
        "newest config.keep_checkpoints)."
      )
    state, _, epoch = _restore_step(manager, steps[-1] if step is None else step, state, zero_sums(), config)
  finally:
    manager.close()
  return state, epoch


def _aside_dir(manager) -> str:
  return os.path.join(os.path.dirname(str(manager.directory).rstrip("/")), "checkpoints_unreadable")


def _set_aside(manager, steps: list[int]) -> None:
  """Moves unreadable checkpoint steps out of the manager's directory (process 0), then every process
  rescans it."""
  if jax.process_index() == 0:
    aside = rundir.path(_aside_dir(manager))
    aside.mkdir(parents=True, exist_ok=True)
    for step in steps:
      src = rundir.path(manager.directory) / str(step)
      dst = aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
      src.rename(dst)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices("aplx_checkpoints_set_aside")
  manager.reload()


def _save(manager: ocp.CheckpointManager, state: TrainState, sums: dict, epoch: int, config) -> None:
  """Saves (state, running epoch sums) and `epoch`, the number of completed epochs, and waits until the
  checkpoint is committed. A failed write (full disk, lost bucket) raises one CheckpointError naming
  the directory."""
  step = int(state.step)
  try:
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave((state, sums)),
        meta=ocp.args.JsonSave({"epoch": epoch, "step": step, "config": _config_json(config)}),
      ),
    )
    manager.wait_until_finished()
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(
      f"Could not write the checkpoint of step {step} to {manager.directory} ({_short(e)}). Is the disk "
      "full or the directory not writable? Free space and rerun the same command: the run resumes from "
      "its last committed checkpoint."
    ) from e


# ---------------------------------------------------------------------------------------------------
# Metrics output.
# ---------------------------------------------------------------------------------------------------


class MetricWriter:
  """metrics.jsonl (`aplx.rundir`) and TensorBoard summaries in the workdir; process 0 only.

  `history` holds every record of the run so far (on process 0), resumed epochs included.
  """

  def __init__(self, workdir: str, resume_epoch: int):
    self.active = jax.process_index() == 0
    self.workdir = workdir
    self.tb = None
    self.history = []
    if not self.active:
      return
    # Drop lines of epochs that the resumed run will redo (and a torn last line), so the log matches
    # an uninterrupted run.
    self.history = [r for r in rundir.read_metrics(workdir) if r["epoch"] <= resume_epoch]
    rundir.write_metrics(workdir, self.history)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, record: dict) -> None:
    if not self.active:
      return
    self.history.append(record)
    rundir.append_metrics(self.workdir, record)
    for k, v in record.items():
      if k != "epoch":
        self.tb.add_scalar(k, v, record["epoch"])
    self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


read_metrics = rundir.read_metrics  # The per-epoch records of a run.


class Preempted(Exception):
  """Raised by `train_and_evaluate` after a preemption checkpoint is committed: rerun to resume.
  `experiments.main` exits with `rundir.PREEMPTED_EXIT_CODE`."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f"Preempted at step {step}; checkpoint committed in {workdir}. Rerun to resume.")
    self.step = step


class NonFiniteLossError(FloatingPointError):
  pass


# ---------------------------------------------------------------------------------------------------
# The program.
# ---------------------------------------------------------------------------------------------------


class ConfigError(ValueError):
  """The config cannot run as given; the message names the field and the fix."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the whole config before any data is read or the workdir is touched; raises ConfigError
  naming the field and the fix."""

  def bad(field, value, fix):
    raise ConfigError(f"config.{field}={value!r}: {fix}")

  if config.dataset not in data_lib.DATASETS:
    bad("dataset", config.dataset, f"use one of {sorted(data_lib.DATASETS)}.")
  if config.model.name not in models.names():
    bad("model.name", config.model.name, f"use one of {models.names()}.")
  try:
    losses.get(config.loss.name, **config.loss.get("params", {}))
  except (ValueError, TypeError) as e:  # The registry's message names the valid losses / parameters.
    raise ConfigError(f"config.loss: {e}") from e
  kind = config.noise.type.partition(":")[0]
  if kind not in noise_lib.NOISE_MODELS:
    bad("noise.type", config.noise.type, f"use one of {sorted(noise_lib.NOISE_MODELS)} (or human:<field>).")
  if not 0.0 <= config.noise.rate <= 1.0:
    bad("noise.rate", config.noise.rate, "a noise rate is in [0, 1].")
  for field in ("epochs", "batch_size", "eval_batch_size", "log_every_steps"):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      bad(field, value, "must be a positive integer (0 is not 'the default': leave the field out).")
    if field in ("batch_size", "eval_batch_size") and value % jax.device_count():
      bad(
        field,
        value,
        f"must be divisible by the number of devices ({jax.device_count()}); pick a "
        f"multiple of {jax.device_count()}.",
      )
  spec = data_lib.DATASETS[config.dataset]
  workers, size = config.get("data_workers", 0), config.get("image_size")  # Absent in older configs.
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
    bad("data_workers", workers, "the number of grain worker processes is an integer >= 0 (0: none).")
  if size is not None and (spec.storage != "stream" or type(size) is not int or size < 8):
    bad(
      "image_size",
      size,
      "only streamed datasets (webvision, clothing1m) take an image size, an integer >= 8; "
      f"{config.dataset} keeps its own ({spec.image_shape[0]}): leave it None.",
    )
  device_data = config.get("device_data", False)  # Absent in older configs.
  if not isinstance(device_data, bool):
    bad("device_data", device_data, "True (batches made on the devices) or False (on the host).")
  if device_data and spec.storage == "stream":
    bad(
      "device_data",
      device_data,
      f"{config.dataset} is streamed from disk: device_data keeps an in-RAM training set (mnist, cifar10, "
      "cifar100, their CIFAR-N variants) on the devices. Leave it False.",
    )
  if config.get("max_steps") is not None and config.max_steps < 1:
    bad("max_steps", config.max_steps, "must be >= 1, or None for the whole run.")
  fraction, fold = config.get("val_fraction", 0.0), config.get("val_fold", 0)  # Absent in older configs.
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
    bad("val_fraction", fraction, "the fraction held out for validation is in [0, 1) (0: none, the paper's).")
  if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
    bad("val_fold", fold, "must be an integer >= 0.")
  if fold and not fraction:
    bad("val_fold", fold, "needs config.val_fraction > 0 (folds of width val_fraction).")
  if (fold + 1) * fraction > 1.0 + data_lib.pipeline.FOLD_SLACK:
    last = int((1.0 + data_lib.pipeline.FOLD_SLACK) / fraction) - 1
    bad("val_fold", fold, f"with val_fraction={fraction} the folds are 0 .. {last}.")
  optim = config.optim
  if optim.schedule not in ("cosine", "exponential", "constant"):
    bad("optim.schedule", optim.schedule, "use 'cosine', 'exponential' or 'constant'.")
  if not optim.lr > 0:
    bad("optim.lr", optim.lr, "the learning rate must be > 0.")
  for field in ("momentum", "weight_decay", "grad_clip", "l1"):
    if optim.get(field) is not None and optim.get(field) < 0:
      bad(f"optim.{field}", optim.get(field), "must be >= 0 (0 turns it off).")


def load_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """The dataset of `config` as the trainer sees it: TFDS in RAM, label noise from (noise seed, example
  id), and the validation split (`config.val_fraction`, `config.val_fold`) from (seed, example id),
  held out of the training set (`data.hold_out`). ConfigError if the split leaves nothing to validate
  on or too little to train on."""
  ds = data_lib.load_dataset(
    config.dataset,
    data_dir=config.get("data_dir"),
    subset=config.get("subset"),
    noise=config.noise.type,
    rate=config.noise.rate,
    noise_seed=config.noise.seed,
    image_size=config.get("image_size"),
    **config.noise.get("options", {}),
  )
  fraction, fold = config.get("val_fraction", 0.0), config.get("val_fold", 0)
  if not fraction:
    return ds
  n = ds.num_train
  ds = data_lib.hold_out(ds, fraction, seed=config.seed, fold=fold)
  if ds.num_val == 0:
    raise ConfigError(
      f"config.val_fraction={fraction!r} (fold {fold}, seed {config.seed}) holds out none of the {n} "
      f"training examples (each is held out with that probability): raise it well above 1/{n}, or set 0 "
      "to hold out nothing."
    )
  if ds.num_train < config.batch_size:
    raise ConfigError(
      f"config.val_fraction={fraction!r} leaves {ds.num_train} of the {n} training examples, fewer than "
      f"config.batch_size={config.batch_size}: lower val_fraction or the batch size."
    )
  return ds


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains `config` in `workdir`, resuming from its newest readable checkpoint. Returns the per-epoch
  metrics. Raises `Preempted` after a preemption checkpoint is committed (rerun to resume).

  `workdir` is a local path or a URI that etils.epath and orbax understand (gs://...). The run
  directory's files are described in `aplx.rundir`.
  """
  validate_config(config)  # Before any data or the workdir is touched.
  remote = "://" in str(workdir)
  workdir = str(workdir) if remote else os.path.abspath(workdir)
  rundir.path(workdir).mkdir(parents=True, exist_ok=True)

  # ----- Data: TFDS, label noise from (noise seed, id), validation split from (seed, id). ----------
  ds = load_data(config)
  # drop_remainder=False (the authors' PyTorch loaders): a smaller last step per epoch, rounded down to
  # a multiple of the device count; it compiles the train step once more.
  layout = {"drop_remainder": config.get("drop_remainder", True), "multiple_of": jax.device_count()}
  steps_per_epoch = data_lib.steps_per_epoch(ds, config.batch_size, **layout)
  total_steps = steps_per_epoch * config.epochs

  # ----- Model, optimiser and state, replicated over the device mesh. -----------------------------
  mesh = make_mesh()
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  schedule = make_schedule(config.optim, steps_per_epoch, config.epochs)
  tx = make_optimizer(config.optim, schedule)
  model = create_model(config, ds.num_classes)
  graphdef, eval_graphdef, state = create_train_state(config, model, tx, mesh)
  loss_fn = losses.get(config.loss.name, **config.loss.get("params", {}))
  step_fn = make_train_step(graphdef, loss_fn, tx)
  train_step = jit_train_step(step_fn, mesh)
  eval_step = jax.jit(make_eval_step(eval_graphdef), compiler_options=cpu.compiler_options())

  # ----- Resume. ----------------------------------------------------------------------------------
  manager = ocp.CheckpointManager(
    os.path.join(workdir, "checkpoints"),
    options=ocp.CheckpointManagerOptions(max_to_keep=config.get("keep_checkpoints", 2), create=True),
  )
  writer = batches = None
  try:
    fresh_sums = jax.jit(zero_sums, out_shardings=state.step.sharding)
    state, sums, epoch = _restore_or_keep(manager, state, fresh_sums(), config)
    writer = MetricWriter(workdir, resume_epoch=epoch)
    if jax.process_index() == 0:
      rundir.write_config(workdir, _config_json(config))
      rundir.write_status(workdir, rundir.RUNNING, step=int(state.step), epoch=epoch)
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
        config.get("val_fold", 0),
        ds.num_train,
        steps_per_epoch,
      )
    # ----- Train. ---------------------------------------------------------------------------------
    max_steps = min(config.get("max_steps") or total_steps, total_steps)  # Tests: stop as if killed.
    batch_args = {
      "global_batch_size": config.batch_size,
      "seed": config.seed,
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "augment": config.get("augment", True),
      **layout,
    }
    if config.get("device_data"):
      # The training set stays on the devices; each call runs the steps up to the next log line (or
      # the epoch's end) in a lax.scan, the batches made there (aplx.data.device): same batches.
      data = data_lib.device.put(ds, mesh)
      make_batch = functools.partial(
        data_lib.device.make_batch, kind=ds.augment, mean=ds.mean, std=ds.std, augment=batch_args["augment"]
      )
      multi_step = jit_multi_step(make_multi_step(step_fn, make_batch), mesh)
      chunk_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
      partial_last = steps_per_epoch * config.batch_size > ds.num_train

      def advance(state, sums, step):
        n = _chunk_length(step, steps_per_epoch, config.log_every_steps, max_steps, partial_last)
        chunk = global_batch(data_lib.device.chunk(ds, step, n, **batch_args), chunk_sharding)
        return (*multi_step(state, data, chunk, sums), n)
    else:
      batches = data_lib.train_batches(
        ds, start_step=int(state.step), num_workers=config.get("data_workers", 0), **batch_args
      )

      def advance(state, sums, step):
        del step
        return (*train_step(state, global_batch(next(batches), batch_sharding), sums), 1)

    # Streamed datasets decode their evaluation splits in this many threads.
    evaluate_split = functools.partial(
      evaluate,
      eval_step,
      batch_size=config.eval_batch_size,
      batch_sharding=batch_sharding,
      num_threads=max(1, config.get("data_workers", 0)),
    )
    run_start, run_start_step = time.time(), int(state.step)
    epoch_start = run_start
    step = int(state.step)
    in_flight = collections.deque()  # Small arrays from recent steps: waiting on the oldest bounds the queue.
    with _PreemptionFlag() as preempted:
      while step < max_steps:
        state, sums, n = advance(state, sums, step)
        step += n
        in_flight.append(state.step + 0)  # A new array: the step's outputs are donated to the next step.
        if len(in_flight) > MAX_STEPS_AHEAD:
          in_flight.popleft().block_until_ready()
        # A log line every log_every_steps steps into the epoch and at its end (device data: after
        # every call, which ends at one of these).
        pos = step % steps_per_epoch
        if n > 1 or pos % config.log_every_steps == 0:
          _check_finite(sums, config.optim)
          logging.info(
            "epoch %d/%d  step %d/%d  loss %.4f",
            epoch + 1,
            config.epochs,
            step - epoch * steps_per_epoch,
            steps_per_epoch,
            float(sums["loss"]) / max(int(sums["count"]), 1),
          )
        if step % steps_per_epoch == 0:  # End of an epoch: evaluate, checkpoint, then log.
          train_seconds = time.time() - epoch_start  # Synced by the loss read above; no eval time.
          record = {
            "epoch": epoch + 1,
            "step": step,
            "lr": float(schedule(step - 1)),
            "train_loss": float(sums["loss"]) / int(sums["count"]),
            "train_acc_noisy": int(sums["correct_noisy"]) / int(sums["count"]),
            "train_acc_clean": int(sums["correct_clean"]) / int(sums["count"]),
            "images_per_sec": int(sums["count"]) / max(train_seconds, 1e-9),
            "test_acc": evaluate_split(state, ds)["acc_clean"],
          }
          if not ds.clean_train_labels_known:  # Real noise without clean labels: nothing to report.
            del record["train_acc_clean"]
          for name in ds.eval_sets:  # e.g. webvision's ILSVRC2012 validation images.
            record[f"test_acc_{name}"] = evaluate_split(state, ds, split=name)["acc_clean"]
          if ds.num_val:  # The same eval path on the held-out examples, against both of their labels.
            val = evaluate_split(state, ds, split="val")
            record["val_acc_noisy"] = val["acc_noisy"]
            if ds.clean_train_labels_known:
              record["val_acc_clean"] = val["acc_clean"]
          epoch += 1
          sums = fresh_sums()
          _save(manager, state, sums, epoch, config)  # Committed before the record is written.
          writer.write(record)
          eta = (time.time() - run_start) / (step - run_start_step) * (total_steps - step)
          logging.info(
            "epoch %d/%d  loss %.4f  train acc noisy %.2f%%%s  test acc %.2f%%%s  "
            "lr %.5f  %.0f img/s  ETA %s",
            epoch,
            config.epochs,
            record["train_loss"],
            100 * record["train_acc_noisy"],
            f" clean {100 * record['train_acc_clean']:.2f}%" if "train_acc_clean" in record else "",
            100 * record["test_acc"],
            "".join(
              f"  {k} {100 * v:.2f}%" for k, v in record.items() if k.startswith(("val_", "test_acc_"))
            ),
            record["lr"],
            record["images_per_sec"],
            _hms(eta),
          )
          epoch_start = time.time()
          if step < max_steps and preempted(manager, step):
            logging.warning(
              "Preempted at step %d (end of epoch %d; its checkpoint is committed).", step, epoch
            )
            raise Preempted(step, workdir)
        elif preempted(manager, step):
          logging.warning("Preempted at step %d: saving a mid-epoch checkpoint and stopping.", step)
          _save(manager, state, sums, epoch, config)
          raise Preempted(step, workdir)
  except BaseException as e:
    if jax.process_index() == 0:
      if isinstance(e, Preempted):
        rundir.write_status(workdir, rundir.PREEMPTED, step=e.step)
      else:
        rundir.write_status(workdir, rundir.FAILED, error=_short(e, 1000))
    raise
  finally:
    manager.close()
    if writer is not None:
      writer.close()
    if batches is not None:
      batches.close()  # Stops grain's prefetch threads and worker processes (data_workers).
  if jax.process_index() == 0:
    done = int(state.step) >= total_steps
    rundir.write_status(
      workdir, rundir.FINISHED if done else rundir.RUNNING, step=int(state.step), epoch=len(writer.history)
    )
  return writer.history


class _PreemptionFlag:
  """True once the job is asked to stop: SIGTERM (one process) or orbax's multi-host preemption sync."""

  def __enter__(self):
    self.received = False
    self.previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __call__(self, manager: ocp.CheckpointManager, step: int) -> bool:
    if jax.process_count() > 1:
      return manager.reached_preemption(step)  # Collective: every process agrees on the same step.
    return self.received

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)


def _check_finite(sums: dict, optim) -> None:
  bad = int(sums["first_bad_step"])
  if bad != np.iinfo(np.int32).max:
    if optim.get("grad_clip"):
      advice = (
        f"Gradient clipping is already on (global norm {optim.grad_clip}): lower the learning rate "
        f"(config.optim.lr={optim.lr}) or check the loss hyperparameters."
      )
    else:
      advice = (
        "Lower the learning rate, check the loss hyperparameters, or enable gradient clipping "
        "(config.optim.grad_clip=5.0, as the authors do)."
      )
    raise NonFiniteLossError(
      f"The training loss became NaN or inf at step {bad}. Stopping; the last good checkpoint is "
      f"kept. {advice}"
    )


def _chunk_length(step: int, steps_per_epoch: int, every: int, stop: int, partial_last: bool) -> int:
  """Steps in the device-data call that starts at `step`: up to the next multiple of `every` steps into
  the epoch, the end of the epoch or `stop`, whichever comes first (so every epoch compiles the same
  few lengths). An epoch's partial last batch (smaller, drop_remainder=False) is a call of its own."""
  pos = step % steps_per_epoch
  if partial_last and pos == steps_per_epoch - 1:
    return 1
  return min(every - pos % every, steps_per_epoch - int(partial_last) - pos, stop - step)


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
