"""One check of aplx on whatever backend JAX finds (GPU, TPU or CPU), printed as one markdown report.

  python -m benchmarks.accelerator                  # everything; budgeted for ~6 min on one GPU
  python -m benchmarks.accelerator --smoke          # toy sizes on a CPU, the same report
  python -m benchmarks.accelerator --models=mnist_cnn --dtypes=float32 --out=report.md

- Device: platform, device kind and count, jax / jaxlib (and GPU/TPU plugin) versions, load average.
- Tests: a few fast selections of tests/ (`TESTS`) on this backend, pytest in a subprocess; a failure
  is reported, not raised.
- Train step: img/s of `aplx.train`'s step for the paper config of the model's dataset
  (`benchmarks.train_step.get_config`) at a given batch, compute dtype and, on the CPU backend only,
  kernels ("fast": aplx's CPU kernels, "reference": the stock layers that accelerators run). Feeds:
  "placed" (one batch placed once: the step alone) and, for the two CNNs, "host" (`data.train_batches`
  + `global_batch` per step, as the trainer) and "device_data" (`make_multi_step` + `jit_multi_step`
  over `aplx.data.device`, one call per timed block). Random data of the dataset's shapes. After
  warm-up (compile excluded), blocks of k steps each end in `block_until_ready`, k sized for about
  `--seconds` per row; img/s is the median over blocks. Peak memory: device 0's
  `memory_stats()["peak_bytes_in_use"]`, a high-water mark of the process ("<=": the row did not raise
  it), "n/a" where the backend keeps no stats (CPU); rows run from small to large (bfloat16 first).
- Losses: jitted forward + backward against optax's softmax CE at K = 1000 (benchmarks/losses.py).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aplx import cpu, data, losses, train
from aplx.data import device, pipeline, preprocess
from benchmarks import losses as loss_bench
from benchmarks import train_step as step_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = {"mnist_cnn": 128, "cifar10_cnn": 128, "resnet34": 128, "resnet50_imagenet": 64}  # -> batch
CNNS = ("mnist_cnn", "cifar10_cnn")  # Models with a `kernels` option and an in-RAM dataset.
LOSSES = ("nce+rce", "nce+mae", "nfl+rce", "ngce+rce", "gce", "sce")
TESTS = (  # (area, pytest arguments): ~5 min on the 2-core VM at load ~10; aimed at < 2 min on a GPU host.
  ("losses", "tests/test_losses_reference.py -k with_jit and value_and_grad and (get or nce__ or gce_q)"),
  ("losses", "tests/test_losses_properties.py -k limit_identities or (low_precision and nce)"),
  ("models", "tests/test_models.py -k output_shapes or fast_kernels_equal or bfloat16 or train_and_eval"),
  ("train", "tests/test_train.py -k compiles_once or nonfinite or optimizer_matches"),
  ("device data", "tests/test_device_data.py -k device_batches_are_the_host_batches"),
)
SMOKE_TESTS = (("models", "tests/test_models.py -k test_registry"),)


def pytest_row(what: str, selection: str, timeout: float) -> str:
  """Runs one selection (`file -k expression`) with pytest in a subprocess; one table row."""
  path, _, expr = selection.partition(" -k ")
  cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", path, "-k", expr]
  t0 = time.perf_counter()
  try:
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1))
    text, code = out.stdout + out.stderr, str(out.returncode)
  except subprocess.TimeoutExpired:
    text, code = "", f"timeout {timeout:.0f} s"
  lines = text.strip().splitlines()
  summary = next((x for x in reversed(lines) if re.search(r" in [\d.]+s", x)), "")
  counts = {w.rstrip("s"): int(n) for n, w in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
  first = next((x for x in lines if x.startswith(("FAILED", "ERROR"))), "")[:100].replace("|", "/")
  failed = counts.get("failed", 0) + counts.get("error", 0)
  secs = time.perf_counter() - t0
  return (
    f"| {what} | `{selection}` | {counts.get('passed', 0)} | {failed} | {counts.get('skipped', 0)} "
    f"| {code} | {secs:.0f} | {first} |"
  )


def random_dataset(name: str, n: int) -> pipeline.Dataset:
  """`name`'s in-RAM training set at its shapes, normalisation and augmentation, random uint8 images."""
  spec, rng = data.DATASETS[name], np.random.default_rng(0)
  labels = rng.integers(0, spec.num_classes, n).astype(np.int32)
  mean, std = preprocess.NORMALIZATION[spec.normalization]
  return pipeline.Dataset(
    name=f"random/{name}",
    num_classes=spec.num_classes,
    image_shape=spec.image_shape,
    train_images=rng.integers(0, 256, (n, *spec.image_shape), dtype=np.uint8),
    train_ids=np.arange(n, dtype=np.int32),
    train_clean_labels=labels,
    train_noisy_labels=labels,
    test_images=np.zeros((0, *spec.image_shape), np.uint8),
    test_labels=np.zeros(0, np.int32),
    mean=mean,
    std=std,
    augment=spec.augment,
    noise={"kind": "none"},
  )


