"""What the trainer reads: the dataset of a config, and its batches fed to the devices.

Two feeds behind one interface, `advance(state, sums, step) -> (state, sums, steps_done)` and `close()`:

- `HostFeed`: batches made on the host (`aplx.data.train_batches`), placed on the mesh one step a call.
- `DeviceFeed` (`config.device_data`): the training set stays on the devices; each call runs the steps
  up to the next log line (or the epoch's end) in one `lax.scan`, the batches made there
  (`aplx.data.device`). The same batches, hence the same run.

The batch at global step s is a pure function of (config.seed, s), so either feed can resume a run
that the other started.
"""

import functools

import jax
import ml_collections

from aplx import data as data_lib
from aplx.train import steps
from aplx.train.config import ConfigError


def load_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """The dataset of `config` (with its defaults) as the trainer sees it: TFDS in RAM, label noise from
  (noise seed, example id), and the validation split (`config.val_fraction`, `config.val_fold`) from
  (seed, example id), held out of the training set (`data.hold_out`). ConfigError if the split leaves
  nothing to validate on or too little to train on."""
  try:
    ds = data_lib.load_dataset(
      config.dataset,
      data_dir=config.data_dir,
      subset=config.subset,
      noise=config.noise.type,
      rate=config.noise.rate,
      noise_seed=config.noise.seed,
      image_size=config.image_size,
      **config.noise.options,
    )
  except ValueError as e:  # The dataset's own checks of what the config asks of it (subset, noise).
    raise ConfigError(f"config ({config.dataset}): {e}") from None
  fraction, fold = config.val_fraction, config.val_fold
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


def steps_per_epoch(config: ml_collections.ConfigDict, ds: data_lib.Dataset) -> int:
  """Global batches per epoch; ConfigError if the batch is larger than the training set."""
  if config.batch_size > ds.num_train:
    raise ConfigError(
      f"config.batch_size={config.batch_size} is larger than the {ds.num_train} training examples of "
      f"{config.dataset}{f' (subset {config.subset})' if config.subset else ''}: lower the batch size."
    )
  return data_lib.steps_per_epoch(ds, config.batch_size, **layout(config))


def layout(config: ml_collections.ConfigDict) -> dict:
  """How an epoch is cut into global batches. drop_remainder=False (the authors' PyTorch loaders): a
  smaller last step per epoch, rounded down to a multiple of the device count; it compiles the train
  step once more."""
  return {"drop_remainder": config.drop_remainder, "multiple_of": jax.device_count()}


def batch_args(config: ml_collections.ConfigDict) -> dict:
  """The arguments of this process's batches (`data.train_batches`, `data.device.chunk`)."""
  return {
    "global_batch_size": config.batch_size,
    "seed": config.seed,
    "process_index": jax.process_index(),
    "process_count": jax.process_count(),
    "augment": config.augment,
    **layout(config),
  }


def chunk_length(step: int, steps_per_epoch: int, every: int, stop: int, partial_last: bool) -> int:
  """Steps in the device-data call that starts at `step`: up to the next multiple of `every` steps into
  the epoch, the end of the epoch or `stop`, whichever comes first (so every epoch compiles the same
  few lengths). An epoch's partial last batch (smaller, drop_remainder=False) is a call of its own."""
  pos = step % steps_per_epoch
  if partial_last and pos == steps_per_epoch - 1:
    return 1
  return min(every - pos % every, steps_per_epoch - int(partial_last) - pos, stop - step)


class HostFeed:
  """One host-made batch per call, through `jit_train_step(step_fn)`."""

  def __init__(self, config, ds, mesh, step_fn, *, start_step: int):
    self.train_step = steps.jit_train_step(step_fn, mesh)
    self.sharding = jax.sharding.NamedSharding(mesh, steps.P("data"))
    self.batches = data_lib.train_batches(
      ds, start_step=start_step, num_workers=config.data_workers, **batch_args(config)
    )

  def advance(self, state, sums, step):
    del step  # The iterator knows it.
    return (*self.train_step(state, steps.global_batch(next(self.batches), self.sharding), sums), 1)

  def close(self) -> None:
    self.batches.close()  # Stops grain's prefetch threads and worker processes (data_workers).


class DeviceFeed:
  """The steps up to the next log line per call, batches made on the devices (`make_multi_step`)."""

  def __init__(self, config, ds, mesh, step_fn, *, steps_per_epoch: int, max_steps: int):
    self.ds, self.args = ds, batch_args(config)
    self.data = data_lib.device.put(ds, mesh)
    make_batch = functools.partial(
      data_lib.device.make_batch, kind=ds.augment, mean=ds.mean, std=ds.std, augment=config.augment
    )
    self.multi_step = steps.jit_multi_step(steps.make_multi_step(step_fn, make_batch), mesh)
    self.sharding = jax.sharding.NamedSharding(mesh, steps.P(None, "data"))
    partial_last = steps_per_epoch * config.batch_size > ds.num_train
    self.length = functools.partial(
      chunk_length,
      steps_per_epoch=steps_per_epoch,
      every=config.log_every_steps,
      stop=max_steps,
      partial_last=partial_last,
    )

  def advance(self, state, sums, step):
    n = self.length(step)
    chunk = steps.global_batch(data_lib.device.chunk(self.ds, step, n, **self.args), self.sharding)
    return (*self.multi_step(state, self.data, chunk, sums), n)

  def close(self) -> None:
    pass


def make_feed(config, ds, mesh, step_fn, *, start_step: int, steps_per_epoch: int, max_steps: int):
  """The feed `config.device_data` asks for, starting at global step `start_step`."""
  if config.device_data:
    return DeviceFeed(config, ds, mesh, step_fn, steps_per_epoch=steps_per_epoch, max_steps=max_steps)
  return HostFeed(config, ds, mesh, step_fn, start_step=start_step)
