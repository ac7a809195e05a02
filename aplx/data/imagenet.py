"""The authors' ImageNet-style per-example transforms for WebVision and Clothing1M, on PIL images.

What each kind does (official `dataset.py`, `WebVisionDatasetLoader` / `Clothing1MDatasetLoader`):
  webvision   train: RandomResizedCrop(224) (scale (0.08, 1), ratio (3/4, 4/3), bilinear),
                     RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4, 0.2), ToTensor, Normalize
              eval:  Resize(256) (shorter side), CenterCrop(224), ToTensor, Normalize
  clothing1m  train: RandomResizedCrop(224), RandomHorizontalFlip, RandomRotation(20) (nearest, zero fill),
                     ColorJitter(0.4, 0.4, 0.4, 0.2), ToTensor, Normalize, Cutout(112) (`use_cutout=True` is
                     the loader's default): a square of side 2 * (112 // 2) zeroed in the *normalised*
                     image, its centre uniform over the pixels, clipped at the borders
              eval:  Resize((224, 224)), ToTensor, Normalize
Normalize uses the ImageNet mean and std (`MEAN`, `STD`).

Fidelity: the algorithms are torchvision's for PIL input (`transforms.py`, `functional.py`,
`_functional_pil.py`): RandomResizedCrop's 10 attempts with Python rounding and the centre-crop fallback
with the ratio clamped, PIL's antialiased bilinear resize of the crop, ImageEnhance for brightness /
contrast / saturation, the uint8 HSV hue shift (wrapping), the 4 jitter ops in a random order,
`Image.rotate` about the centre without expansion, CenterCrop's rounding and zero padding, ToTensor /
Normalize in float32 in the same order. The pixel ops are Pillow's own calls, so given the same random
parameters the output equals torchvision's bit for bit (checked against torchvision 0.29.1 on Pillow
13.0.0, end to end through the authors' `transforms.Compose` and Cutout).
What differs is the random source: torch's global generator is replaced by
`preprocess.uniform(seed, step, example_id, stream)`, a counter-based hash with one stream per random
quantity (below), so any example of any step can be rebuilt exactly (resume, re-shard, worker
processes) without generator state. Uniform draws are float64 (torch: float32); integer draws
`torch.randint(0, n)` are `floor(u * n)`; the jitter order `torch.randperm(4)` is the argsort of 4
uniforms. Output is channels-last float32 `[size, size, 3]` (torch: `[3, H, W]`).

`size` (default 224, the authors') is the side of the output, for tests and small runs: the train crop is
resized to `size`, Cutout's side scales as round(112 * size / 224), the WebVision eval resize is
round(size * 256 / 224).
"""

from __future__ import annotations

import io
import math
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageEnhance

from aplx.data import preprocess

__all__ = ["KINDS", "MEAN", "STD", "decode", "eval_example", "train_example"]

KINDS = ("webvision", "clothing1m")
MEAN, STD = preprocess.NORMALIZATION["imagenet"]  # ImageNet (0.485, 0.456, 0.406), (0.229, 0.224, 0.225).

AUTHORS_SIZE = 224
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10
# ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2): factor ranges as torchvision's
# `_check_input` makes them, [1 - 0.4, 1 + 0.4] and [-0.2, 0.2]. Op index 0..3 as in `ColorJitter.forward`.
JITTER_RANGES = ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.2, 0.2))  # brightness, contrast, saturation, hue
ROTATION_DEGREES = 20.0  # clothing1m
CUTOUT_LENGTH = 112  # clothing1m, at 224 px
EVAL_RESIZE = 256  # webvision, at 224 px

# `preprocess.uniform` streams, one per random quantity (preprocess uses 0-3, the validation split 0x7A1).
_CROP_STREAM = 0x1000  # attempt k: + 4k area, + 4k + 1 log-ratio, + 4k + 2 top, + 4k + 3 left
_FLIP_STREAM = 0x1030
_ANGLE_STREAM = 0x1031
_FACTOR_STREAMS = (0x1032, 0x1033, 0x1034, 0x1035)  # brightness, contrast, saturation, hue
_ORDER_STREAMS = (0x1036, 0x1037, 0x1038, 0x1039)
_CUTOUT_STREAMS = (0x103A, 0x103B)  # centre y, x