class Case:
  """`aplx.train`'s step for `model`'s paper config at `batch`, `dtype` and `kernels`; `run(feed, k)`."""

  def __init__(self, model: str, batch: int, dtype: str, kernels: str | None, n_train: int):
    c = self.config = step_bench.get_config(model)
    c.batch_size, c.model.kwargs.dtype = batch, dtype
    if kernels:
      c.model.kwargs.kernels = kernels
    spec = data.DATASETS[c.dataset]
    mesh = train.make_mesh()
    tx = train.make_optimizer(c.optim, train.make_schedule(c.optim, step_bench.STEPS_PER_EPOCH, c.epochs))
    graphdef, _, self.state = train.create_train_state(c, train.create_model(c, spec.num_classes), tx, mesh)
    step_fn = train.make_train_step(graphdef, losses.get(c.loss.name, **c.loss.params), tx)
    self.step = train.jit_train_step(step_fn, mesh)
    self.sums = jax.jit(train.zero_sums, out_shardings=self.state.step.sharding)()
    self.sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, spec.num_classes, batch, dtype=np.int32)
    images = rng.standard_normal((batch, *spec.image_shape), dtype=np.float32)
    local = {"image": images, "label": labels, "clean_label": labels, "id": np.arange(batch, dtype=np.int32)}
    self.batch = train.global_batch(local, self.sharding)
    if model in CNNS:  # The host pipeline and device_data, on random data of the dataset's size.
      self.ds, self.next_step = random_dataset(c.dataset, n_train), 0
      self.batch_args = {"global_batch_size": batch, "seed": c.seed, "augment": c.augment}
      self.batches = data.train_batches(self.ds, **self.batch_args)
      self.on_device = device.put(self.ds, mesh)
      make_batch = functools.partial(
        device.make_batch, kind=self.ds.augment, mean=self.ds.mean, std=self.ds.std, augment=c.augment
      )
      self.multi_step = train.jit_multi_step(train.make_multi_step(step_fn, make_batch), mesh)
      self.chunk_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))

  def run(self, feed: str, k: int) -> None:
    """k steps fed by `feed` ("placed", "host" or "device_data"), then waits for the device."""
    if feed == "placed":
      for _ in range(k):
        self.state, self.sums = self.step(self.state, self.batch, self.sums)
    elif feed == "host":  # As the trainer: at most MAX_STEPS_AHEAD steps in flight.
      in_flight = []
      for _ in range(k):
        batch = train.global_batch(next(self.batches), self.sharding)
        self.state, self.sums = self.step(self.state, batch, self.sums)
        in_flight.append(self.state.step + 0)
        if len(in_flight) > train.MAX_STEPS_AHEAD:
          in_flight.pop(0).block_until_ready()
    else:
      chunk = device.chunk(self.ds, self.next_step, k, **self.batch_args)
      chunk = train.global_batch(chunk, self.chunk_sharding)
      self.state, self.sums = self.multi_step(self.state, self.on_device, chunk, self.sums)
      self.next_step += k
    jax.block_until_ready(self.sums)


