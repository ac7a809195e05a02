"""TFDS datasets with label noise, decoded once into RAM, and deterministic batch iterators.

  ds = load_dataset("mnist", noise="sym", rate=0.8, noise_seed=0)
  for batch in train_batches(ds, global_batch_size=128, seed=0): ...
  for batch in eval_batches(ds, batch_size=1000): ...

Stable example id = index in the TFDS data source of the train split. Noisy labels are computed once
over the whole train split (or over the `subset`, which is then the train split) and indexed by id.
The train batch at global step s is a pure function of (seed, s): per-epoch permutation from
(seed, epoch), drop_remainder (or a smaller last batch), augmentation from (seed, epoch, id).
`hold_out` moves a validation split, chosen from (seed, id), out of the train arrays. See docs/data.md.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
from pathlib import Path
import sys
import threading
from typing import Any, Iterator
import zipfile

import numpy as np

from aplx import _deps
from aplx import noise as noise_lib

with _deps.extra("data", __name__):
  import tensorflow_datasets as tfds

from aplx.data import prepare as prepare_lib
from aplx.data import preprocess, stream

__all__ = [
  "DATASETS",
  "Dataset",
  "DatasetSpec",
  "eval_batches",
  "hold_out",
  "load_dataset",
  "steps_per_epoch",
  "train_batches",
  "validation_mask",
]


# ---------------------------------------------------------------------------------------------------
# Dataset registry
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the pipeline needs to know of a dataset.

  storage "ram": decoded once into RAM, augmented in vectorised NumPy (`preprocess`); "stream": images
  read from the array_record files per batch, decoded and transformed per example (`stream`, with the
  `imagenet` transforms named by `augment`), for datasets too large for RAM. Real-noise datasets
  (`clean_field`: the train field holding clean labels, -1 where unknown; "" for none at all) keep
  their given labels as the noisy ones.
  """

  num_classes: int
  image_shape: tuple[int, int, int]
  normalization: str  # key of preprocess.NORMALIZATION
  augment: str  # key of preprocess.AUGMENTATIONS ("ram") or of imagenet.KINDS ("stream")
  extra_fields: tuple[str, ...] = ()  # train-split TFDS fields kept beside the label
  storage: str = "ram"
  test_split: str = "test"  # the TFDS split reported as test_acc
  eval_splits: tuple[tuple[str, str], ...] = ()  # (name, TFDS split) also evaluated, when prepared
  clean_field: str | None = None  # None: the TFDS label is clean (noise is injected on top)


_HUMAN10 = ("worse_label", "aggre_label", "random_label1", "random_label2", "random_label3")


def _webvision(num_classes: int) -> DatasetSpec:
  return DatasetSpec(
    num_classes,
    (224, 224, 3),
    "imagenet",
    "webvision",
    storage="stream",
    test_split="val",
    eval_splits=(("imagenet_val", "imagenet_val"),),
    clean_field="",
  )


DATASETS: dict[str, DatasetSpec] = {
  "mnist": DatasetSpec(10, (28, 28, 1), "mnist", "none"),
  "cifar10": DatasetSpec(10, (32, 32, 3), "cifar10", "crop_flip"),
  "cifar100": DatasetSpec(100, (32, 32, 3), "cifar100", "crop_flip_rotate", ("coarse_label",)),
  "cifar10_n": DatasetSpec(10, (32, 32, 3), "cifar10", "crop_flip", _HUMAN10),
  "cifar100_n": DatasetSpec(
    100, (32, 32, 3), "cifar100", "crop_flip_rotate", ("coarse_label", "noise_label")
  ),
  # Real web / e-commerce label noise, streamed. test_acc is the WebVision validation set; the paper's
  # Table 5 reports the ILSVRC2012 validation images of the same classes (test_acc_imagenet_val).
  "webvision": _webvision(50),
  "webvision_full": _webvision(1000),
  "clothing1m": DatasetSpec(
    14,
    (224, 224, 3),
    "imagenet",
    "clothing1m",
    ("clean_label",),
    storage="stream",
    test_split="test",
    eval_splits=(("clean_val", "val"),),
    clean_field="clean_label",
  ),
}


