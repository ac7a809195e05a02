"""Images/second of the aplx training input pipeline per dataset, beside the images/second of that
dataset's train step measured in the same run, printed as a table (docs/data.md). Goal: the pipeline
at least 5x the step.

  python -m benchmarks.input_pipeline                  # every row below (~5-10 min on 2 CPU cores)
  python -m benchmarks.input_pipeline --datasets mnist,cifar10 --steps 200

Pipelines (`data.train_batches`, the trainer's: grain MapDataset over steps, batched NumPy gathers,
augmentation, thread prefetch; batch 128, the configs'):
  mnist      the real dataset (prepared offline from $APLX_MNIST_DIR, as experiments/ finds it), no
             augmentation
  cifar10    random uint8 arrays of CIFAR-10's size (50,000 x 32 x 32 x 3), crop + flip
  cifar100   the same size, crop + flip + rotation
  webvision  a generated WebVision tree in the official layout (benchmarks.streaming.make_tree, 2,000
             JPEGs of 256 px), streamed: decoded and augmented at 224 px per batch (the authors'
             transform), batch --stream_batch, with 0 and 2 grain worker processes
and, for comparison on MNIST, the same batches without grain (`make_train_batch` in a loop) and a
conventional per-example grain pipeline (source -> shuffle -> map -> batch).

Train step: `benchmarks.train_step.AplxCase`, the step `aplx.train` runs for the dataset's paper config
(mnist_cnn, cifar10_cnn, cifar100's resnet50, webvision's resnet50_imagenet at 224 px with batch
--stream_batch), on random data of the dataset's shape, timed after its compile. CIFAR images are not
available here, so the CIFAR rows show the pipeline's cost on data of CIFAR's size, not results.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time

import jax
import numpy as np

from aplx import cpu, data
from aplx.data import pipeline, preprocess
import experiments  # noqa: F401  (MNIST from $APLX_MNIST_DIR, default ../shared/data/mnist, as experiments/)


def _rate(make_iter, batch: int, steps: int, warmup: int = 3) -> float:
  it = make_iter()
  for _ in itertools.islice(it, warmup):
    pass
  t = time.perf_counter()
  for _ in itertools.islice(it, steps):
    pass
  return batch * steps / (time.perf_counter() - t)


def _per_example_grain(ds, batch: int, seed: int):
  import grain

  mean, std = ds.mean, ds.std

  def one(i):
    return {
      "image": preprocess.normalize(ds.train_images[i][None], mean, std)[0],
      "label": ds.train_noisy_labels[i],
      "id": ds.train_ids[i],
    }

  d = (
    grain.MapDataset.range(ds.num_train)
    .shuffle(seed=seed)
    .repeat()
    .map(one)
    .batch(batch, drop_remainder=True)
  )
  return iter(d.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))


def cifar_like(augment: str, n: int = 50000) -> pipeline.Dataset:
  """A dataset of CIFAR-10's sizes (uint8 32 x 32 x 3, 10 classes) with random images and labels."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, n).astype(np.int32)
  mean, std = preprocess.NORMALIZATION["cifar10"]
  return pipeline.Dataset(
    name=f"cifar-sized/{augment}",
    num_classes=10,
    image_shape=(32, 32, 3),
    train_images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
    train_ids=np.arange(n, dtype=np.int32),
    train_clean_labels=labels,
    train_noisy_labels=labels,
    test_images=np.zeros((0, 32, 32, 3), np.uint8),
    test_labels=np.zeros(0, np.int32),
    mean=mean,
    std=std,
    augment=augment,
    noise={"kind": "none"},
  )


def _step_rate(model: str, steps: int, batch: int | None = None) -> float:
  """Images/s of `aplx.train`'s step for `model`'s paper config (benchmarks.train_step), compiled first."""
  from benchmarks import train_step  # pylint: disable=import-outside-toplevel

  config = train_step.get_config(model)
  if batch:
    config.batch_size = batch
  case = train_step.AplxCase(config)
  case.run(1)  # Compile.
  t = time.perf_counter()
  case.run(steps)
  return case.batch_size * steps / (time.perf_counter() - t)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--datasets", default="mnist,cifar10,cifar100,webvision")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=200, help="batches timed per pipeline (streamed: 1/10)")
  p.add_argument("--stream_batch", type=int, default=32, help="batch of the webvision rows (pipeline, step)")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--threads", type=int, default=1, help="grain prefetch threads for train_batches")
  args = p.parse_args()
  tuned = cpu.tune_allocator()  # As experiments.main; before JAX starts its backends.
  B, S = args.batch, args.steps
  names = args.datasets.split(",")
  load_before = os.getloadavg()
  rows = []  # (data, pipeline, images/s, step model, step images/s)

  def batches(ds):
    return lambda: data.train_batches(ds, global_batch_size=B, seed=0, num_threads=args.threads)

  if "mnist" in names:
    mnist = data.load_dataset("mnist", data_dir=args.data_dir, noise="sym", rate=0.8)
    step = ("mnist_cnn", _step_rate("mnist_cnn", 20))
    rows.append(("mnist", "train_batches", _rate(batches(mnist), B, S), *step))
    loop = lambda: (data.make_train_batch(mnist, s, global_batch_size=B, seed=0) for s in itertools.count())  # noqa: E731
    rows.append(("mnist", "make_train_batch loop", _rate(loop, B, S), *step))
    rows.append(
      ("mnist", "grain per-example", _rate(lambda: _per_example_grain(mnist, B, 0), B, S // 4), *step)
    )
  for name, aug, model in (
    ("cifar10", "crop_flip", "cifar10_cnn"),
    ("cifar100", "crop_flip_rotate", "resnet50"),
  ):
    if name in names:
      step = (model, _step_rate(model, 3 if name == "cifar10" else 1))
      rows.append((f"{name} (random data)", "train_batches", _rate(batches(cifar_like(aug)), B, S), *step))
  if "webvision" in names:
    from aplx.data import prepare  # pylint: disable=import-outside-toplevel
    from benchmarks import streaming  # pylint: disable=import-outside-toplevel

    root = tempfile.mkdtemp(prefix="aplx_input_pipeline_")
    try:
      streaming.make_tree(os.path.join(root, "raw"), 2000)
      prepare.prepare("webvision", data_dir=os.path.join(root, "tfds"), raw_dir=os.path.join(root, "raw"))
      step = ("resnet50_imagenet", _step_rate("resnet50_imagenet", 1, args.stream_batch))
      for workers in (0, 2):
        rate = streaming._rate(os.path.join(root, "tfds"), workers, args.stream_batch, max(S // 10, 5))
        rows.append(("webvision (generated tree)", f"train_batches, {workers} workers", rate, *step))
    finally:
      shutil.rmtree(root, ignore_errors=True)

  print(
    f"\njax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
    f"{os.cpu_count()} cores; malloc tuned: {tuned}; "
    f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}"
  )
  print("| data | pipeline | pipeline images/s | train step (model) | step images/s | pipeline / step |")
  print("|---|---|---:|---|---:|---:|")
  for name, kind, rate, model, step_rate in rows:
    print(f"| {name} | {kind} | {rate:,.0f} | {model} | {step_rate:,.1f} | {rate / step_rate:,.1f}x |")


if __name__ == "__main__":
  main()
