"""Training-mode BatchNorm + ReLU (+ 2x2 max-pool): the hand-written VJP against autodiff of the layers.

  python -m benchmarks.bn_relu [--batch 128] [--repeats 7] [--number 5]
  python -m benchmarks.bn_relu --step [--models mnist_cnn,cifar10_cnn]

Times `jax.jit(jax.grad(...))` of `sum(out * w)` with respect to (x, scale, bias) at the activation
shapes of the paper's CNNs (batch 128): `aplx.models.bn_relu_train` (the CPU kernels' path) against
the same layers differentiated by JAX (the BatchNorm expressions, `jax.nn.relu`, `max_pool_2x2_fast`).
Every time is the minimum over `--repeats` rounds of `--number` calls; the two alternate round by round.

`--step`: the trainer's whole step (`benchmarks.train_step`'s aplx case, CPU kernels) with
`aplx.models.cpu_kernels.bn_relu` as it is and replaced by the three layers as written
(`BatchNorm.__call__`, ReLU, max-pool), alternating blocks of `--number` steps; medians and bests over
`--repeats` blocks. (An A/B of one internal kernel, so it patches the private module.)
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from aplx import cpu
import aplx.models as M
from aplx.models import cpu_kernels

# (model, layer, [H, W, C] of the convolution's output, pooled after it)
SHAPES = (
  ("mnist_cnn", "block 1", (28, 28, 32), True),
  ("mnist_cnn", "block 2", (14, 14, 64), True),
  ("cifar10_cnn", "block 1, conv 1", (32, 32, 64), False),
  ("cifar10_cnn", "block 1, conv 2", (32, 32, 64), True),
  ("cifar10_cnn", "block 3, conv 2", (8, 8, 196), True),
)


def autodiff(x, scale, bias, pool):
  """The layers as `BatchNorm.__call__` (training mode), ReLU and max-pool write them."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
  y = jax.nn.relu((x - mean) * (scale * jax.lax.rsqrt(var + 1e-5)) + bias)
  return M.max_pool_2x2_fast(y) if pool else y


def fused(x, scale, bias, pool):
  return M.bn_relu_train(x, scale.reshape(-1), bias.reshape(-1), 1e-5, pool)[0]


def _grad(fn, pool):
  return jax.jit(jax.grad(lambda x, s, b, w: jnp.sum(fn(x, s, b, pool) * w), argnums=(0, 1, 2)))


def _best(f, args, repeats, number):
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(number):
      out = f(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / number)
  return best


def _composed_relu(bn, x, *, shift=None, pool=False):
  """`cpu_kernels.bn_relu` without the fused kernel: the layers as written, differentiated by JAX."""
  y = jax.nn.relu(bn(x, shift=shift))
  return M.max_pool_2x2_fast(y) if pool else y


def step_ab(models, repeats, number):
  """The trainer's step with and without the fused kernel, alternating; prints a table."""
  from benchmarks import train_step  # pylint: disable=import-outside-toplevel

  load = os.getloadavg()
  print("| model | step | ms/step median | ms/step best | speed-up (medians) |")
  print("|---|---|---:|---:|---:|")
  for model in models:
    fused_relu, cases = cpu_kernels.bn_relu, {}
    for name, relu in (("layers as written", _composed_relu), ("bn_relu_train", fused_relu)):
      cpu_kernels.bn_relu = relu  # Traced (and so baked in) by the first call, in check().
      try:
        config = train_step.get_config(model)
        with config.unlocked():
          config.model.kwargs.kernels = "fast"  # (The default, "auto", on CPU; also elsewhere here.)
        cases[name] = train_step.AplxCase(config)
        cases[name].check()
      finally:
        cpu_kernels.bn_relu = fused_relu
    times = {k: [] for k in cases}
    for _ in range(repeats):
      for k, case in cases.items():
        t0 = time.perf_counter()
        case.run(number)
        times[k].append((time.perf_counter() - t0) / number * 1e3)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in times.items():
      ratio = f"{med['layers as written'] / med[k]:.2f}x"
      print(f"| {model} | {k} | {med[k]:.1f} | {min(v):.1f} | {ratio} |")
  print(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--number", type=int, default=5)
  parser.add_argument("--step", action="store_true", help="the whole train step, with and without")
  parser.add_argument("--models", default="mnist_cnn,cifar10_cnn", help="with --step")
  args = parser.parse_args()
  tuned = cpu.tune_allocator()  # As experiments.main; before JAX starts.
  if args.step:
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, malloc tuned: {tuned}")
    return step_ab(args.models.split(","), args.repeats, args.number)
  load = os.getloadavg()
  rows = []
  for model, layer, (h, w, c), pool in SHAPES:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, h, w, c)), jnp.float32)
    scale, bias = (jnp.asarray(rng.standard_normal((1, 1, 1, c)), jnp.float32) for _ in range(2))
    out_shape = jax.eval_shape(lambda x: autodiff(x, scale, bias, pool), x).shape
    wt = jnp.asarray(rng.standard_normal(out_shape), jnp.float32)
    fns = {"autodiff": _grad(autodiff, pool), "fused": _grad(fused, pool)}
    got = {k: f(x, scale, bias, wt) for k, f in fns.items()}  # Compiles; and checks they agree.
    for a, b in zip(got["fused"], got["autodiff"]):
      np.testing.assert_allclose(np.asarray(a).ravel(), np.asarray(b).ravel(), rtol=2e-3, atol=2e-3)
    times = {k: float("inf") for k in fns}
    for _ in range(args.repeats):
      for k, f in fns.items():
        times[k] = min(times[k], _best(f, (x, scale, bias, wt), 1, args.number))
    rows.append((model, layer, (args.batch, h, w, c), pool, times))
  print(
    f"jax {jax.__version__}, backend {jax.default_backend()}, min of {args.repeats}x{args.number} calls, "
    f"malloc tuned: {tuned}; load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f}"
  )
  print("| model | layer | x | pool | autodiff ms | bn_relu_train ms | speed-up |")
  print("|---|---|---|---|---:|---:|---:|")
  for model, layer, shape, pool, t in rows:
    print(
      f"| {model} | {layer} | {'x'.join(map(str, shape))} | {'yes' if pool else 'no'} | "
      f"{t['autodiff'] * 1e3:.2f} | {t['fused'] * 1e3:.2f} | {t['autodiff'] / t['fused']:.2f}x |"
    )


if __name__ == "__main__":
  main()
