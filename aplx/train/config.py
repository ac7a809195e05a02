"""The trainer's config: one table of defaults and one validation, before any data or the workdir.

`DEFAULTS` holds every field a config may leave out, with the value the trainer then uses. The
experiment configs (`experiments/configs/common.py`) start from it, `aplx.rundir.config_diff` takes a
field that one side lacks as equal to it, and `with_defaults` fills it in, so the trainer reads every
field as `config.<name>`.
"""

import math

import jax
import ml_collections

from aplx import data as data_lib
from aplx import losses, models
from aplx import noise as noise_lib
from aplx.train import optimizer

# Dotted path -> the value a config that leaves the field out runs with.
DEFAULTS = {
  "data_dir": None,  # None: $APLX_DATA_DIR, else TFDS's default.
  "subset": None,  # Train on a fixed class-balanced subset of this many images (None: all).
  "noise.options": {},  # Options of the noise model (aplx.noise), e.g. the authors' exact flips.
  "loss.params": {},  # Hyperparameters of the loss (aplx.losses.get); aplx's defaults for the rest.
  "model.kwargs": {},  # Options of the model (aplx.models.get), e.g. its compute dtype.
  "optim.l1": 0.0,  # ANL's delta: the gradient of l1 * sum |theta| added before clipping.
  # The authors' PyTorch loaders keep an epoch's last, smaller batch (drop_last=False); big_vision drops it.
  "drop_remainder": True,
  "augment": True,
  # Hold out this fraction of the (noisy) training set by example id and evaluate on it every epoch;
  # val_fold=k holds out the k-th window of that width (k-fold cross-validation). 0.0: the paper's protocol.
  "val_fraction": 0.0,
  "val_fold": 0,
  "image_size": None,  # Streamed datasets only: the crop side (None: the dataset's own).
  "data_workers": 0,  # grain worker processes that decode and augment (0: in the main process).
  # In-RAM datasets: keep the training set on the devices and make the batches there, running the steps
  # between two log lines in one call (aplx.data.device; the same batches, so the same run).
  "device_data": False,
  "log_every_steps": 100,
  "eval_batch_size": 1000,
  "keep_checkpoints": 2,
  # Per epoch, how the training set's corrupted and uncorrupted examples are predicted (memorised /
  # corrected / other) and the AUROC of their training loss (aplx.train.run_log.memorisation_record).
  # Needs the clean training labels (synthetic noise, CIFAR-N); absent otherwise.
  "diagnostics": True,
  "max_steps": None,  # Stop after this global step, as if killed (tests); None: the whole run.
}
# The type a field whose default is None takes when set (`--config.subset=1000` parses as an int).
NONE_TYPES = {"data_dir": str, "subset": int, "image_size": int, "max_steps": int}


class ConfigError(ValueError):
  """The config cannot run as given; the message names the field and the fix."""


