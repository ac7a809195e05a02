"""The paper's small CNNs for MNIST and CIFAR-10 (the authors' `ToyModel`, official `models.py`)."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from aplx.models import _cpu_kernels, _layers
from aplx.models._checks import check_input

# The `kernels` option: "fast" computes each ConvBNReLU block with `_cpu_kernels` (same function, faster
# on XLA:CPU), "reference" with the plain layers, "auto" picks "fast" on the CPU backend only.
KERNELS = ("auto", "fast", "reference")


def resolve_kernels(kernels: str) -> str:
  """What a `kernels` option stands for, "fast" or "reference"; "auto" asks `_cpu_kernels.backend()`."""
  if kernels not in KERNELS:
    raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))}; got {kernels!r}")
  if kernels == "auto":
    return "fast" if _cpu_kernels.backend() == "cpu" else "reference"
  return kernels


class ConvBNReLU(nnx.Module):
  """The authors' `ConvBrunch`: conv3x3 (padding 1, with bias) + BatchNorm + ReLU (+ a 2x2 max-pool).

  ``cpu_kernels``: compute the block with `_cpu_kernels.conv_bn_relu` (the same function, written for
  XLA:CPU) instead of the plain layers.
  """

  def __init__(self, in_ch: int, out_ch: int, *, cpu_kernels: bool = False, dtype, rngs: nnx.Rngs):
    self.conv = _layers.conv(
      in_ch, out_ch, 3, use_bias=True, kernel_init=_layers.kaiming_uniform_relu, dtype=dtype, rngs=rngs
    )
    self.bn = _layers.BatchNorm(out_ch, dtype=dtype, rngs=rngs)
    self.cpu_kernels = cpu_kernels

  def __call__(self, x, *, pool: bool = False):
    """The block's output, followed by a 2x2 max-pool if ``pool``."""
    if self.cpu_kernels:
      return _cpu_kernels.conv_bn_relu(self.conv, self.bn, x, pool=pool)
    y = jax.nn.relu(self.bn(self.conv(x)))
    return _layers.max_pool_2x2_reference(y) if pool else y


class ToyCNN(nnx.Module):
  """Stacks of ConvBNReLU blocks, each block followed by a 2x2 max-pool, then Dense+BN+ReLU, Dense.

  The flattened features are ordered (C, H, W) like PyTorch's ``x.view(B, -1)`` on NCHW, so weights
  port one-to-one from the authors' model. ``kernels``: one of `KERNELS`; ``self.kernels`` is what it
  resolved to at construction, "fast" or "reference".
  """

  def __init__(
    self,
    *,
    blocks: tuple[tuple[int, ...], ...],
    in_channels: int,
    image_size: int,
    hidden: int,
    num_classes: int,
    kernels: str,
    dtype,
    rngs: nnx.Rngs,
  ):
    self.kernels = resolve_kernels(kernels)  # "fast" or "reference"
    self.in_channels = in_channels
    self.image_size = image_size
    self.dtype = dtype
    cpu_kernels = self.kernels == "fast"
    layers = []
    ch = in_channels
    for widths in blocks:
      block = []
      for width in widths:
        block.append(ConvBNReLU(ch, width, cpu_kernels=cpu_kernels, dtype=dtype, rngs=rngs))
        ch = width
      layers.append(nnx.List(block))
    self.blocks = nnx.List(layers)
    side = image_size // 2 ** len(blocks)
    self.fc1 = _layers.dense(
      ch * side * side, hidden, kernel_init=_layers.xavier_uniform, dtype=dtype, rngs=rngs
    )
    self.bn1 = _layers.BatchNorm(hidden, dtype=dtype, rngs=rngs)
    self.fc2 = _layers.dense(hidden, num_classes, kernel_init=_layers.xavier_uniform, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    check_input(
      x, channels=self.in_channels, size=(self.image_size, self.image_size), name=type(self).__name__
    )
    x = x.astype(self.dtype)
    for block in self.blocks:
      for i, layer in enumerate(block):
        x = layer(x, pool=i == len(block) - 1)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # PyTorch's NCHW flatten order
    x = jax.nn.relu(self.bn1(self.fc1(x)))
    return self.fc2(x).astype(jnp.float32)


def mnist_cnn(*, num_classes: int = 10, rngs: nnx.Rngs, kernels: str = "auto", dtype=jnp.float32) -> ToyCNN:
  """The authors' MNIST `ToyModel`: [conv3x3 32+BN+ReLU, pool] [conv3x3 64+BN+ReLU, pool], FC 128, FC K.

  Input [B, 28, 28, 1]. ``kernels``: "auto" (default: "fast" on the CPU backend, else "reference"),
  "fast" (`_cpu_kernels`) or "reference" (the plain layers); the same function (see docs/models.md).
  """
  return ToyCNN(
    blocks=((32,), (64,)),
    in_channels=1,
    image_size=28,
    hidden=128,
    num_classes=num_classes,
    kernels=kernels,
    dtype=dtype,
    rngs=rngs,
  )


def cifar10_cnn(*, num_classes: int = 10, rngs: nnx.Rngs, kernels: str = "auto", dtype=jnp.float32) -> ToyCNN:
  """The authors' CIFAR-10 8-layer `ToyModel`: 3 x (2 x conv3x3+BN+ReLU, pool) with 64/128/196 channels,
  FC 256 + BN + ReLU, FC K. Input [B, 32, 32, 3]. ``kernels``: as `mnist_cnn`'s."""
  return ToyCNN(
    blocks=((64, 64), (128, 128), (196, 196)),
    in_channels=3,
    image_size=32,
    hidden=256,
    num_classes=num_classes,
    kernels=kernels,
    dtype=dtype,
    rngs=rngs,
  )
