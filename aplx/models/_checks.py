"""Input validation shared by the models (runs at trace time, free under jit)."""

from __future__ import annotations

import jax.numpy as jnp


def check_input(x, *, channels: int, size: tuple[int, int] | None, name: str) -> None:
  """Raises ValueError unless x is a float [B, H, W, channels] array (and H, W == size if given)."""
  shape = getattr(x, "shape", None)
  if shape is None or len(shape) != 4:
    raise ValueError(
      f"{name} expects images as a float array [batch, height, width, channels] (NHWC); got shape "
      f"{shape}. Add a batch axis with x[None] or a channel axis with x[..., None]."
    )
  if shape[-1] != channels:
    raise ValueError(
      f"{name} expects {channels} input channel(s) in the last axis (NHWC); got shape {tuple(shape)}. "
      "Images in NCHW order must be transposed with x.transpose(0, 2, 3, 1)."
    )
  if size is not None and tuple(shape[1:3]) != tuple(size):
    raise ValueError(f"{name} expects {size[0]}x{size[1]} images; got shape {tuple(shape)}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} expects floating-point images (normalised); got dtype {x.dtype}.")
