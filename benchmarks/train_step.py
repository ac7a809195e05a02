"""Images/second of the jitted train step, the loss's share of it, model FLOPs, and PyTorch side by side.

  python benchmarks/train_step.py                      # mnist_cnn (fast, reference), cifar10_cnn,
                                                       # PyTorch MNIST; ~2-3 min on 2 loaded cores
  python benchmarks/train_step.py --models=mnist_cnn,cifar10_cnn,resnet34 --big-steps=2  # ~8 min
  python benchmarks/train_step.py --models=mnist_cnn --steps=20 --repeats=5
  python benchmarks/train_step.py --no-torch

The step is the trainer's: ``nnx.merge`` inside ``jax.jit``, forward in training mode, mean loss,
``jax.value_and_grad``, optax SGD (momentum 0.9, Nesterov) update, new BatchNorm statistics out;
batch 128, random data (throughput does not depend on the values). The loss is
``aplx.losses.get("nce+rce")`` when aplx.losses is importable, else softmax cross-entropy.

Columns:
  img/s       best over repeats of (batch * steps / wall time); variants are timed in alternation in one
              process, because this machine's load changes from minute to minute.
  loss %      time of the loss's forward+backward alone (jitted, on logits of the same shape) as a
              share of the step time.
  MFLOP/img   forward FLOPs per image from XLA's cost analysis of the compiled forward pass (a train
              step costs about 3x this).
  GFLOP/s     3 x forward FLOPs x img/s: achieved model arithmetic rate.
"""

from __future__ import annotations

import argparse
import functools
import time

from flax import nnx
import jax
import jax.numpy as jnp
import optax

import aplx.models

INPUT_SHAPES = {
  "mnist_cnn": (28, 28, 1),
  "cifar10_cnn": (32, 32, 3),
  "resnet18": (32, 32, 3),
  "resnet34": (32, 32, 3),
  "resnet50": (32, 32, 3),
  "resnet50_imagenet": (224, 224, 3),
}


def make_loss():
  try:
    import aplx.losses

    fn = aplx.losses.get("nce+rce", alpha=1.0, beta=1.0)
    return "nce+rce", fn
  except Exception:  # losses not available yet: plain cross-entropy
    return "ce", optax.softmax_cross_entropy_with_integer_labels


