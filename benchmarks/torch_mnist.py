"""The authors' MNIST ToyModel, NCE+RCE loss and train step in PyTorch (CPU), the baseline for
benchmarks/train_step.py.

Written from HanxunH/Active-Passive-Losses: `models.py` (ToyModel, type "MNIST"), `loss.py` (NCEandRCE)
and `trainer.py` (`Trainer.train_batch`); docs/models.md describes the architecture. Needs the optional
``[bench]`` extra (``pip install torch==2.13.0``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
import torch.nn.functional as F


class ToyModelMNIST(nn.Module):
  """[conv3x3 32 + BN + ReLU, maxpool 2] [conv3x3 64 + BN + ReLU, maxpool 2], FC 128 + BN + ReLU, FC K."""

  def __init__(self, num_classes: int = 10):
    super().__init__()

    def conv_bn_relu(cin, cout):
      return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    self.features = nn.Sequential(
      conv_bn_relu(1, 32), nn.MaxPool2d(2, 2), conv_bn_relu(32, 64), nn.MaxPool2d(2, 2)
    )
    self.fc1 = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.BatchNorm1d(128), nn.ReLU())
    self.fc2 = nn.Linear(128, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
      elif isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)

  def forward(self, x):
    x = self.features(x).reshape(x.shape[0], -1)
    return self.fc2(self.fc1(x))


def nce_and_rce(
  logits: torch.Tensor, labels: torch.Tensor, *, alpha: float, beta: float, num_classes: int
) -> torch.Tensor:
  """The authors' `NCEandRCE`, batch mean: alpha * NCE + beta * RCE.

  NCE = log p_y / sum_k log p_k; RCE = -sum_k clamp(p_k, 1e-7, 1) log(clamp(onehot_k, 1e-4, 1)).
  """
  log_p = F.log_softmax(logits, dim=1)
  one_hot = F.one_hot(labels, num_classes).float()
  nce = (one_hot * log_p).sum(dim=1) / log_p.sum(dim=1)
  p = F.softmax(logits, dim=1).clamp(min=1e-7, max=1.0)
  rce = -(p * one_hot.clamp(min=1e-4, max=1.0).log()).sum(dim=1)
  return alpha * nce.mean() + beta * rce.mean()


def make_train_step(
  model: nn.Module,
  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
  *,
  lr: float,
  momentum: float,
  nesterov: bool,
  weight_decay: float,
  grad_clip: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
  """The authors' `Trainer.train_batch` without its metric logging: forward, loss, backward,
  `clip_grad_norm_(grad_clip)`, `SGD(lr, momentum, nesterov, weight_decay)` step. Returns `step(x, y)`."""
  opt = torch.optim.SGD(
    model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
  )

  def step(x, y):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    if grad_clip:
      nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss

  return step
