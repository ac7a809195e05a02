"""ResNets: CIFAR-style (the authors' `models.py`) and ImageNet-style (torchvision's resnet50, WebVision).

CIFAR-style: 3x3 stride-1 stem, no max-pool, four stages (64, 128, 256, 512), global average pool
(the authors' ``avg_pool2d(out, 4)`` on the 4x4 map of a 32x32 input), Linear. Kaiming-uniform
(fan_in, relu) convs and Xavier-uniform Linear weight, as in the authors' ``_reset_prams``.

ImageNet-style: torchvision.models.resnet50 (what the authors' WebVision config instantiates): 7x7
stride-2 stem, 3x3 stride-2 max-pool, stride on the 3x3 conv of the bottleneck ("v1.5"),
Kaiming-normal (fan_out) convs, PyTorch's default Linear init.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from aplx.models import _layers
from aplx.models._checks import check_input


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, in_ch, planes, stride, *, conv_init, dtype, rngs):
    c = dict(use_bias=False, kernel_init=conv_init, dtype=dtype, rngs=rngs)
    self.conv1 = _layers.conv(in_ch, planes, 3, stride=stride, **c)
    self.bn1 = _layers.BatchNorm(planes, dtype=dtype, rngs=rngs)
    self.conv2 = _layers.conv(planes, planes, 3, **c)
    self.bn2 = _layers.BatchNorm(planes, dtype=dtype, rngs=rngs)
    self.shortcut = _shortcut(in_ch, planes, stride, c, dtype, rngs)

  def __call__(self, x):
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return jax.nn.relu(out + _apply_shortcut(self.shortcut, x))


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, in_ch, planes, stride, *, conv_init, dtype, rngs):
    c = dict(use_bias=False, kernel_init=conv_init, dtype=dtype, rngs=rngs)
    self.conv1 = _layers.conv(in_ch, planes, 1, **c)
    self.bn1 = _layers.BatchNorm(planes, dtype=dtype, rngs=rngs)
    self.conv2 = _layers.conv(planes, planes, 3, stride=stride, **c)
    self.bn2 = _layers.BatchNorm(planes, dtype=dtype, rngs=rngs)
    self.conv3 = _layers.conv(planes, planes * 4, 1, **c)
    self.bn3 = _layers.BatchNorm(planes * 4, dtype=dtype, rngs=rngs)
    self.shortcut = _shortcut(in_ch, planes * 4, stride, c, dtype, rngs)

  def __call__(self, x):
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = jax.nn.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return jax.nn.relu(out + _apply_shortcut(self.shortcut, x))


def _shortcut(in_ch, out_ch, stride, conv_kwargs, dtype, rngs):
  """Identity (None) or conv1x1(stride) + BN when the shape changes, as in both reference codes."""
  if stride == 1 and in_ch == out_ch:
    return None
  return nnx.List(
    [
      _layers.conv(in_ch, out_ch, 1, stride=stride, **conv_kwargs),
      _layers.BatchNorm(out_ch, dtype=dtype, rngs=rngs),
    ]
  )


def _apply_shortcut(shortcut, x):
  if shortcut is None:
    return x
  conv, bn = shortcut
  return bn(conv(x))


class ResNet(nnx.Module):
  """ResNet over NHWC images; ``stem="cifar"`` or ``"imagenet"`` (see module docstring)."""

  def __init__(
    self,
    block,
    stage_sizes,
    *,
    num_classes: int,
    stem: str,
    in_channels: int = 3,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.stem = stem
    self.in_channels = in_channels
    self.dtype = dtype
    if stem == "cifar":
      conv_init, fc_init = _layers.kaiming_uniform_relu, _layers.xavier_uniform
      self.conv1 = _layers.conv(
        in_channels, 64, 3, use_bias=False, kernel_init=conv_init, dtype=dtype, rngs=rngs
      )
    elif stem == "imagenet":
      conv_init, fc_init = _layers.kaiming_normal_fan_out, _layers.torch_default_kernel
      self.conv1 = _layers.conv(
        in_channels, 64, 7, stride=2, padding=3, use_bias=False, kernel_init=conv_init, dtype=dtype, rngs=rngs
      )
    else:
      raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
    self.bn1 = _layers.BatchNorm(64, dtype=dtype, rngs=rngs)
    stages = []
    in_ch = 64
    for i, n_blocks in enumerate(stage_sizes):
      planes = 64 * 2**i
      blocks = []
      for j in range(n_blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block(in_ch, planes, stride, conv_init=conv_init, dtype=dtype, rngs=rngs))
        in_ch = planes * block.expansion
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.fc = _layers.dense(in_ch, num_classes, kernel_init=fc_init, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    check_input(x, channels=self.in_channels, size=None, name=f"ResNet ({self.stem} stem)")
    x = x.astype(self.dtype)
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    if self.stem == "imagenet":
      # nn.MaxPool2d(3, stride=2, padding=1): padding never wins the max.
      x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in self.stages:
      for blk in stage:
        x = blk(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
    return self.fc(x).astype(jnp.float32)


def resnet18(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32) -> ResNet:
  return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, stem="cifar", dtype=dtype, rngs=rngs)


def resnet34(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32) -> ResNet:
  return ResNet(BasicBlock, (3, 4, 6, 3), num_classes=num_classes, stem="cifar", dtype=dtype, rngs=rngs)


def resnet50(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32) -> ResNet:
  return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, stem="cifar", dtype=dtype, rngs=rngs)


def resnet50_imagenet(*, num_classes: int, rngs: nnx.Rngs, dtype=jnp.float32) -> ResNet:
  return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, stem="imagenet", dtype=dtype, rngs=rngs)
