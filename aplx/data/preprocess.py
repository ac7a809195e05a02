"""The paper's preprocessing, vectorised over a batch in NumPy.

Normalisation per dataset (official `dataset.py` constants), and augmentation (../shared/FIDELITY.md):
  mnist      none
  cifar10    random crop 32 with 4-pixel zero padding + horizontal flip
  cifar100   the same + random rotation, angle uniform in [-20, 20] degrees (nearest, zero fill;
             source pixels in fixed point, the same bytes in NumPy and XLA)
Augmentation is done on uint8 images *before* normalisation, so padding and rotation fill are black
pixels as in torchvision. All randomness is a pure function of (seed, epoch, example id): a
counter-based hash, no generator state, so any batch can be rebuilt exactly (resume, re-shard).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["AUGMENTATIONS", "NORMALIZATION", "apply", "augment", "draws", "normalize", "uniform"]

# (mean, std) per channel, on images scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
  "mnist": ((0.1307,), (0.3081,)),
  "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
  "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # WebVision, Clothing1M (`imagenet`).
}


def normalize(images, mean, std):
  """uint8 `[b, H, W, C]` -> float32 `(x / 255 - mean) / std`, as `x * scale - shift` with float32
  constants (a NumPy or, inside jit, a jax array: the same bytes either way)."""
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
# Two halves: `draws` (host, NumPy) turns (seed, epoch, id) into per-example parameters, and `apply`
# makes the images from them with array operations that NumPy and jax.numpy compute identically
# (integer index arithmetic only, the rotation in fixed point), so batches built on the host and on an
# accelerator (`aplx.data.device`) are the same bytes. (Rotation in float32 was not enough: XLA fuses
# cos * dy - sin * dx + c into multiply-adds, which round differently from NumPy at the .5 ties of
# nearest-neighbour sampling.)

_ROTATION_BITS = 16  # cos and sin in units of 2^-16 (an error of <= 2^-17 per factor).

# kind -> (zero padding of the random crop, horizontal flip, maximum rotation in degrees)
_GEOMETRY = {"none": (0, False, 0.0), "crop_flip": (4, True, 0.0), "crop_flip_rotate": (4, True, 20.0)}
AUGMENTATIONS = tuple(_GEOMETRY)


def _check_kind(kind: str) -> tuple[int, bool, float]:
  if kind not in _GEOMETRY:
    raise ValueError(f"unknown augmentation {kind!r}; known: {sorted(_GEOMETRY)}.")
  return _GEOMETRY[kind]


def draws(ids, *, kind: str, seed: int, epoch: int) -> dict[str, np.ndarray]:
  """The random parameters of augmentation `kind` for examples `ids` [...]: a pure function of
  (seed, epoch, id). {"offset_y", "offset_x": int32 crop offsets in [0, 2 pad], "flip": bool,
  "cos", "sin": int32, the rotation angle's cosine and sine in units of 2^-16}, each of ids' shape;
  the ones `kind` does not use are left out ("none": {})."""
  pad, flip, max_degrees = _check_kind(kind)
  ids = np.asarray(ids)
  out = {}
  if max_degrees:
    theta = np.deg2rad((2.0 * uniform(seed, epoch, ids, 3) - 1.0) * max_degrees)
    one = 1 << _ROTATION_BITS
    out["cos"], out["sin"] = (np.rint(f(theta) * one).astype(np.int32) for f in (np.cos, np.sin))
  if flip:
    out["flip"] = uniform(seed, epoch, ids, 2) < 0.5
  if pad:
    out["offset_y"] = np.floor(uniform(seed, epoch, ids, 0) * (2 * pad + 1)).astype(np.int32)
    out["offset_x"] = np.floor(uniform(seed, epoch, ids, 1) * (2 * pad + 1)).astype(np.int32)
  return out


def apply(images, params: Mapping, *, kind: str, xp=np):
  """Augments a uint8 batch [b, H, W, C] with `draws`' parameters [b]: crop (zero padding), flip and
  rotation (nearest, zero fill) composed into one gather. `xp`: numpy, or jax.numpy inside jit."""
  pad, flip, max_degrees = _check_kind(kind)
  if not (pad or flip or max_degrees):
    return images
  b, h, w, _ = images.shape
  y = xp.arange(h, dtype=xp.int32)[None, :, None]
  x = xp.arange(w, dtype=xp.int32)[None, None, :]
  valid = xp.ones((b, h, w), bool)
  if max_degrees:
    # Output pixel -> source pixel in the cropped + flipped image (inverse rotation about the centre c):
    # source = round(cos dy - sin dx + c_y, sin dy + cos dx + c_x) with dy = y - c_y, dx = x - c_x,
    # in integers: 2 dy and 2 dx are integers and cos, sin carry 16 fractional bits, so the sum is
    # an integer in units of 2^-17; rounding half up is adding 2^16 and an arithmetic shift by 17.
    if max(h, w) > 8192:
      raise ValueError(f"rotation supports images up to 8192 pixels a side (int32), got {h} x {w}.")
    cos, sin = params["cos"][:, None, None], params["sin"][:, None, None]
    dy2, dx2 = 2 * y - (h - 1), 2 * x - (w - 1)
    half, shift = 1 << _ROTATION_BITS, _ROTATION_BITS + 1
    ys = (cos * dy2 - sin * dx2 + ((h - 1) << _ROTATION_BITS) + half) >> shift
    xs = (sin * dy2 + cos * dx2 + ((w - 1) << _ROTATION_BITS) + half) >> shift
    valid = valid & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
  else:
    ys, xs = xp.broadcast_to(y, (b, h, w)), xp.broadcast_to(x, (b, h, w))
  if flip:
    xs = xp.where(params["flip"][:, None, None], w - 1 - xs, xs)
  if pad:
    ys = ys + params["offset_y"][:, None, None] - pad
    xs = xs + params["offset_x"][:, None, None] - pad
    valid = valid & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
  rows = xp.arange(b)[:, None, None]
  out = images[rows, xp.clip(ys, 0, h - 1), xp.clip(xs, 0, w - 1)]
  return out * valid[..., None].astype(out.dtype)


def augment(images: np.ndarray, ids, *, kind: str, seed: int, epoch: int) -> np.ndarray:
  """Applies augmentation `kind` to a uint8 batch; randomness from (seed, epoch, id) only."""
  return apply(images, draws(ids, kind=kind, seed=seed, epoch=epoch), kind=kind)
