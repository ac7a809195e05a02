"""The pieces of a training step: state, optimiser, schedule, mesh, and the train / eval / predict steps.

Parallelism: one `jax.jit` over a 1-D device mesh with axis 'data'. Batches are sharded `P('data')`,
parameters, batch statistics and optimiser state are replicated `P()`; XLA inserts the all-reduces, so
BatchNorm statistics and gradients are global across devices and hosts. The same code runs on 1 CPU, 8
fake CPU devices, a GPU node, a multi-host GPU cluster or a TPU slice.
"""

from collections.abc import Callable, Mapping

from flax import nnx, struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from aplx import cpu, models

P = jax.sharding.PartitionSpec


@struct.dataclass
class TrainState:
  """Everything that determines the rest of a run. Saved whole in every checkpoint."""

  step: jax.Array
  params: nnx.State
  batch_stats: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # Raw uint32[2] root key; step s uses fold_in(rng, s).


# ---------------------------------------------------------------------------------------------------
# Model and state.
# ---------------------------------------------------------------------------------------------------


def create_model(config: ml_collections.ConfigDict, num_classes: int) -> nnx.Module:
  return models.get(
    config.model.name, num_classes=num_classes, rngs=nnx.Rngs(config.seed), **config.model.kwargs
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
  With the memorisation diagnostics (`zero_sums(num_ids)`), also: the number of corrupted examples
  (label != clean_label), how many of them were predicted as their noisy label (memorised) and as their
  clean label (corrected), how many uncorrupted examples were predicted right, and each example's loss
  at `example_loss[batch["id"]]`, all from the same forward pass as the training loss.
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
    diagnostics = memorisation_sums(sums, batch, pred, per_example) if "example_loss" in sums else {}
    sums = {
      "loss": sums["loss"] + per_example.sum(),
      "correct_noisy": sums["correct_noisy"] + (pred == batch["label"]).sum(),
      "correct_clean": sums["correct_clean"] + (pred == batch["clean_label"]).sum(),
      "count": sums["count"] + per_example.size,
      "first_bad_step": jnp.where(
        jnp.isfinite(loss), sums["first_bad_step"], jnp.minimum(sums["first_bad_step"], state.step)
      ),
      **diagnostics,
    }
    new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, sums

  return step


def make_multi_step(step: Callable, make_batch: Callable) -> Callable[..., tuple[TrainState, dict]]:
  """Returns `multi(state, data, chunk, sums) -> (state, sums)`: `step` (`make_train_step`) over the
  steps of `chunk` in a `lax.scan`, each batch made on the device by `make_batch(data, inputs)` from
  the device-resident `data` and that step's slice of `chunk` (`aplx.data.device`)."""

  def multi(state: TrainState, data: Mapping, chunk: Mapping, sums: dict) -> tuple[TrainState, dict]:
    def body(carry, inputs):
      return step(carry[0], make_batch(data, inputs), carry[1]), None

    return jax.lax.scan(body, (state, sums), chunk)[0]

  return multi


def memorisation_sums(sums: dict, batch: Mapping[str, jax.Array], pred: jax.Array, per_example) -> dict:
  """The memorisation diagnostics of `make_train_step`, updated with one batch."""
  label, clean = batch["label"], batch["clean_label"]
  corrupted = label != clean
  return {
    "corrupted": sums["corrupted"] + corrupted.sum(),
    "corrupted_memorised": sums["corrupted_memorised"] + (corrupted & (pred == label)).sum(),
    "corrupted_corrected": sums["corrupted_corrected"] + (corrupted & (pred == clean)).sum(),
    "uncorrupted_correct": sums["uncorrupted_correct"] + (~corrupted & (pred == label)).sum(),
    "example_loss": sums["example_loss"].at[batch["id"]].set(per_example.astype(jnp.float32)),
  }


def zero_sums(num_ids: int | None = None) -> dict:
  """Fresh epoch accumulators for `make_train_step` (jit with a replicated out_sharding to place them).

  `num_ids`: with the memorisation diagnostics, one more than the largest example id (`batch["id"]`);
  `example_loss` starts as NaN (not seen this epoch). None: without them (no clean labels).
  """
  sums = {
    "loss": jnp.zeros((), jnp.float32),
    "correct_noisy": jnp.zeros((), jnp.int32),
    "correct_clean": jnp.zeros((), jnp.int32),
    "count": jnp.zeros((), jnp.int32),
    "first_bad_step": jnp.array(np.iinfo(np.int32).max, jnp.int32),
  }
  if num_ids is not None:
    counts = ("corrupted", "corrupted_memorised", "corrupted_corrected", "uncorrupted_correct")
    sums |= {k: jnp.zeros((), jnp.int32) for k in counts}
    sums["example_loss"] = jnp.full((num_ids,), jnp.nan, jnp.float32)
  return sums


def make_eval_step(eval_graphdef: nnx.GraphDef) -> Callable[..., dict]:
  """Returns `step(state, batch) -> {"correct", "count", "correct_per_class", "count_per_class"}` over
  the unpadded (mask == 1) rows, correct against `batch["label"]` (clean), per class int32 [K]; plus
  "correct_noisy" against `batch["noisy_label"]` when the batch has one (the train and validation
  splits)."""

  def step(state: TrainState, batch: Mapping[str, jax.Array]) -> dict:
    model = nnx.merge(eval_graphdef, state.params, state.batch_stats)
    logits = model(batch["image"])
    pred = logits.argmax(-1)
    mask = batch["mask"].astype(jnp.int32)
    correct = (pred == batch["label"]) * mask
    by_class = jax.nn.one_hot(batch["label"], logits.shape[-1], dtype=jnp.int32) * mask[:, None]
    sums = {
      "correct": correct.sum(),
      "count": mask.sum(),
      "correct_per_class": (by_class * correct[:, None]).sum(0),
      "count_per_class": by_class.sum(0),
    }
    if "noisy_label" in batch:
      sums["correct_noisy"] = ((pred == batch["noisy_label"]) * mask).sum()
    return sums

  return step


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


def _jit(fn: Callable, mesh: jax.sharding.Mesh, in_specs: tuple, donate: tuple[int, ...]) -> Callable:
  """jit with explicit layouts; both step kinds return (state, sums), replicated. Pinning the output
  layouts to the input layouts keeps the step from recompiling after its first call. On a CPU, XLA's
  multi-threaded convolutions (`aplx.cpu.compiler_options`)."""
  sharding = lambda spec: jax.sharding.NamedSharding(mesh, spec)
  return jax.jit(
    fn,
    in_shardings=tuple(sharding(s) for s in in_specs),
    out_shardings=(sharding(P()), sharding(P())),
    donate_argnums=donate,
    compiler_options=cpu.compiler_options(),
  )


def jit_train_step(step: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """`make_train_step`'s step jitted: state and sums replicated and donated, the batch sharded over 'data'."""
  return _jit(step, mesh, (P(), P("data"), P()), donate=(0, 2))


def jit_multi_step(multi: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """`make_multi_step`'s call jitted: the device-resident data replicated, each step's inputs of the chunk
  sharded over 'data' along the batch axis, state and sums donated."""
  return _jit(multi, mesh, (P(), P(), P(None, "data"), P()), donate=(0, 3))


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or inf; the message says at which step and what to try."""


def check_finite(sums: dict, optim: ml_collections.ConfigDict) -> None:
  """Raises NonFiniteLossError if any step accumulated in `sums` had a non-finite loss (one host read)."""
  bad = int(sums["first_bad_step"])
  if bad == np.iinfo(np.int32).max:
    return
  if optim.grad_clip:
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
    f"The training loss became NaN or inf at step {bad}. Stopping; the last good checkpoint is kept. {advice}"
  )
