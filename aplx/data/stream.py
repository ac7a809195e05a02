"""Streaming storage for datasets too large for RAM (WebVision, Clothing1M): images stay in the prepared
TFDS array_record files and are read by index only when a batch needs them.

A `Records` is a lazy, indexable view of rows of one split: indexing it (a slice, a mask, an index array)
gives another view, reading it fetches the encoded images of its rows through `tfds` random access
(`builder.as_data_source`). What a process keeps in RAM is the example ids and labels (a few bytes per
example) and the data-source handle, so its memory does not grow with the dataset (docs/data.md has the
measurement). A `Records` pickles as its location and row ids, so grain worker processes
(`train_batches(num_workers=...)`) open their own handles.

`train_images` / `eval_images` turn a view into a float32 batch with `aplx.data.imagenet`'s per-example
transforms; the training randomness is a pure function of (seed, step, example id).
"""

from __future__ import annotations

from concurrent import futures
import threading

import numpy as np

from aplx import _deps

with _deps.extra("data", __name__):
  import tensorflow_datasets as tfds

from aplx.data import imagenet
from aplx.data import prepare as prepare_lib

__all__ = ["Records", "eval_images", "train_images"]

_SOURCES: dict[tuple[str, str, str, str], object] = {}  # Per process: (name, data_dir, split, files).
_SOURCES_LOCK = threading.Lock()


def _source(name: str, data_dir: str, split: str, files: str):
  key = (name, data_dir, split, files)  # A dataset prepared again (other files) gets a new handle.
  with _SOURCES_LOCK:
    if key not in _SOURCES:
      decoders = {"image": tfds.decode.SkipDecoding()}  # Encoded bytes; decoded per example below.
      _SOURCES[key] = prepare_lib.builder(name, data_dir).as_data_source(split=split, decoders=decoders)
    return _SOURCES[key]


class Records:
  """Rows of split `split` of dataset `name` in `data_dir`: row r is data-source example `index[r]`.
  `files` identifies the prepared files (their fingerprint), so that handles are not reused across a
  re-preparation."""

  def __init__(self, name: str, data_dir: str, split: str, index: np.ndarray, files: str = ""):
    self.name, self.data_dir, self.split, self.files = name, str(data_dir), split, files
    self.index = np.asarray(index, np.int64)

  @property
  def shape(self) -> tuple[int]:
    return (int(self.index.shape[0]),)

  def __len__(self) -> int:
    return int(self.index.shape[0])

  def __getitem__(self, rows) -> Records:
    return Records(self.name, self.data_dir, self.split, self.index[rows], self.files)

  def __repr__(self) -> str:
    return f"Records({self.name!r}, split={self.split!r}, {len(self)} rows)"

  def read(self) -> list[bytes]:
    """The encoded image of every row, in row order (one batched random-access read)."""
    if not len(self):
      return []
    rows = _source(self.name, self.data_dir, self.split, self.files).__getitems__(self.index.tolist())
    return [row["image"] for row in rows]


def _decode(data: bytes, row: int, records: Records):
  try:
    return imagenet.decode(data)
  except ValueError as e:
    raise ValueError(
      f"{records.name} split {records.split!r}: example {int(records.index[row])} does not decode ({e}). "
      "The prepared files are damaged: prepare the dataset again (docs/data.md)."
    ) from e


def train_images(records: Records, ids, *, kind: str, seed: int, step: int, size: int) -> np.ndarray:
  """float32 [b, size, size, 3]: the rows of `records`, decoded and augmented for training
  (`imagenet.train_example`, randomness from (seed, step, id)), normalised."""
  out = np.empty((len(records), size, size, 3), np.float32)
  for row, (data, example_id) in enumerate(zip(records.read(), np.asarray(ids), strict=True)):
    image = _decode(data, row, records)
    out[row] = imagenet.train_example(
      image, kind=kind, seed=seed, step=step, example_id=int(example_id), size=size
    )
  return out


def eval_images(records: Records, *, kind: str, size: int, num_threads: int = 1) -> np.ndarray:
  """float32 [b, size, size, 3]: the rows of `records` with the evaluation transform, normalised.
  `num_threads` > 1 decodes in a thread pool (Pillow releases the GIL while decoding and resizing)."""
  out = np.empty((len(records), size, size, 3), np.float32)

  def one(item):
    row, data = item
    out[row] = imagenet.eval_example(_decode(data, row, records), kind=kind, size=size)

  items = list(enumerate(records.read()))
  if num_threads > 1 and len(items) > 1:
    with futures.ThreadPoolExecutor(num_threads) as pool:
      list(pool.map(one, items))
  else:
    for item in items:
      one(item)
  return out
