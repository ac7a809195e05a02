"""The authors' MNIST ToyModel and train step in PyTorch (CPU), the baseline for benchmarks/train_step.py.

Written from the architecture in docs/models.md (same layers, init and optimiser as aplx's
"mnist_cnn" step); needs the optional ``[bench]`` extra (``pip install torch==2.13.0``).
"""

from __future__ import annotations

import time

import torch
from torch import nn


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


def images_per_second(
  batch_size: int = 128, steps: int = 20, repeats: int = 3, threads: int | None = None, seed: int = 0
) -> float:
  """Best-of-`repeats` throughput of forward + CE loss + backward + SGD(nesterov) step, eager mode."""
  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = ToyModelMNIST()
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
  loss_fn = nn.CrossEntropyLoss()
  x = torch.randn(batch_size, 1, 28, 28)
  y = torch.randint(0, 10, (batch_size,))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss

  for _ in range(3):
    step()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      step()
    best = min(best, (time.perf_counter() - t0) / steps)
  return batch_size / best


if __name__ == "__main__":
  print(
    f"torch {torch.__version__}, {torch.get_num_threads()} threads: "
    f"{images_per_second():,.0f} img/s (MNIST ToyModel, batch 128)"
  )
