"""The paper's networks as Flax NNX modules, by name.

  model = aplx.models.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0))
  logits = model(images)            # images: float32 [B, H, W, C] -> logits float32 [B, num_classes]
  model.train(); model.eval()       # BatchNorm batch statistics / running averages

State: parameters are ``nnx.Param`` (float32), BatchNorm running statistics ``nnx.BatchStat``; there is
no other state, so ``nnx.split(model, nnx.Param, nnx.BatchStat)`` gives (graphdef, params, batch_stats).
Architectures, init and kernel choices: docs/models.md.
"""

from __future__ import annotations

from typing import Callable

from aplx import _deps

with _deps.extra("train", __name__):
  from flax import nnx

from aplx.models import _cpu_kernels as cpu_kernels  # The CPU kernels' module (kernels="fast"/"auto").
from aplx.models._cnn import ToyCNN, cifar10_cnn, mnist_cnn
from aplx.models._cpu_kernels import bn_relu_train, max_pool_2x2_fast
from aplx.models._layers import BatchNorm, max_pool_2x2_reference
from aplx.models._resnet import ResNet, resnet18, resnet34, resnet50, resnet50_imagenet

_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
  "mnist_cnn": mnist_cnn,
  "cifar10_cnn": cifar10_cnn,
  "resnet18": resnet18,
  "resnet34": resnet34,
  "resnet50": resnet50,
  "resnet50_imagenet": resnet50_imagenet,
}


def names() -> list[str]:
  """The registered model names."""
  return sorted(_REGISTRY)


def get(name: str, *, num_classes: int, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """Builds the model registered as ``name``.

  Args:
    name: one of `names()`.
    num_classes: number of output logits K.
    rngs: ``nnx.Rngs`` for parameter init (uses the ``params`` stream).
    **kwargs: model options: ``dtype`` (compute dtype, default float32; params stay float32) for all
      models; ``kernels`` for ``mnist_cnn`` and ``cifar10_cnn``: "auto" (default; "fast" on the CPU
      backend, "reference" on GPU/TPU), "fast" (the CPU kernels) or "reference" (the plain layers).

  Returns:
    An ``nnx.Module`` in training mode mapping float [B, H, W, C] to float32 logits [B, num_classes].
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; available models: {', '.join(names())}")
  if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  return _REGISTRY[name](num_classes=num_classes, rngs=rngs, **kwargs)


__all__ = [
  "BatchNorm",
  "ResNet",
  "ToyCNN",
  "bn_relu_train",
  "cifar10_cnn",
  "cpu_kernels",
  "get",
  "max_pool_2x2_fast",
  "max_pool_2x2_reference",
  "mnist_cnn",
  "names",
  "resnet18",
  "resnet34",
  "resnet50",
  "resnet50_imagenet",
]
