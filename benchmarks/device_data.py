"""The trainer's two ways of feeding an in-RAM dataset, side by side: batches from the host (one jitted
step per batch) against `config.device_data` (the training set on the device, batches made there, the
steps between two log lines in one `lax.scan` call). Printed as a table, with the host-side costs of
one step.

  python -m benchmarks.device_data                        # mnist (real) and cifar10 (random data)
  python -m benchmarks.device_data --datasets mnist --steps 100 --repeats 5

Both loops are the trainer's (`aplx.train`): the paper config of the dataset (loss nce+rce, sym 0.8),
`make_train_step` + `jit_train_step` fed by `data.train_batches` through `global_batch` with at most
`train.MAX_STEPS_AHEAD` steps in flight, against `make_multi_step` + `jit_multi_step` fed by
`aplx.data.device.chunk`, `--steps` steps per call (the configs' log_every_steps is 100). The two
start from the same state, and after the first block their parameters are checked to be bitwise
equal. mnist is the real dataset (prepared offline from $APLX_MNIST_DIR if needed); cifar10 is random
uint8 data of CIFAR-10's size with its augmentation (crop + flip), as CIFAR is not available here
(MNIST is found as `experiments` finds it: $APLX_MNIST_DIR, default ../shared/data/mnist).
Blocks of the two alternate (`--repeats`), in one process; img/s is the median over blocks.

Host-side costs of one step, timed alone: a jitted call's dispatch (a no-op on a scalar), placing one
batch on the device (`global_batch`) and making it (`next(train_batches)`). They are what the
device path saves per step, and what a fast accelerator would otherwise wait on (docs/training.md).
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import os
import statistics
import time

import jax
import numpy as np

from aplx import cpu, data, losses, train
from aplx.data import device
from benchmarks.input_pipeline import cifar_like

CONFIG_ARG = "loss=nce+rce,noise=sym,rate=0.8"


class Loops:
  """The host-fed and the device-fed training loops of `aplx.train`, for one dataset's paper config."""

  def __init__(self, name: str, steps: int):
    self.config = importlib.import_module(f"experiments.configs.{name}").get_config(CONFIG_ARG)
    if name == "mnist":
      self.ds = data.load_dataset("mnist", noise="sym", rate=0.8)
    else:
      self.ds = cifar_like("crop_flip")
    c, self.steps = self.config, steps
    self.mesh = train.make_mesh()
    spe = data.steps_per_epoch(self.ds, c.batch_size)
    tx = train.make_optimizer(c.optim, train.make_schedule(c.optim, spe, c.epochs))
    graphdef, _, state = train.create_train_state(
      c, train.create_model(c, self.ds.num_classes), tx, self.mesh
    )
    self.state = {"host": state, "device": jax.tree.map(lambda x: x.copy(), state)}
    self.sums = {k: jax.jit(train.zero_sums, out_shardings=state.step.sharding)() for k in self.state}
    step_fn = train.make_train_step(graphdef, losses.get(c.loss.name, **c.loss.params), tx)
    self.train_step = train.jit_train_step(step_fn, self.mesh)
    self.batch_args = {"global_batch_size": c.batch_size, "seed": c.seed, "augment": c.augment}
    self.batches = data.train_batches(self.ds, **self.batch_args)
    self.batch_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
    self.on_device = device.put(self.ds, self.mesh)
    make_batch = functools.partial(
      device.make_batch, kind=self.ds.augment, mean=self.ds.mean, std=self.ds.std, augment=c.augment
    )
    self.multi_step = train.jit_multi_step(train.make_multi_step(step_fn, make_batch), self.mesh)
    self.chunk_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(None, "data"))
    self.next_step = {"host": 0, "device": 0}

  def run(self, path: str) -> float:
    """`--steps` steps on `path`; returns seconds."""
    state, sums, start = self.state[path], self.sums[path], self.next_step[path]
    t0 = time.perf_counter()
    if path == "host":
      in_flight = collections.deque()
      for _ in range(self.steps):
        state, sums = self.train_step(
          state, train.global_batch(next(self.batches), self.batch_sharding), sums
        )
        in_flight.append(state.step + 0)
        if len(in_flight) > train.MAX_STEPS_AHEAD:
          in_flight.popleft().block_until_ready()
    else:
      chunk = device.chunk(self.ds, start, self.steps, **self.batch_args)
      state, sums = self.multi_step(
        state, self.on_device, train.global_batch(chunk, self.chunk_sharding), sums
      )
    jax.block_until_ready(sums)
    self.state[path], self.sums[path], self.next_step[path] = state, sums, start + self.steps
    return time.perf_counter() - t0

  def host_costs(self, n: int = 200) -> dict[str, float]:
    """Microseconds per step of the host path's pieces, each timed alone."""
    noop = jax.jit(lambda x: x + 1)
    x = jax.block_until_ready(noop(np.float32(0)))
    out = {}
    t0 = time.perf_counter()
    for _ in range(n):
      x = noop(x)
    jax.block_until_ready(x)
    out["dispatch"] = (time.perf_counter() - t0) / n
    local = next(self.batches)
    t0 = time.perf_counter()
    for _ in range(n):
      jax.block_until_ready(train.global_batch(local, self.batch_sharding))
    out["place batch"] = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
      next(self.batches)
    out["make batch"] = (time.perf_counter() - t0) / n
    return {k: 1e6 * v for k, v in out.items()}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--datasets", default="mnist,cifar10", help="comma-separated: mnist, cifar10")
  ap.add_argument("--steps", type=int, default=100, help="steps per block (one device call)")
  ap.add_argument("--repeats", type=int, default=5, help="blocks per path, alternating")
  args = ap.parse_args()
  tuned = cpu.tune_allocator()  # As experiments.main; before JAX starts its backends.
  load_before = os.getloadavg()
  rows = []
  for name in args.datasets.split(","):
    loops = Loops(name, args.steps)
    print(f"{name}: compiling both paths ({args.steps} steps per device call)...", flush=True)
    for path in ("host", "device"):
      loops.run(path)  # Compiles; then the two must have trained identically.
    same = all(
      np.array_equal(a, b)
      for a, b in zip(
        jax.tree.leaves(jax.device_get(loops.state["host"].params)),
        jax.tree.leaves(jax.device_get(loops.state["device"].params)),
      )
    )
    seconds = {"host": [], "device": []}
    for rep in range(args.repeats):
      for path in seconds:
        seconds[path].append(loops.run(path))
      print(f"  round {rep + 1}/{args.repeats} done", flush=True)
    b = loops.config.batch_size
    rate = {p: b * args.steps / statistics.median(s) for p, s in seconds.items()}
    rows.append((name, b, rate, same, loops.host_costs()))
  load_after = os.getloadavg()
  print(
    f"\njax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s); "
    f"{args.steps} steps per block, {args.repeats} blocks per path, alternating; malloc tuned: {tuned}; "
    f"load average before {'/'.join(f'{x:.1f}' for x in load_before)}, "
    f"after {'/'.join(f'{x:.1f}' for x in load_after)}"
  )
  print("| data | batch | host path img/s | device_data img/s | device / host | same parameters |")
  print("|---|---:|---:|---:|---:|---|")
  for name, b, rate, same, _ in rows:
    ratio = rate["device"] / rate["host"]
    print(f"| {name} | {b} | {rate['host']:,.0f} | {rate['device']:,.0f} | {ratio:.2f}x | {same} |")
  print("\nHost-side cost of one step of the host path (microseconds, timed alone):")
  print("| data | jitted call dispatch | place batch (global_batch) | make batch (train_batches) |")
  print("|---|---:|---:|---:|")
  for name, _, _, _, costs in rows:
    print(f"| {name} | {costs['dispatch']:.0f} | {costs['place batch']:.0f} | {costs['make batch']:.0f} |")


if __name__ == "__main__":
  main()