@dataclasses.dataclass
class Dataset:
  """A dataset in RAM: uint8 images, clean and noisy train labels by stable id, clean test split."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  train_images: np.ndarray | stream.Records  # uint8 [n, H, W, C], or the rows in the files (streamed)
  train_ids: np.ndarray  # int32 [n], TFDS data-source index in the full train split
  train_clean_labels: np.ndarray  # int32 [n]; -1 where unknown (real-noise datasets)
  train_noisy_labels: np.ndarray  # int32 [n]
  test_images: np.ndarray | stream.Records  # uint8 [m, H, W, C] (or streamed)
  test_labels: np.ndarray  # int32 [m]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: str
  noise: dict[str, Any]  # kind, rate, seed, options, realised_rate
  info: Any = None  # tfds.core.DatasetInfo
  extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # indexed like train_ids
  # Further evaluation splits (name -> (images, clean labels)), e.g. webvision's imagenet_val.
  eval_sets: dict[str, tuple[Any, np.ndarray]] = dataclasses.field(default_factory=dict)
  # Held out of the (noisy) training set by `hold_out`; None when nothing is held out.
  val_images: np.ndarray | stream.Records | None = None  # uint8 [v, H, W, C] (or streamed)
  val_ids: np.ndarray | None = None  # int32 [v], sorted
  val_clean_labels: np.ndarray | None = None  # int32 [v]
  val_noisy_labels: np.ndarray | None = None  # int32 [v]

  @property
  def num_train(self) -> int:
    return int(self.train_ids.shape[0])

  @property
  def streamed(self) -> bool:
    return isinstance(self.train_images, stream.Records)

  @property
  def clean_train_labels_known(self) -> bool:
    """False for real-noise datasets without (complete) clean training labels: no train_acc_clean."""
    return bool((self.train_clean_labels >= 0).all())

  @property
  def num_val(self) -> int:
    return 0 if self.val_ids is None else int(self.val_ids.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_labels.shape[0])


# ---------------------------------------------------------------------------------------------------
# Decoding once into RAM (in-process memo + .npz cache next to the TFDS data)
# ---------------------------------------------------------------------------------------------------

_MEMO: dict[tuple, dict[str, np.ndarray]] = {}
_MEMO_LOCK = threading.Lock()


def _decode_image(value) -> np.ndarray:
  if isinstance(value, bytes):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(value)))
  return np.asarray(value)


def _read_split(builder, split: str, fields: tuple[str, ...], shape) -> dict[str, np.ndarray]:
  """All examples of a split as arrays: decode PNGs with Pillow, in chunks. shape=None: the labels
  (and `fields`) only, no images (the index of a streamed dataset)."""
  src = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  n = len(src)
  images = None if shape is None else np.empty((n,) + tuple(shape), np.uint8)
  cols = {f: np.empty(n, np.int32) for f in ("label",) + fields}
  for start in range(0, n, 4096):
    idx = list(range(start, min(n, start + 4096)))
    rows = src.__getitems__(idx)
    for i, row in zip(idx, rows):
      if images is not None:
        images[i] = _decode_image(row["image"]).reshape(shape)
      for f in cols:
        cols[f][i] = int(row[f])
  return cols if images is None else {"image": images, **cols}


def _fingerprint(builder, split: str) -> str | None:
  """Names, sizes and mtimes of the split's files; None when there are none (e.g. mocked data)."""
  files = sorted(Path(builder.data_path).glob(f"{builder.name}-{split}.*"))
  if not files:
    return None
  desc = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]
  return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]