def make_step(model, loss_fn, tx):
  """The trainer's step pattern: split once, merge inside jit, updated batch stats out."""
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def objective(params, batch_stats, x, y):
    m = nnx.merge(graphdef, params, batch_stats, copy=True)
    logits = m(x)
    return loss_fn(logits, y).mean(), nnx.state(m, nnx.BatchStat)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def step(params, batch_stats, opt_state, x, y):
    (loss, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(params, batch_stats, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  return step, [params, batch_stats, tx.init(params)]


class JaxCase:
  def __init__(self, name, label, loss_fn, batch, kwargs):
    self.label = label
    model = aplx.models.get(name, num_classes=10, rngs=nnx.Rngs(0), **kwargs)
    self.step, self.state = make_step(model, loss_fn, optax.sgd(0.01, momentum=0.9, nesterov=True))
    self.x = jax.random.normal(jax.random.key(1), (batch, *INPUT_SHAPES[name]), jnp.float32)
    self.y = jax.random.randint(jax.random.key(2), (batch,), 0, 10)
    self.batch = batch
    # Forward FLOPs from XLA's cost analysis of the compiled forward pass.
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    fwd = jax.jit(lambda p, s, x: nnx.merge(graphdef, p, s, copy=True)(x))
    cost = fwd.lower(params, stats, self.x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.flops_per_image = float(cost.get("flops", float("nan"))) / batch
    # Loss fwd+bwd alone on logits of the step's shape.
    logits = jax.random.normal(jax.random.key(3), (batch, 10))
    lgrad = jax.jit(jax.value_and_grad(lambda z, y: loss_fn(z, y).mean()))
    self.loss_call = lambda: lgrad(logits, self.y)
    self.run(1)

  def run(self, steps):
    p, s, o = self.state
    for _ in range(steps):
      p, s, o, loss = self.step(p, s, o, self.x, self.y)
    loss.block_until_ready()
    self.state = [p, s, o]

  def time_loss(self, steps):
    jax.block_until_ready(self.loss_call())
    t0 = time.perf_counter()
    for _ in range(steps):
      out = self.loss_call()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


class TorchCase:
  label = "mnist_cnn  PyTorch 2 CPU eager"

  def __init__(self, batch):
    from benchmarks_torch_mnist import ToyModelMNIST  # noqa: I001 (see _import_torch_bench)
    import torch

    self.torch = torch
    torch.manual_seed(0)
    self.model = ToyModelMNIST().train()
    self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    self.loss = torch.nn.CrossEntropyLoss()
    self.x = torch.randn(batch, 1, 28, 28)
    self.y = torch.randint(0, 10, (batch,))
    self.batch = batch
    self.label = f"mnist_cnn  PyTorch {torch.__version__} CPU eager"
    self.run(2)

  def run(self, steps):
    for _ in range(steps):
      self.opt.zero_grad(set_to_none=True)
      self.loss(self.model(self.x), self.y).backward()
      self.opt.step()


def _import_torch_bench():
  """Loads benchmarks/torch_mnist.py as module `benchmarks_torch_mnist` (benchmarks/ is no package)."""
  import importlib.util
  import pathlib
  import sys

  path = pathlib.Path(__file__).with_name("torch_mnist.py")
  spec = importlib.util.spec_from_file_location("benchmarks_torch_mnist", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules["benchmarks_torch_mnist"] = module
  spec.loader.exec_module(module)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument(
    "--models", default="mnist_cnn,cifar10_cnn", help=f"comma-separated, from {sorted(INPUT_SHAPES)}"
  )
  ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
  ap.add_argument("--repeats", type=int, default=3, help="timed blocks per case (best is kept)")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--big-steps", type=int, default=1, help="steps per timed block for ResNets")
  ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  args = ap.parse_args()

  loss_name, loss_fn = make_loss()
  cases = []
  for name in args.models.split(","):
    if name not in INPUT_SHAPES:
      raise SystemExit(f"unknown model {name!r}; choose from {sorted(INPUT_SHAPES)}")
    variants = (
      [("fast", {"kernels": "fast"}), ("reference", {"kernels": "reference"})]
      if name in ("mnist_cnn", "cifar10_cnn")
      else [("", {})]
    )
    if name == "cifar10_cnn":
      variants = variants[:1]
    for tag, kw in variants:
      print(f"compiling {name} {tag}...", flush=True)
      case = JaxCase(name, f"{name:10s} {tag:9s} jax", loss_fn, args.batch, kw)
      case.steps = args.steps if name in ("mnist_cnn", "cifar10_cnn") else args.big_steps
      cases.append(case)
  if not args.no_torch and "mnist_cnn" in args.models.split(","):
    try:
      _import_torch_bench()
      tc = TorchCase(args.batch)
      tc.steps = args.steps
      cases.append(tc)
    except ImportError as e:
      print(f"PyTorch baseline skipped ({e}); install it with: pip install torch==2.13.0")

  best = {id(c): float("inf") for c in cases}
  for rep in range(args.repeats):  # alternate cases so that load changes hit all of them alike
    for c in cases:
      t0 = time.perf_counter()
      c.run(c.steps)
      best[id(c)] = min(best[id(c)], (time.perf_counter() - t0) / c.steps)
    print(f"  round {rep + 1}/{args.repeats} done", flush=True)

  print(
    f"\nbatch {args.batch}, loss {loss_name} (PyTorch: cross-entropy), jax {jax.__version__}, "
    f"{jax.devices()[0].platform} x{jax.device_count()}"
  )
  print(f"{'case':36s} {'img/s':>8s} {'ms/step':>8s} {'loss %':>7s} {'MFLOP/img':>10s} {'GFLOP/s':>8s}")
  torch_ips = None
  for c in cases:
    t = best[id(c)]
    ips = c.batch / t
    if isinstance(c, TorchCase):
      torch_ips = ips
      print(f"{c.label:36s} {ips:8,.0f} {t * 1e3:8.1f} {'':>7s} {'':>10s} {'':>8s}")
      continue
    loss_share = min(c.time_loss(20) for _ in range(3)) / t
    mflop = c.flops_per_image / 1e6
    print(
      f"{c.label:36s} {ips:8,.0f} {t * 1e3:8.1f} {100 * loss_share:6.2f}% {mflop:10.1f} "
      f"{3 * c.flops_per_image * ips / 1e9:8.1f}"
    )
  if torch_ips:
    for c in cases:
      if not isinstance(c, TorchCase) and c.label.startswith("mnist_cnn"):
        print(f"{c.label.strip()} / PyTorch: {c.batch / best[id(c)] / torch_ips:.2f}x")


if __name__ == "__main__":
  main()