def fill_defaults(config: ml_collections.ConfigDict) -> None:
  """Sets every field of `DEFAULTS` that `config` (unlocked) lacks to its default, in place."""
  for dotted, default in DEFAULTS.items():
    *parents, name = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if name in node:
      continue
    if isinstance(default, dict):
      node[name] = ml_collections.ConfigDict(default)
    elif default is None:
      node[name] = ml_collections.FieldReference(None, field_type=NONE_TYPES[dotted])
    else:
      node[name] = default


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with every field of `DEFAULTS` that it lacks set to its default."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    fill_defaults(config)
  return config


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks the whole config before any data is read or the workdir is touched; returns it with its
  defaults (`with_defaults`). Raises ConfigError naming the field and the fix."""
  config = with_defaults(config)

  def bad(field, value, fix):
    raise ConfigError(f"config.{field}={value!r}: {fix}")

  def integer(value):
    return isinstance(value, int) and not isinstance(value, bool)

  def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

  if config.dataset not in data_lib.DATASETS:
    bad("dataset", config.dataset, f"use one of {sorted(data_lib.DATASETS)}.")
  if config.model.name not in models.names():
    bad("model.name", config.model.name, f"use one of {models.names()}.")
  try:
    losses.get(config.loss.name, **config.loss.params)
  except (ValueError, TypeError) as e:  # The registry's message names the valid losses / parameters.
    raise ConfigError(f"config.loss: {e}") from e
  kind = config.noise.type.partition(":")[0]
  if kind not in noise_lib.NOISE_MODELS:
    bad("noise.type", config.noise.type, f"use one of {sorted(noise_lib.NOISE_MODELS)} (or human:<field>).")
  if not 0.0 <= config.noise.rate <= 1.0:
    bad("noise.rate", config.noise.rate, "a noise rate is in [0, 1].")
  for field in ("seed", "noise.seed"):
    value = config[field] if field == "seed" else config.noise.seed
    if not integer(value) or value < 0:
      bad(field, value, "a seed is an integer >= 0.")
  for field in ("epochs", "batch_size", "eval_batch_size", "log_every_steps", "keep_checkpoints"):
    value = config[field]
    if not integer(value) or value < 1:
      bad(field, value, "must be a positive integer (0 is not 'the default': leave the field out).")
    if field in ("batch_size", "eval_batch_size") and value % jax.device_count():
      bad(
        field,
        value,
        f"must be divisible by the number of devices ({jax.device_count()}); pick a "
        f"multiple of {jax.device_count()}.",
      )
  spec = data_lib.DATASETS[config.dataset]
  if not integer(config.data_workers) or config.data_workers < 0:
    bad(
      "data_workers",
      config.data_workers,
      "the number of grain worker processes is an integer >= 0 (0: none).",
    )
  try:
    data_lib.check_image_size(config.dataset, config.image_size)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None
  if not isinstance(config.diagnostics, bool):
    bad("diagnostics", config.diagnostics, "True (memorisation diagnostics every epoch) or False.")
  if not isinstance(config.device_data, bool):
    bad("device_data", config.device_data, "True (batches made on the devices) or False (on the host).")
  if config.device_data and spec.storage == "stream":
    bad(
      "device_data",
      config.device_data,
      f"{config.dataset} is streamed from disk: device_data keeps an in-RAM training set (mnist, cifar10, "
      "cifar100, their CIFAR-N variants) on the devices. Leave it False.",
    )
  if config.max_steps is not None and config.max_steps < 1:
    bad("max_steps", config.max_steps, "must be >= 1, or None for the whole run.")
  fraction, fold = config.val_fraction, config.val_fold
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
    bad("val_fraction", fraction, "the fraction held out for validation is in [0, 1) (0: none, the paper's).")
  if not integer(fold) or fold < 0:
    bad("val_fold", fold, "must be an integer >= 0.")
  if fold and not fraction:
    bad("val_fold", fold, "needs config.val_fraction > 0 (folds of width val_fraction).")
  if (fold + 1) * fraction > 1.0 + data_lib.pipeline.FOLD_SLACK:
    last = int((1.0 + data_lib.pipeline.FOLD_SLACK) / fraction) - 1
    bad("val_fold", fold, f"with val_fraction={fraction} the folds are 0 .. {last}.")
  optim = config.optim
  try:
    optimizer.make_schedule(optim, steps_per_epoch=1, epochs=config.epochs)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if not (number(optim.lr) and optim.lr > 0):
    bad("optim.lr", optim.lr, "the learning rate is a finite number > 0.")
  for field in ("weight_decay", "grad_clip", "l1", "eta_min"):
    if optim[field] is not None and not (number(optim[field]) and optim[field] >= 0):
      bad(f"optim.{field}", optim[field], "a finite number >= 0 (0 turns it off).")
  if not (number(optim.momentum) and 0 <= optim.momentum < 1):
    bad("optim.momentum", optim.momentum, "momentum is in [0, 1) (0: plain SGD; the authors' 0.9).")
  if optim.schedule == "exponential" and not (number(optim.decay_rate) and optim.decay_rate > 0):
    bad("optim.decay_rate", optim.decay_rate, "the per-epoch decay factor is a finite number > 0.")
  return config