class _Params(NamedTuple):
  """The random parameters of one training example, in torchvision's terms."""

  box: tuple[int, int, int, int]  # RandomResizedCrop (top, left, height, width)
  flip: bool
  angle: float | None  # RandomRotation degrees (counter-clockwise, as PIL), None: no rotation
  order: tuple[int, ...]  # ColorJitter op indices, applied first to last
  factors: tuple[float, float, float, float]  # brightness, contrast, saturation, hue
  cutout: tuple[int, int] | None  # Cutout centre (y, x) in the output, None: no Cutout


def _check_kind(kind: str):
  if kind not in KINDS:
    raise ValueError(f"unknown image transform kind {kind!r}; known: {KINDS}.")


def decode(data: bytes) -> Image.Image:
  """Encoded image bytes (JPEG, PNG, ...) -> RGB PIL image (`Image.open(...).convert("RGB")`, as the
  authors' loaders). Raises ValueError when the bytes are not a decodable image."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      return image.convert("RGB")
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"undecodable image ({len(data)} bytes): {e}") from e


# ---------------------------------------------------------------------------------------------------
# Random parameters: a pure function of (seed, step, example id)
# ---------------------------------------------------------------------------------------------------


def _u(seed: int, step: int, example_id: int, stream: int) -> float:
  return float(preprocess.uniform(seed, step, [example_id], stream)[0])


def _crop_box(width: int, height: int, u) -> tuple[int, int, int, int]:
  """`RandomResizedCrop.get_params`: `u(stream)` gives the uniforms. Returns (top, left, height, width)."""
  area = height * width
  log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
  for k in range(CROP_ATTEMPTS):
    s = _CROP_STREAM + 4 * k
    target_area = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u(s))
    aspect_ratio = math.exp(log_lo + (log_hi - log_lo) * u(s + 1))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      top = math.floor(u(s + 2) * (height - h + 1))
      left = math.floor(u(s + 3) * (width - w + 1))
      return top, left, h, w
  # Fallback: the whole image, cropped to the nearest allowed aspect ratio, centred.
  in_ratio = width / height
  if in_ratio < min(CROP_RATIO):
    w, h = width, int(round(width / min(CROP_RATIO)))
  elif in_ratio > max(CROP_RATIO):
    w, h = int(round(height * max(CROP_RATIO))), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def _params(kind: str, width: int, height: int, *, seed: int, step: int, example_id: int, size: int):
  """All random parameters of one training example of a `width` x `height` image."""
  u = lambda stream: _u(seed, step, example_id, stream)
  angle, cutout = None, None
  if kind == "clothing1m":
    angle = -ROTATION_DEGREES + 2.0 * ROTATION_DEGREES * u(_ANGLE_STREAM)
    cutout = (math.floor(u(_CUTOUT_STREAMS[0]) * size), math.floor(u(_CUTOUT_STREAMS[1]) * size))
  factors = tuple(lo + (hi - lo) * u(s) for (lo, hi), s in zip(JITTER_RANGES, _FACTOR_STREAMS))
  order = tuple(int(i) for i in np.argsort([u(s) for s in _ORDER_STREAMS], kind="stable"))
  return _Params(
    box=_crop_box(width, height, u),
    flip=u(_FLIP_STREAM) < 0.5,
    angle=angle,
    order=order,
    factors=factors,
    cutout=cutout,
  )


# ---------------------------------------------------------------------------------------------------
# Pixel ops: torchvision's PIL paths
# ---------------------------------------------------------------------------------------------------


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
  """`F.resize` on PIL: bilinear (PIL always antialiases); the image itself when the size is unchanged."""
  if image.size == (width, height):
    return image
  return image.resize((width, height), Image.Resampling.BILINEAR)


def _resize_shorter(image: Image.Image, short: int) -> Image.Image:
  """`Resize(short)`: the shorter side to `short`, the longer to int(short * long / shorter)."""
  w, h = image.size
  if w <= h:
    return _resize(image, short, int(short * h / w))
  return _resize(image, int(short * w / h), short)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
  """`CenterCrop(size)`: zero padding (left/top get the smaller half) if the image is smaller, then a
  crop whose offset is Python's round((side - size) / 2), half to even."""
  w, h = image.size
  if size > w or size > h:
    pad_w, pad_h = max(size - w, 0), max(size - h, 0)
    padded = Image.new(image.mode, (w + pad_w, h + pad_h), 0)
    padded.paste(image, (pad_w // 2, pad_h // 2))
    image, (w, h) = padded, padded.size
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def _resized_crop(image: Image.Image, box, size: int) -> Image.Image:
  """`F.resized_crop`: crop (top, left, height, width), then bilinear resize to size x size."""
  top, left, h, w = box
  return _resize(image.crop((left, top, left + w, top + h)), size, size)


def _hflip(image: Image.Image) -> Image.Image:
  return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _rotate(image: Image.Image, angle: float) -> Image.Image:
  """`F.rotate` on PIL: nearest, about the centre, same size, zero fill."""
  return image.rotate(angle, Image.Resampling.NEAREST, expand=False, fillcolor=(0,) * len(image.getbands()))


def _adjust_hue(image: Image.Image, hue_factor: float) -> Image.Image:
  """`F.adjust_hue` on PIL: the HSV hue channel shifted by int(hue_factor * 255), wrapping modulo 256."""
  h, s, v = image.convert("HSV").split()
  shift = np.int32(hue_factor * 255).astype(np.uint8)  # trunc toward 0, then modulo 256 (torchvision's)
  h = Image.fromarray(np.asarray(h, np.uint8) + shift, "L")
  return Image.merge("HSV", (h, s, v)).convert(image.mode)


def _jitter(image: Image.Image, order, factors) -> Image.Image:
  """`ColorJitter.forward`: the ops in `order` (0 brightness, 1 contrast, 2 saturation, 3 hue)."""
  enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
  for op in order:
    if op == 3:
      image = _adjust_hue(image, factors[3])
    else:
      image = enhancers[op](image).enhance(factors[op])
  return image


def _normalize(image: Image.Image) -> np.ndarray:
  """`ToTensor` then `Normalize`, in float32 and in torchvision's order: (x / 255 - mean) / std."""
  x = np.asarray(image, np.float32) / np.float32(255.0)
  return (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)


def _cutout(x: np.ndarray, centre, length: int) -> np.ndarray:
  """The authors' `Cutout(length)` on a normalised [H, W, C] image: rows / columns
  [centre - length // 2, centre + length // 2) clipped to the image, set to 0 (they multiply by a 0/1
  mask, which only differs in the sign of zero)."""
  h, w = x.shape[:2]
  y, c = centre
  half = length // 2
  x[np.clip(y - half, 0, h) : np.clip(y + half, 0, h), np.clip(c - half, 0, w) : np.clip(c + half, 0, w)] = (
    0.0
  )
  return x


def _augment(image: Image.Image, params: _Params, size: int) -> np.ndarray:
  """The training transform with fixed `params` (torchvision's order of ops)."""
  image = _resized_crop(image, params.box, size)
  if params.flip:
    image = _hflip(image)
  if params.angle is not None:
    image = _rotate(image, params.angle)
  x = _normalize(_jitter(image, params.order, params.factors))
  if params.cutout is not None:
    x = _cutout(x, params.cutout, int(round(CUTOUT_LENGTH * size / AUTHORS_SIZE)))
  return x


# ---------------------------------------------------------------------------------------------------
# Public transforms
# ---------------------------------------------------------------------------------------------------


def train_example(
  image: Image.Image, *, kind: str, seed: int, step: int, example_id: int, size: int = AUTHORS_SIZE
) -> np.ndarray:
  """The authors' training transform of `kind` for one RGB image -> float32 [size, size, 3], normalised.

  Randomness is a pure function of (seed, step, example_id): the same triple gives the same output.
  `size` is the output side (224 the authors'); Cutout (clothing1m) scales as round(112 * size / 224).
  """
  _check_kind(kind)
  width, height = image.size
  params = _params(kind, width, height, seed=seed, step=step, example_id=example_id, size=size)
  return _augment(image, params, size)


def eval_example(image: Image.Image, *, kind: str, size: int = AUTHORS_SIZE) -> np.ndarray:
  """The authors' evaluation transform of `kind` -> float32 [size, size, 3], normalised.

  webvision: shorter side resized to round(size * 256 / 224) (256 at 224), centre crop `size`;
  clothing1m: resized to (size, size).
  """
  _check_kind(kind)
  if kind == "webvision":
    image = _center_crop(_resize_shorter(image, int(round(size * EVAL_RESIZE / AUTHORS_SIZE))), size)
  else:
    image = _resize(image, size, size)
  return _normalize(image)
