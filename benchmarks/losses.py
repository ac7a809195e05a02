"""Forward + backward time of every aplx loss, jitted, relative to optax's integer-label CE.

    .venv/bin/python benchmarks/losses.py [--batch 4096] [--ks 10,100,1000] [--repeats 7]

Each entry times `jax.jit(jax.value_and_grad(lambda z: loss_fn(z, y).mean()))` on float32 logits
[batch, K]. Every timing is the minimum over `--repeats` rounds of `--number` calls (robust to a
shared, noisy machine); all ratios in one table come from the same run. Goals (issue 2): NCE-based
<= 1.5x CE, NGCE-based <= 2.5x, NFL-based <= 4x.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aplx import cpu
import aplx.losses as L


def min_time(fn, z, y, repeats, number):
  """Seconds per call of `fn(z, y)`: min over `repeats` rounds of `number` calls, after a warm-up call."""
  out = fn(z, y)
  jax.block_until_ready(out)
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(number):
      out = fn(z, y)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / number)
  return best


def fwd_bwd(loss_fn):
  """`loss_fn`'s mean over the batch and its gradient in the logits, jitted: fn(logits, labels)."""
  kw = {"key": jax.random.key(0)} if getattr(loss_fn, "needs_key", False) else {}
  return jax.jit(jax.value_and_grad(lambda z, y: loss_fn(z, y, **kw).mean()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--ks", default="10,100,1000")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--number", type=int, default=5)
  parser.add_argument("--only", default="", help="comma-separated loss names (default: all)")
  parser.add_argument("--system-malloc", action="store_true", help="skip aplx.cpu.tune_allocator()")
  args = parser.parse_args()
  tuned = False if args.system_malloc else cpu.tune_allocator()  # As experiments.main; before JAX starts.
  ks = [int(k) for k in args.ks.split(",")]
  names = args.only.split(",") if args.only else list(L.names())

  baseline = fwd_bwd(optax.losses.softmax_cross_entropy_with_integer_labels)
  ratios = {n: [] for n in names}
  base_ms = []
  for k in ks:
    rng = np.random.default_rng(k)
    z = jnp.asarray(rng.standard_normal((args.batch, k)) * 3, jnp.float32)
    y = jnp.asarray(rng.integers(0, k, args.batch), jnp.int32)
    fns = {n: fwd_bwd(L.get(n)) for n in names}
    for f in fns.values():  # compile all before timing anything
      jax.block_until_ready(f(z, y))
    # Interleave: baseline, then each loss, then baseline again; each ratio uses the smaller
    # baseline of the two neighbours to damp drift from other processes on the machine.
    t_base = min_time(baseline, z, y, args.repeats, args.number)
    for n, f in fns.items():
      t = min_time(f, z, y, args.repeats, args.number)
      t_base = min(t_base, min_time(baseline, z, y, 2, args.number))
      ratios[n].append(t / t_base)
    base_ms.append(t_base * 1e3)

  print(
    f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}, "
    f"batch {args.batch}, min of {args.repeats}x{args.number} calls, malloc tuned: {tuned}"
  )
  header = "| loss | kind | " + " | ".join(f"K={k}" for k in ks) + " |"
  print(header)
  print("|" + "---|" * (len(ks) + 2))
  print("| optax CE (ms) | | " + " | ".join(f"{t:.3f} ms" for t in base_ms) + " |")
  for n in names:
    print(f"| {n} | {L.info(n).kind} | " + " | ".join(f"{r:.2f}x" for r in ratios[n]) + " |")


if __name__ == "__main__":
  main()
