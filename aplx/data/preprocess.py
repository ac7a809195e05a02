"""The paper's preprocessing, vectorised over a batch in NumPy.

Normalisation per dataset (official `dataset.py` constants), and augmentation (../shared/FIDELITY.md):
  mnist      none
  cifar10    random crop 32 with 4-pixel zero padding + horizontal flip
  cifar100   the same + random rotation, angle uniform in [-20, 20] degrees (nearest, zero fill)
Augmentation is done on uint8 images *before* normalisation, so padding and rotation fill are black
pixels as in torchvision. All randomness is a pure function of (seed, epoch, example id): a
counter-based hash, no generator state, so any batch can be rebuilt exactly (resume, re-shard).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["AUGMENTATIONS", "NORMALIZATION", "augment", "normalize", "uniform"]

# (mean, std) per channel, on images scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
  "mnist": ((0.1307,), (0.3081,)),
  "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
  "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # WebVision, Clothing1M (`imagenet`).
}


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 `[b, H, W, C]` -> float32 `(x / 255 - mean) / std`."""
  scale = np.float32(1.0 / 255.0) / np.asarray(std, np.float32)
  shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
  return images.astype(np.float32) * scale - shift


# ---------------------------------------------------------------------------------------------------
# Counter-based randomness
# ---------------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64 finaliser (array-only arithmetic: wraps modulo 2^64 without warnings)."""
  x = x ^ (x >> np.uint64(30))
  x = x * _M1
  x = x ^ (x >> np.uint64(27))
  x = x * _M2
  return x ^ (x >> np.uint64(31))


def uniform(seed: int, epoch: int, ids, stream: int) -> np.ndarray:
  """Uniform floats in [0, 1), one per id, a pure function of (seed, epoch, id, stream)."""
  ids = np.asarray(ids).astype(np.uint64)
  key = np.array([seed, epoch, stream], dtype=np.int64).astype(np.uint64)
  h = _mix(np.full(ids.shape, key[0], np.uint64) + _GOLDEN)
  h = _mix(h ^ (key[1] + _GOLDEN))
  h = _mix(h ^ (key[2] + _GOLDEN))
  h = _mix(h ^ ids)
  return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# ---------------------------------------------------------------------------------------------------
# Augmentations: uint8 [b, H, W, C] -> uint8 [b, H, W, C]
# ---------------------------------------------------------------------------------------------------


def _geometric(images, ids, seed, epoch, *, pad: int, flip: bool, max_degrees: float):
  """Crop (zero pad `pad`), flip, rotate — composed into one nearest-neighbour gather."""
  b, h, w, _ = images.shape
  y = np.arange(h, dtype=np.float64)[None, :, None]
  x = np.arange(w, dtype=np.float64)[None, None, :]
  valid = np.ones((b, h, w), bool)
  if max_degrees:
    # Output pixel -> source pixel in the cropped+flipped image (inverse rotation about the centre).
    theta = np.deg2rad((2.0 * uniform(seed, epoch, ids, 3) - 1.0) * max_degrees)[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = np.cos(theta), np.sin(theta)
    ys = np.rint(cos * (y - cy) - sin * (x - cx) + cy).astype(np.int64)
    xs = np.rint(sin * (y - cy) + cos * (x - cx) + cx).astype(np.int64)
    valid &= (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
  else:
    ys = np.broadcast_to(y.astype(np.int64), (b, h, w))
    xs = np.broadcast_to(x.astype(np.int64), (b, h, w))
  if flip:
    flipped = (uniform(seed, epoch, ids, 2) < 0.5)[:, None, None]
    xs = np.where(flipped, w - 1 - xs, xs)
  if pad:
    oy = np.floor(uniform(seed, epoch, ids, 0) * (2 * pad + 1)).astype(np.int64)[:, None, None]
    ox = np.floor(uniform(seed, epoch, ids, 1) * (2 * pad + 1)).astype(np.int64)[:, None, None]
    ys, xs = ys + oy - pad, xs + ox - pad
    valid &= (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
  rows = np.arange(b)[:, None, None]
  out = images[rows, np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]
  out *= valid[..., None].astype(out.dtype)
  return out


def _none(images, ids, seed, epoch):
  del ids, seed, epoch
  return images


def _crop_flip(images, ids, seed, epoch):
  return _geometric(images, ids, seed, epoch, pad=4, flip=True, max_degrees=0.0)


def _crop_flip_rotate(images, ids, seed, epoch):
  return _geometric(images, ids, seed, epoch, pad=4, flip=True, max_degrees=20.0)


AUGMENTATIONS: dict[str, Callable[..., np.ndarray]] = {
  "none": _none,
  "crop_flip": _crop_flip,
  "crop_flip_rotate": _crop_flip_rotate,
}


def augment(images: np.ndarray, ids, *, kind: str, seed: int, epoch: int) -> np.ndarray:
  """Applies augmentation `kind` to a uint8 batch; randomness from (seed, epoch, id) only."""
  if kind not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {kind!r}; known: {sorted(AUGMENTATIONS)}.")
  return AUGMENTATIONS[kind](images, np.asarray(ids), seed, epoch)
