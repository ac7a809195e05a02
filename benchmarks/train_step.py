"""Images/second of the train step that `aplx.train` runs, side by side with the authors' PyTorch step.

  python -m benchmarks.train_step                       # mnist_cnn (+ PyTorch) and cifar10_cnn
  python -m benchmarks.train_step --models=mnist_cnn --steps=20 --repeats=7
  python -m benchmarks.train_step --models=resnet34 --steps=2 --repeats=2
  python -m benchmarks.train_step --models=mnist_cnn --diagnostics --no-torch   # their cost

aplx: the step is built as `train.train_and_evaluate` builds it, from the paper config of the model's
dataset (`experiments/configs/<dataset>.py:loss=nce+rce,noise=sym,rate=0.8`, authors' fidelity):
`make_mesh`, `make_optimizer(config.optim, make_schedule(...))`, `create_model`, `create_train_state`,
`losses.get(config.loss.name, **config.loss.params)`, `jit_train_step(make_train_step(...), mesh)`, and
a batch {image, label, clean_label, id} placed with the trainer's batch sharding P('data'). The data are
random with the dataset's shapes (the speed does not depend on the values) and placed once, so the
input pipeline (benchmarks/input_pipeline.py) and the host-to-device copy are not timed. Before timing,
one step is checked: it is `aplx.train`'s step, its loss is the config's loss of the model on the batch,
and it changes the parameters. As in `experiments.main`, the process first calls
`aplx.cpu.tune_allocator()` (glibc malloc keeps XLA's per-step temporaries in the heap; the PyTorch
step in the same process gets the same allocator); `--system-malloc` leaves malloc as it is.

PyTorch (benchmarks/torch_mnist.py): the authors' ToyModel for MNIST, their NCEandRCE loss and their
`train_batch` (without its metric logging): SGD with the same config's lr, momentum, Nesterov, weight
decay and gradient clipping, CPU eager, on the same batch. benchmarks/ has no PyTorch model for the
other models, so their rows are aplx only.

Timing: each case runs `--steps` steps per block; the blocks of all cases alternate, `--repeats` times,
in one process (this machine's load changes from minute to minute). img/s is the median and the best
over blocks; the load average is printed before and after. MFLOP/img is XLA's cost analysis of the
whole lowered train step (forward, backward, update) per image.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import statistics
import time
import types

from flax import nnx
import jax
import numpy as np

from aplx import cpu, data, losses, train
from aplx.train import run_log

CONFIG_ARG = "loss=nce+rce,noise=sym,rate=0.8"
CONFIGS = {  # model -> (config module in experiments/configs, extra config argument)
  "mnist_cnn": ("mnist", ""),
  "cifar10_cnn": ("cifar10", ""),
  "resnet34": ("cifar100", ",fidelity=paper"),
  "resnet50": ("cifar100", ""),
  "resnet50_imagenet": ("webvision", ""),  # 224 px; its config's batch is 512: pass a smaller one here.
}
TORCH_MODELS = ("mnist_cnn",)  # Models with a PyTorch baseline in benchmarks/torch_mnist.py.
STEPS_PER_EPOCH = 1000  # Only the learning rate's value depends on it, not the work of a step.


def get_config(model: str):
  module, extra = CONFIGS[model]
  config = importlib.import_module(f"experiments.configs.{module}").get_config(CONFIG_ARG + extra)
  assert config.model.name == model, (config.model.name, model)
  return config


class AplxCase:
  """The train step `train.train_and_evaluate` builds for `config`, on one random batch."""

  def __init__(self, config, diagnostics: bool = False):
    spec = data.DATASETS[config.dataset]
    mesh = train.make_mesh()
    schedule = train.make_schedule(config.optim, STEPS_PER_EPOCH, config.epochs)
    tx = train.make_optimizer(config.optim, schedule)
    model = train.create_model(config, spec.num_classes)
    self.graphdef, _, self.state = train.create_train_state(config, model, tx, mesh)
    self.loss_fn = losses.get(config.loss.name, **config.loss.params)
    self.step = train.jit_train_step(train.make_train_step(self.graphdef, self.loss_fn, tx), mesh)
    num_ids = num_train(config) if diagnostics else None  # The trainer's per-example loss buffer.
    self.sums = jax.jit(functools.partial(train.zero_sums, num_ids), out_shardings=self.state.step.sharding)()
    b, rng = config.batch_size, np.random.default_rng(0)
    labels = rng.integers(0, spec.num_classes, b, dtype=np.int32)
    self.local = {
      "image": rng.standard_normal((b, *spec.image_shape), dtype=np.float32),
      "label": labels,
      "clean_label": labels,
      "id": np.arange(b, dtype=np.int32),
    }
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    self.batch = train.global_batch(self.local, batch_sharding)
    self.batch_size = b
    cost = self.step.lower(self.state, self.batch, self.sums).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.flops_per_image = float(cost.get("flops", float("nan"))) / b

  def check(self):
    """Runs one step (compiling it) and checks that it is the trainer's and trains on the config's loss."""
    fn = self.step.__wrapped__
    assert (fn.__module__, fn.__qualname__) == ("aplx.train.steps", "make_train_step.<locals>.step"), fn
    model = nnx.merge(self.graphdef, self.state.params, self.state.batch_stats, copy=True)  # Train mode.
    expected = float(self.loss_fn(model(self.batch["image"]), self.batch["label"]).mean())
    before = jax.tree.leaves(jax.device_get(self.state.params))
    self.run(1)
    loss = float(self.sums["loss"]) / int(self.sums["count"])
    np.testing.assert_allclose(loss, expected, rtol=1e-4, err_msg="step loss != config loss of the model")
    assert int(self.state.step) == 1 and int(self.sums["count"]) == self.batch_size
    after = jax.tree.leaves(jax.device_get(self.state.params))
    assert any(not np.array_equal(a, b) for a, b in zip(after, before)), "the step left the parameters"
    return loss

  def run(self, steps):
    for _ in range(steps):
      self.state, self.sums = self.step(self.state, self.batch, self.sums)
    jax.block_until_ready(self.sums)


class TorchCase:
  """The authors' PyTorch step (benchmarks/torch_mnist.py) with `config`'s settings, on `local`'s batch;
  its loss is checked against `aplx_loss_fn` on the same logits."""

  def __init__(self, config, local, aplx_loss_fn):
    import torch

    from benchmarks import torch_mnist

    torch.manual_seed(config.seed)
    k, p, o = data.DATASETS[config.dataset].num_classes, config.loss.params, config.optim
    loss_fn = functools.partial(torch_mnist.nce_and_rce, alpha=p.alpha, beta=p.beta, num_classes=k)
    self.step = torch_mnist.make_train_step(
      torch_mnist.ToyModelMNIST(k).train(),
      loss_fn,
      lr=o.lr,
      momentum=o.momentum,
      nesterov=o.nesterov,
      weight_decay=o.weight_decay,
      grad_clip=o.grad_clip,
    )
    self.x = torch.from_numpy(local["image"]).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    self.y = torch.from_numpy(local["label"]).long()
    self.batch_size = len(self.y)
    self.flops_per_image = float("nan")
    self.label = f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads"
    # Same loss as aplx's on the same logits (random, not the model's: the weights differ).
    logits = np.random.default_rng(1).standard_normal((self.batch_size, k), dtype=np.float32)
    theirs = float(loss_fn(torch.from_numpy(logits), self.y))
    ours = float(aplx_loss_fn(logits, local["label"]).mean())
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, err_msg="PyTorch loss != aplx loss")
    self.run(3)  # Warm-up.

  def run(self, steps):
    for _ in range(steps):
      self.step(self.x, self.y)


def num_train(config) -> int:
  """The training set's size (the diagnostics' per-example buffer); 1M (Clothing1M's order) for the
  datasets not listed."""
  return {"mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}.get(config.dataset, 1_000_000)


def epoch_end_ms(config) -> float:
  """Milliseconds of the diagnostics' epoch-end work (`run_log.memorisation_record`: the per-example
  losses to the host, the AUROC) over the dataset's full training set, median of 5."""
  n = num_train(config)
  rng = np.random.default_rng(0)
  noisy = rng.integers(0, 10, n)
  ds = types.SimpleNamespace(train_ids=np.arange(n), train_noisy_labels=noisy, train_clean_labels=noisy % 7)
  sums = {k: jax.numpy.asarray(n // 3) for k in ("corrupted", "corrupted_memorised", "corrupted_corrected")}
  sums |= {"uncorrupted_correct": jax.numpy.asarray(n // 2), "example_loss": jax.numpy.asarray(rng.random(n))}
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    run_log.memorisation_record(sums, ds)
    times.append(1e3 * (time.perf_counter() - t0))
  return statistics.median(times)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", default="mnist_cnn,cifar10_cnn", help=f"comma-separated, from {list(CONFIGS)}")
  ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
  ap.add_argument("--repeats", type=int, default=5, help="timed blocks per case, in alternation")
  ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
  ap.add_argument(
    "--diagnostics",
    action="store_true",
    help="also time the step with the memorisation diagnostics (config.diagnostics) and their epoch-end cost",
  )
  ap.add_argument(
    "--system-malloc",
    action="store_true",
    help="leave glibc malloc as it is (default: aplx.cpu.tune_allocator(), as experiments.main does)",
  )
  args = ap.parse_args()
  tuned = False if args.system_malloc else cpu.tune_allocator()  # Before JAX starts its backends.
  names = args.models.split(",")
  for name in names:
    if name not in CONFIGS:
      raise SystemExit(f"unknown model {name!r}; choose from {list(CONFIGS)}")

  load_before = os.getloadavg()
  cases = []  # (model, label, case)
  for name in names:
    config = get_config(name)
    print(f"compiling and checking {name} (config {CONFIGS[name][0]}:{CONFIG_ARG}{CONFIGS[name][1]})...")
    case = AplxCase(config)
    print(f"  one step: loss {case.check():.4f} = {config.loss.name} of the model; parameters changed")
    platform = f"{jax.device_count()} {jax.devices()[0].platform}"
    cases.append((name, f"aplx (jax {jax.__version__}, {platform})", case))
    if args.diagnostics:
      with_diagnostics = AplxCase(config, diagnostics=True)
      with_diagnostics.check()
      cases.append((name, "aplx + diagnostics (config.diagnostics)", with_diagnostics))
      n, ms = num_train(config), epoch_end_ms(config)
      print(f"  epoch-end diagnostics (memorisation_record) over {n:,} examples: {ms:.1f} ms")
    if args.no_torch or name not in TORCH_MODELS:
      continue
    try:
      torch_case = TorchCase(config, case.local, case.loss_fn)
    except ImportError as e:
      print(f"  PyTorch baseline skipped ({e}); install it with: pip install torch==2.13.0")
      continue
    cases.append((name, torch_case.label, torch_case))

  seconds = [[] for _ in cases]  # Per step, one entry per block.
  for rep in range(args.repeats):  # Alternate cases so that load changes hit all of them alike.
    for i, (_, _, case) in enumerate(cases):
      t0 = time.perf_counter()
      case.run(args.steps)
      seconds[i].append((time.perf_counter() - t0) / args.steps)
    print(f"  round {rep + 1}/{args.repeats} done", flush=True)
  load_after = os.getloadavg()

  print(
    f"\n{args.steps} steps x {args.repeats} blocks per case, configs {CONFIG_ARG}; "
    f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, "
    f"after {'/'.join(f'{x:.1f}' for x in load_after)}; malloc tuned (aplx.cpu.tune_allocator): {tuned}; "
    f"XLA:CPU compiler options: {cpu.compiler_options()}"
  )
  columns = ("batch", "img/s med", "best", "ms/step", "MFLOP/img")
  print(f"{'model':12s} {'step':40s} " + " ".join(f"{c:>{w}s}" for c, w in zip(columns, (5, 9, 7, 8, 9))))
  ips = {}
  for (name, label, case), secs in zip(cases, seconds):
    med, best = case.batch_size / statistics.median(secs), case.batch_size / min(secs)
    ips[name, label.split()[0] + ("+" if "diagnostics" in label else "")] = (med, best)
    mflop = f"{case.flops_per_image / 1e6:9.1f}" if np.isfinite(case.flops_per_image) else ""
    print(
      f"{name:12s} {label:40s} {case.batch_size:5d} {med:9,.0f} {best:7,.0f} "
      f"{1e3 * statistics.median(secs):8.1f} {mflop:>9s}"
    )
  for name in names:
    if (name, "aplx+") in ips:
      (am, ab), (dm, db) = ips[name, "aplx"], ips[name, "aplx+"]
      print(f"{name:12s} with / without diagnostics: {dm / am:.3f}x (medians), {db / ab:.3f}x (best)")
    if (name, "PyTorch") in ips:
      (am, ab), (tm, tb) = ips[name, "aplx"], ips[name, "PyTorch"]
      print(f"{name:12s} aplx / PyTorch: {am / tm:.2f}x (medians), {ab / tb:.2f}x (best)")
    elif not args.no_torch and name not in TORCH_MODELS:
      print(f"{name:12s} aplx only: benchmarks/ has no PyTorch version of this model")


if __name__ == "__main__":
  main()
