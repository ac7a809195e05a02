"""Training batches made on the accelerator, from a copy of an in-RAM training set kept there.

The host path (`train_batches`) gathers, augments and normalises every batch in NumPy and copies it to
the devices, one jitted step per batch. For a dataset that fits in device memory (MNIST 47 MB, CIFAR
150 MB as uint8) the trainer can instead (`config.device_data`) keep the uint8 images and the labels on
every device (`put`) and run several steps per call in a `lax.scan` (`aplx.train.make_multi_step`):
the host sends only each step's row indices and augmentation draws (`chunk`, a few KB), and the
device gathers, augments and normalises (`make_batch`). The rows, the draws and the arithmetic are
those of `make_train_batch` (`preprocess.apply` is one implementation for NumPy and jax.numpy), so
the batches are the same bytes and, on a CPU, a run ends with bitwise the parameters of the host path
(tests/test_device_data.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from aplx.data import pipeline, preprocess

FIELDS = ("image", "label", "clean_label", "id")


def put(ds: pipeline.Dataset, mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """`ds`'s training set (uint8 images, noisy and clean labels, ids) replicated on every device of
  `mesh`, in every process (each holds the whole in-RAM dataset)."""
  if ds.streamed:
    raise ValueError(
      f"{ds.name} is streamed from disk (too large for device memory): device_data needs an in-RAM "
      "dataset such as mnist or cifar10."
    )
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  arrays = (ds.train_images, ds.train_noisy_labels, ds.train_clean_labels, ds.train_ids)
  return {
    k: jax.make_array_from_callback(v.shape, replicated, lambda i, v=v: v[i])
    for k, v in zip(FIELDS, arrays, strict=True)
  }


def chunk(
  ds: pipeline.Dataset,
  start_step: int,
  num_steps: int,
  *,
  global_batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  augment: bool = True,
  drop_remainder: bool = True,
  multiple_of: int = 1,
) -> dict[str, np.ndarray]:
  """Host side of steps start_step .. start_step + num_steps - 1: this process's rows of each global
  batch, {"rows": int32 [num_steps, b]}, and their augmentation draws (`preprocess.draws`, [num_steps,
  b] each). The steps must have one batch size: a partial last batch of an epoch is a chunk alone."""
  layout = {"drop_remainder": drop_remainder, "multiple_of": multiple_of}
  spe = pipeline.steps_per_epoch(ds, global_batch_size, **layout)
  rows, params = [], []
  for step in range(start_step, start_step + num_steps):
    r = pipeline.train_indices(ds, global_batch_size=global_batch_size, seed=seed, step=step, **layout)
    local = r.size // process_count
    r = r[process_index * local : (process_index + 1) * local]
    rows.append(r.astype(np.int32))
    if augment:
      params.append(preprocess.draws(ds.train_ids[r], kind=ds.augment, seed=seed, epoch=step // spe))
  if len({r.size for r in rows}) != 1:
    raise ValueError(f"steps {start_step}..{start_step + num_steps - 1} have different batch sizes.")
  out = {"rows": np.stack(rows)}
  for k in params[0] if params else ():
    out[k] = np.stack([p[k] for p in params])
  return out


def make_batch(
  data: Mapping[str, jax.Array], inputs: Mapping[str, jax.Array], *, kind: str, mean, std, augment: bool
) -> dict[str, jax.Array]:
  """One step's batch on the device, as `make_train_batch` makes it: `inputs` is one step of `chunk`
  ({"rows": [b], draws [b]}); {"image": float32 [b, H, W, C], "label", "clean_label", "id"}."""
  rows = inputs["rows"]
  batch = {k: data[k][rows] for k in FIELDS}
  images = batch["image"]
  if augment:
    images = preprocess.apply(images, inputs, kind=kind, xp=jnp)
  # Normalised by table lookup: XLA may fuse x * scale - shift into one multiply-add, rounded once,
  # where NumPy rounds twice; the table holds NumPy's values for the 256 levels of every channel.
  table = preprocess.normalize(
    np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, len(mean))), mean, std
  )
  batch["image"] = jnp.asarray(table)[images.astype(jnp.int32), jnp.arange(len(mean))]
  return batch