class PeakMemory:
  """Device 0's `peak_bytes_in_use` as text: "<=" where a row did not raise the process's mark."""

  def __init__(self):
    self.last = 0

  def read(self) -> str:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" not in stats:
      return "n/a"
    peak, raised = stats["peak_bytes_in_use"], stats["peak_bytes_in_use"] > self.last
    self.last = max(self.last, peak)
    return f"{'' if raised else '<= '}{peak / 2**20:,.0f} MiB"


def train_rows(model, batch, dtype, kernels, args, peak) -> list[str]:
  """Rows of one model at one dtype and kernels choice: each feed, timed."""
  print(f"  {model} {batch} {dtype} {kernels or '-'}...", file=sys.stderr, flush=True)
  case = Case(model, batch, dtype, kernels, args.n_train)
  shape = "x".join(map(str, case.batch["image"].shape[1:]))
  head = f"| {model} | {shape} | {batch} | {dtype} | {kernels or '-'}"
  rows, ks = [], {}
  for feed in ("placed", "host", "device_data") if model in CNNS else ("placed",):
    if feed == "device_data":  # A k-step call per block, with the placed step's k: compile it.
      k = ks["placed"]
      case.run(feed, k)
    else:  # Compile (placed) or fill the pipeline (host); then one step alone sizes the blocks.
      case.run(feed, 2)
      t0 = time.perf_counter()
      case.run(feed, 1)
      k = ks[feed] = max(1, min(1000, int(args.seconds / args.blocks / (time.perf_counter() - t0))))
    per_step, end = [], time.perf_counter() + args.seconds
    for _ in range(args.blocks):
      t0 = time.perf_counter()
      case.run(feed, k)
      per_step.append((time.perf_counter() - t0) / k)
      if time.perf_counter() > end and len(per_step) >= 3:
        break
    sec = statistics.median(per_step)
    rows.append(
      f"{head} | {feed} | {batch / sec:,.0f} | {1e3 * sec:.2f} | {k * len(per_step)} "
      f"| {peak.read()} | {int(case.sums['first_bad_step']) == np.iinfo(np.int32).max} |"
    )
  return rows