def _read_cache(cache: Path, wanted: tuple[str, ...]) -> dict[str, np.ndarray] | None:
  """The arrays of a decoded-split cache file; None if it lacks a field, or if it is damaged (then it
  is renamed to `<name>.damaged`, with a warning, and the split is decoded again)."""
  try:
    with np.load(cache) as z:
      return {k: z[k] for k in z.files} if all(f in z for f in wanted) else None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    aside = cache.with_name(cache.name + ".damaged")
    os.replace(cache, aside)
    logging.getLogger(__name__).warning(
      "%s is damaged (%s): moved to %s; decoding the split again.", cache, e, aside
    )
    return None


def _load_split(builder, split: str, fields, shape, use_cache: bool) -> dict[str, np.ndarray]:
  fp = _fingerprint(builder, split)
  key = (str(builder.data_path), split, fields, fp, shape is None)
  with _MEMO_LOCK:
    if fp is not None and key in _MEMO:
      return _MEMO[key]
  name = f"{split}-{fp}{'-labels' if shape is None else ''}.npz"
  cache = Path(builder.data_path) / "aplx_decoded" / name if fp else None
  arrays = None
  wanted = ("label",) + tuple(fields) + (() if shape is None else ("image",))
  if use_cache and cache is not None and cache.exists():
    arrays = _read_cache(cache, wanted)
  if arrays is None:
    arrays = _read_split(builder, split, tuple(fields), shape)
    if use_cache and cache is not None:
      try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
      except OSError:  # read-only data dir: keep the in-memory copy only
        pass
  if fp is not None:
    with _MEMO_LOCK:
      _MEMO[key] = arrays
  return arrays


# ---------------------------------------------------------------------------------------------------
# load_dataset
# ---------------------------------------------------------------------------------------------------


def _subset_ids(labels: np.ndarray, size: int, num_classes: int) -> np.ndarray:
  """Class-balanced first-by-id subset: round-robin over classes in id order. Seed-independent."""
  rank = np.empty_like(labels)
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    rank[members] = np.arange(members.size)
  order = np.lexsort((labels, rank))  # by rank within class, then class id
  return np.sort(order[:size])


def _images(arrays: dict[str, np.ndarray], builder, name: str, data_dir: str, split: str):
  """The split's images: the decoded array (in RAM), or a `stream.Records` over all of its examples."""
  if "image" in arrays:
    return arrays["image"]
  rows = np.arange(arrays["label"].shape[0])
  return stream.Records(name, data_dir, split, rows, files=_fingerprint(builder, split) or "")


def check_image_size(name: str, image_size: int | None) -> None:
  """ValueError unless `name` is a known dataset and `image_size` is None or, for a streamed dataset,
  an integer >= 8 (the side of its crops)."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}.")
  spec = DATASETS[name]
  if image_size is not None and (spec.storage != "stream" or type(image_size) is not int or image_size < 8):
    raise ValueError(
      f"image_size={image_size!r}: only streamed datasets take an image size (webvision, clothing1m), an "
      f"integer >= 8; {name} keeps its own ({spec.image_shape[0]}x{spec.image_shape[1]}): leave it None."
    )


def load_dataset(
  name: str,
  *,
  data_dir: str | None = None,
  noise: str = "none",
  rate: float = 0.0,
  noise_seed: int = 0,
  subset: int | None = None,
  image_size: int | None = None,
  download: bool = True,
  cache: bool = True,
  **noise_options,
) -> Dataset:
  """Loads a TFDS dataset (into RAM, or as a streamed index for the large ones) and draws its label noise.

  Args:
    name: a key of `DATASETS`: "mnist", "cifar10", "cifar100", "cifar10_n", "cifar100_n" (in RAM),
      "webvision", "webvision_full", "clothing1m" (streamed; prepare them first, docs/data.md).
    data_dir: TFDS data dir (default `$APLX_DATA_DIR`, else TFDS's default).
    noise: "none", "sym", "asym", "pairflip", "idn" or "human:<field>" (cifar10_n: worse_label,
      aggre_label, random_label1..3; cifar100_n: noise_label). See `aplx.noise`.
    rate: noise rate.
    noise_seed: seed of the label noise (independent of the training seed).
    subset: keep only a fixed, class-balanced, first-by-id subset of this many training examples
      (seed-independent); the noise is then drawn over the subset.
    download: prepare the dataset if missing (`aplx.data.ensure_prepared`); False raises an error
      that gives the command to prepare it.
    image_size: streamed datasets only: side of the square training / evaluation crops (default the
      spec's, 224 as the authors; smaller for quick runs and tests).
    cache: keep decoded arrays in `<dataset dir>/aplx_decoded/*.npz` (decoding MNIST takes ~10 s; for
      streamed datasets only the labels are kept there).
    **noise_options: forwarded to the noise model (e.g. method="transition", sequential=True,
      group="consecutive", authors_quota=True).

  Returns:
    A `Dataset`.
  """
  check_image_size(name, image_size)
  spec = DATASETS[name]
  streamed = spec.storage == "stream"
  data_dir = prepare_lib.ensure_prepared(name, data_dir, download=download)
  builder = prepare_lib.builder(name, data_dir)
  shape = None if streamed else spec.image_shape  # Streamed: read the labels, not the images.
  train = _load_split(builder, "train", spec.extra_fields, shape, cache)
  test = _load_split(builder, spec.test_split, (), shape, cache)
  eval_sets = {}
  for key, split in spec.eval_splits:
    if split in builder.info.splits:  # Optional splits (webvision's imagenet_val) when prepared.
      arrays = _load_split(builder, split, (), shape, cache)
      eval_sets[key] = (_images(arrays, builder, name, data_dir, split), arrays["label"].astype(np.int32))
  test_images = _images(test, builder, name, data_dir, spec.test_split)
  train_images = _images(train, builder, name, data_dir, "train")

  ids = np.arange(train["label"].shape[0], dtype=np.int32)
  if subset is not None:
    if not 0 < int(subset) <= ids.size:
      raise ValueError(f"subset must be in [1, {ids.size}] for {name}, got subset={subset}.")
    ids = _subset_ids(train["label"], int(subset), spec.num_classes).astype(np.int32)
  images = train_images[ids]
  labels = train["label"][ids].astype(np.int32)
  extra = {f: train[f][ids] for f in spec.extra_fields}
  mean, std = preprocess.NORMALIZATION[spec.normalization]
  # Real-noise datasets: the given labels are the noisy ones (and any injected noise goes on top of
  # them); the clean labels are those of `clean_field`, -1 where unknown.
  if spec.clean_field is None:
    clean = labels
  elif spec.clean_field:
    clean = extra[spec.clean_field].astype(np.int32)
  else:
    clean = np.full_like(labels, -1)

  kind = noise.partition(":")[0]
  if kind == "idn" and streamed:
    raise ValueError(f"noise='idn' is a function of the images, so it needs them in RAM; {name} is streamed.")
  features = preprocess.normalize(images, mean, std) if kind == "idn" else None
  noisy = noise_lib.apply(
    noise,
    labels,
    rate=rate,
    seed=noise_seed,
    num_classes=spec.num_classes,
    dataset=name,
    features=features,
    extra=extra,
    **noise_options,
  )
  noise_info = {
    "kind": noise,
    "rate": float(rate),
    "seed": int(noise_seed),
    "options": {k: v for k, v in noise_options.items() if k != "coarse_labels"},
    "realised_rate": noise_lib.realised_rate(labels, noisy),  # Injected noise: against the given labels.
  }
  size = image_size or spec.image_shape[0]
  return Dataset(
    name=name,
    num_classes=spec.num_classes,
    image_shape=(size, size, spec.image_shape[2]),
    train_images=images,
    train_ids=ids,
    train_clean_labels=clean,
    train_noisy_labels=noisy.astype(np.int32),
    test_images=test_images,
    test_labels=test["label"].astype(np.int32),
    mean=mean,
    std=std,
    augment=spec.augment,
    noise=noise_info,
    info=builder.info,
    extra=extra,
    eval_sets=eval_sets,
  )


# ---------------------------------------------------------------------------------------------------
# Validation split, by example id
# ---------------------------------------------------------------------------------------------------

# The `preprocess.uniform` stream that draws the validation split (the augmentations use 0-3).
_VALIDATION_STREAM = 0x7A1
# Fold windows are compared with this slack, so that a fraction typed in decimals (0.3333 for 1/3,
# 0.1429 for 1/7) still gives n folds whose last one reaches 1: no id falls between the folds.
FOLD_SLACK = 1e-3


def validation_mask(ids, fraction: float, *, seed: int, fold: int = 0) -> np.ndarray:
  """True for the ids held out for validation: a pure function of (seed, id).

  Each id gets u = uniform(seed, id) in [0, 1), a counter-based hash (`preprocess.uniform`), and is
  held out when `fold * fraction <= u < (fold + 1) * fraction`. Nothing else enters: not the noise, the
  subset, the order of the ids, nor the number of devices or processes, so a resumed or re-sharded
  run holds out the same examples. Each id is a Bernoulli draw: about `fraction` of them are held out,
  not an exact count. With fraction = 1/n (in decimals: 0.2, 0.25, 0.3333), folds 0..n-1 partition
  the ids (n-fold cross-validation): a window whose end is within FOLD_SLACK of 1 reaches 1.
  """
  if isinstance(fraction, bool) or not 0.0 <= fraction < 1.0:
    raise ValueError(f"fraction={fraction!r}: the held-out fraction is in [0, 1).")
  integer = isinstance(fold, (int, np.integer)) and not isinstance(fold, bool)
  hi = (fold + 1) * fraction if integer else 0.0
  if not integer or fold < 0 or hi > 1.0 + FOLD_SLACK:
    raise ValueError(
      f"fold={fold!r} with fraction={fraction}: folds are 0, 1, ... while (fold + 1) * fraction <= 1."
    )
  u = preprocess.uniform(seed, 0, ids, _VALIDATION_STREAM)
  return (u >= fold * fraction) & ((u < hi) | (hi >= 1.0 - FOLD_SLACK))


def hold_out(ds: Dataset, fraction: float, *, seed: int, fold: int = 0) -> Dataset:
  """`ds` with the examples of `validation_mask(ds.train_ids, ...)` moved from its train arrays to
  its `val_*` arrays (steps per epoch shrink accordingly). They keep their noisy labels (what a
  practitioner without clean labels validates on) and their clean labels (an oracle, for analysis).
  fraction=0 returns `ds` itself."""
  if ds.val_ids is not None:
    raise ValueError("ds already has a validation split: hold out once, from what load_dataset returns.")
  mask = validation_mask(ds.train_ids, fraction, seed=seed, fold=fold)
  if fraction == 0:
    return ds
  keep = ~mask
  return dataclasses.replace(
    ds,
    train_images=ds.train_images[keep],
    train_ids=ds.train_ids[keep],
    train_clean_labels=ds.train_clean_labels[keep],
    train_noisy_labels=ds.train_noisy_labels[keep],
    extra={k: v[keep] for k, v in ds.extra.items()},
    val_images=ds.train_images[mask],
    val_ids=ds.train_ids[mask],
    val_clean_labels=ds.train_clean_labels[mask],
    val_noisy_labels=ds.train_noisy_labels[mask],
  )


# ---------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------


def steps_per_epoch(
  ds: Dataset, global_batch_size: int, *, drop_remainder: bool = True, multiple_of: int = 1
) -> int:
  """Number of global batches per epoch.

  drop_remainder=True: full batches only (big_vision / TFDS). False: as PyTorch's DataLoader with
  drop_last=False, one more, smaller batch holding the remaining examples, rounded down to a multiple of
  `multiple_of` (the device count, so every device gets the same share; nothing extra when that
  leaves it empty).
  """
  if global_batch_size <= 0:
    raise ValueError(f"global_batch_size must be > 0, got {global_batch_size}.")
  steps = ds.num_train // global_batch_size
  if steps == 0:
    raise ValueError(f"global_batch_size={global_batch_size} exceeds the {ds.num_train} training examples.")
  partial = not drop_remainder and _last_batch_size(ds.num_train, global_batch_size, multiple_of) > 0
  return steps + int(partial)


def _last_batch_size(n: int, global_batch_size: int, multiple_of: int) -> int:
  """Size of the partial last batch when it is kept (0: none)."""
  remainder = n % global_batch_size
  return remainder - remainder % multiple_of


def _check_process(global_batch_size: int, process_index: int, process_count: int) -> int:
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(
      f"process_index must be in [0, {process_count}), got {process_index} (process_count={process_count})."
    )
  if global_batch_size % process_count:
    raise ValueError(
      f"global batch size {global_batch_size} must be divisible by process_count={process_count}."
    )
  return global_batch_size // process_count


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 0x5EED])).permutation(n)


def train_indices(
  ds: Dataset,
  *,
  global_batch_size: int,
  seed: int,
  step: int,
  drop_remainder: bool = True,
  multiple_of: int = 1,
) -> np.ndarray:
  """Row indices (into `ds.train_*`) of the global batch at `step`: a pure function of (seed, step).

  With drop_remainder=False the last batch of each epoch is smaller (see `steps_per_epoch`).
  """
  spe = steps_per_epoch(ds, global_batch_size, drop_remainder=drop_remainder, multiple_of=multiple_of)
  epoch, pos = divmod(int(step), spe)
  start = pos * global_batch_size
  size = (
    global_batch_size
    if start + global_batch_size <= ds.num_train
    else _last_batch_size(ds.num_train, global_batch_size, multiple_of)
  )
  return _permutation(ds.num_train, int(seed), epoch)[start : start + size]


def make_train_batch(
  ds: Dataset,
  step: int,
  *,
  global_batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  augment: bool = True,
  drop_remainder: bool = True,
  multiple_of: int = 1,
) -> dict[str, np.ndarray]:
  """This process's share of the global train batch at `step`.

  `multiple_of` must be a multiple of `process_count` when drop_remainder=False, so that a partial last
  batch splits evenly over processes.
  """
  _check_process(global_batch_size, process_index, process_count)
  if not drop_remainder and multiple_of % process_count:
    raise ValueError(
      f"multiple_of={multiple_of} must be a multiple of process_count={process_count} "
      "(pass the global device count)."
    )
  layout = {"drop_remainder": drop_remainder, "multiple_of": multiple_of}
  rows = train_indices(ds, global_batch_size=global_batch_size, seed=seed, step=step, **layout)
  local = rows.size // process_count
  rows = rows[process_index * local : (process_index + 1) * local]
  ids = ds.train_ids[rows]
  images = ds.train_images[rows]  # Streamed: only this process's rows are read, here.
  if ds.streamed:
    size = ds.image_shape[0]
    if augment:  # Per example, from (seed, step, id).
      images = stream.train_images(images, ids, kind=ds.augment, seed=seed, step=int(step), size=size)
    else:
      images = stream.eval_images(images, kind=ds.augment, size=size)
  else:
    if augment:
      epoch = int(step) // steps_per_epoch(ds, global_batch_size, **layout)
      images = preprocess.augment(images, ids, kind=ds.augment, seed=seed, epoch=epoch)
    images = preprocess.normalize(images, ds.mean, ds.std)
  return {
    "image": images,
    "label": ds.train_noisy_labels[rows],
    "clean_label": ds.train_clean_labels[rows],
    "id": ids,
  }


def train_batches(
  ds: Dataset,
  *,
  global_batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  augment: bool = True,
  drop_remainder: bool = True,
  multiple_of: int = 1,
  num_threads: int = 1,
  prefetch: int = 4,
  num_workers: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator over this process's share of each global train batch from `start_step`.

  Each element: {"image": float32 [b, H, W, C] normalised, "label": int32 noisy,
  "clean_label": int32, "id": int32}, b = global_batch_size / process_count (smaller for the last
  batch of an epoch with drop_remainder=False).
  Built with grain: `MapDataset.range(start_step, ...)` mapped by `make_train_batch`
  (random access, so resuming at any step is exact), prefetched by `num_threads` threads; with
  `num_workers` > 0 the batches are made in that many grain worker processes (`mp_prefetch`: worker w
  makes every num_workers-th batch, delivered in step order, so the stream does not depend on it).
  Workers suit streamed datasets (decoding is the bottleneck); an in-RAM dataset is copied into each.
  """
  import grain  # pylint: disable=import-outside-toplevel

  _check_process(global_batch_size, process_index, process_count)
  steps_per_epoch(ds, global_batch_size, drop_remainder=drop_remainder, multiple_of=multiple_of)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
    raise ValueError(f"num_workers must be an integer >= 0 (0: no worker processes), got {num_workers!r}.")
  fn = functools.partial(
    make_train_batch,
    ds,
    global_batch_size=global_batch_size,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    augment=augment,
    drop_remainder=drop_remainder,
    multiple_of=multiple_of,
  )
  dataset = grain.MapDataset.range(int(start_step), sys.maxsize).map(fn)
  # With worker processes each one buffers its own batches: one in flight per worker thread is enough
  # (a 512 x 224 x 224 x 3 float32 batch is 308 MB).
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=1 if num_workers else prefetch)
  batches = dataset.to_iter_dataset(options)
  if num_workers:
    from absl import flags  # pylint: disable=import-outside-toplevel

    # grain's worker processes read absl flags (its own options); in a program that is not an absl app
    # (a notebook, a script, pytest) nothing parsed them: use their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    workers = grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2)
    batches = batches.mp_prefetch(workers)
  return iter(batches)


def eval_batches(
  ds: Dataset,
  *,
  batch_size: int,
  split: str = "test",
  process_index: int = 0,
  process_count: int = 1,
  num_threads: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Finite iterator over a split, unaugmented, every batch the same shape.

  `split`: "test", "train", "val" (the examples `hold_out` set aside) or a key of `ds.eval_sets`.
  Streamed datasets are decoded here (`num_threads` threads) with the evaluation transform.
  `batch_size` is global; each process gets rows [p * b, (p + 1) * b) of every global batch,
  b = batch_size / process_count. Rows past the end are zero images with mask 0.
  Elements: {"image": float32 [b, H, W, C], "label": int32 clean, "mask": float32 [b]}
  (split="train" and "val" add "noisy_label" and "id").
  """
  local = _check_process(batch_size, process_index, process_count)
  if split == "test":
    images, labels, extra = ds.test_images, ds.test_labels, {}
  elif split == "train":
    images, labels = ds.train_images, ds.train_clean_labels
    extra = {"noisy_label": ds.train_noisy_labels, "id": ds.train_ids}
  elif split == "val":
    if ds.val_ids is None:
      raise ValueError("split='val': this dataset has no validation split; make one with hold_out().")
    images, labels = ds.val_images, ds.val_clean_labels
    extra = {"noisy_label": ds.val_noisy_labels, "id": ds.val_ids}
  elif split in ds.eval_sets:
    (images, labels), extra = ds.eval_sets[split], {}
  else:
    raise ValueError(
      f"split must be 'test', 'train', 'val' (after hold_out) or in {sorted(ds.eval_sets)}, got {split!r}."
    )
  n = images.shape[0]
  for start in range(0, n, batch_size):
    lo = min(n, start + process_index * local)
    hi = min(n, start + (process_index + 1) * local)
    pad = local - (hi - lo)
    if ds.streamed:
      size = ds.image_shape[0]
      pixels = stream.eval_images(images[lo:hi], kind=ds.augment, size=size, num_threads=num_threads)
    else:
      pixels = preprocess.normalize(images[lo:hi], ds.mean, ds.std)
    batch = {
      "image": pixels,
      "label": labels[lo:hi],
      "mask": np.ones(hi - lo, np.float32),
      **{k: v[lo:hi] for k, v in extra.items()},
    }
    if pad:
      batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
    yield batch