def loss_rows(names, batch: int, repeats: int, number: int) -> list[str]:
  """Forward + backward of each loss and of optax CE, K = 1000, interleaved as benchmarks/losses.py:
  each ratio is against the smaller of the CE times measured before and after that loss."""
  rng = np.random.default_rng(1000)
  z = jnp.asarray(rng.standard_normal((batch, 1000)) * 3, jnp.float32)
  y = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
  base = loss_bench.fwd_bwd(optax.losses.softmax_cross_entropy_with_integer_labels)
  t_base, rows = loss_bench.min_time(base, z, y, repeats, number), []
  for n in names:
    t = loss_bench.min_time(loss_bench.fwd_bwd(losses.get(n)), z, y, repeats, number)
    t_base = min(t_base, loss_bench.min_time(base, z, y, max(repeats // 2, 1), number))
    rows.append(f"| {n} | {1e3 * t:.3f} | {1e3 * t_base:.3f} | {t / t_base:.2f}x |")
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true", help="toy sizes, seconds on a CPU; same report")
  ap.add_argument("--models", default=None, help=f"comma-separated, from {list(MODELS)}")
  ap.add_argument("--dtypes", default=None, help="comma-separated (default bfloat16,float32; smoke float32)")
  ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row (about)")
  ap.add_argument("--blocks", type=int, default=5, help="timed blocks per row (at most; 3 at least)")
  ap.add_argument("--budget", type=float, default=None, help="seconds for the run (300; smoke: no limit)")
  ap.add_argument("--no-tests", action="store_true", help="skip the pytest selections")
  ap.add_argument("--out", default=None, help="also write the report to this file")
  args = ap.parse_args()
  tuned = cpu.tune_allocator()  # As experiments.main; before JAX starts its backends.
  start, load_before = time.perf_counter(), os.getloadavg()
  if args.smoke:
    args.seconds, args.blocks = 0.0, 3
  if args.budget is None:  # Rows left when it is spent are skipped.
    args.budget = float("inf") if args.smoke else 300.0
  models = (args.models or ("mnist_cnn" if args.smoke else ",".join(MODELS))).split(",")
  for m in models:
    if m not in MODELS:
      raise SystemExit(f"unknown model {m!r}; choose from {list(MODELS)}")
  args.n_train = 256 if args.smoke else 50_000  # Images in the random in-RAM datasets.
  dtypes = (args.dtypes or ("float32" if args.smoke else "bfloat16,float32")).split(",")
  # The tests first, while this process holds no device: a TPU admits one process at a time, and the
  # first process that starts JAX on a GPU takes most of its memory.
  tests = []
  if not args.no_tests:
    print("running the pytest selections...", file=sys.stderr, flush=True)
    for what, selection in SMOKE_TESTS if args.smoke else TESTS:
      tests.append(pytest_row(what, selection, min(90.0, start + args.budget / 3 - time.perf_counter())))
  backend, dev = jax.default_backend(), jax.devices()[0]
  plugins = [
    f"{d.metadata['Name']} {d.version}"
    for d in importlib.metadata.distributions()
    if (d.metadata["Name"] or "").startswith(("jax-cuda", "jax_cuda", "libtpu", "jax-rocm"))
  ]

  print("timing losses...", file=sys.stderr, flush=True)
  losses_batch = 256 if args.smoke else 4096
  loss_table = loss_rows(
    LOSSES[:2] if args.smoke else LOSSES, losses_batch, *((1, 1) if args.smoke else (5, 5))
  )

  peak, rows = PeakMemory(), []
  for model in models:
    batch = 8 if args.smoke else MODELS[model]
    kernel_choices = (
      (("fast", "reference") if backend == "cpu" else ("reference",)) if model in CNNS else (None,)
    )
    for dtype in dtypes:
      for kernels in kernel_choices:
        if time.perf_counter() > start + args.budget:
          rows.append(f"| {model} | | {batch} | {dtype} | {kernels or '-'} | skipped: --budget spent |")
          continue
        try:
          rows += train_rows(model, batch, dtype, kernels, args, peak)
        except Exception as e:  # noqa: BLE001 -- reported in the table (e.g. out of memory), not raised.
          msg = f"{type(e).__name__}: {e}".splitlines()[0][:120].replace("|", "/")
          rows.append(f"| {model} | | {batch} | {dtype} | {kernels or '-'} | error: {msg} |")

  load_after = os.getloadavg()
  when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
  report = [
    f"# aplx accelerator check{' (--smoke: toy sizes, not a measurement)' if args.smoke else ''}",
    "",
    "| platform | device kind | devices | jax | jaxlib | plugins | date | load avg before / after | wall |",
    "|---|---|---:|---|---|---|---|---|---:|",
    f"| {dev.platform} | {dev.device_kind} | {jax.device_count()} | {jax.__version__} "
    f"| {importlib.metadata.version('jaxlib')} | {', '.join(plugins) or '-'} | {when} "
    f"| {'/'.join(f'{x:.1f}' for x in load_before)} / {'/'.join(f'{x:.1f}' for x in load_after)} "
    f"| {time.perf_counter() - start:.0f} s |",
    "",
    "## Tests on this backend (pytest -x, in a subprocess)",
    "",
    "| area | selection | passed | failed | skipped | exit | s | first failure |",
    "|---|---|---:|---:|---:|---|---:|---|",
    *(tests or ["| - | skipped (--no-tests) | | | | | | |"]),
    "",
    f"## Train step (aplx.train's, random data; malloc tuned: {tuned}; "
    f"XLA:CPU options: {cpu.compiler_options()})",
    "",
    "| model | image | batch | dtype | kernels | feed | img/s (median) | ms/step | timed steps "
    "| peak device memory | loss finite |",
    "|---|---|---:|---|---|---|---:|---:|---:|---:|---|",
    *rows,
    "",
    f"## Losses: jitted forward + backward, float32 logits [{losses_batch}, 1000], min over rounds",
    "",
    "| loss | ms | optax CE ms | loss / CE |",
    "|---|---:|---:|---:|",
    *loss_table,
  ]
  text = "\n".join(report) + "\n"
  print(text, end="")
  if args.out:
    pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
  main()
