"""Images/second of the aplx training input pipeline, printed as a table (docs/data.md).

  python benchmarks/input_pipeline.py                      # MNIST from $APLX_DATA_DIR (prepared
                                                           # offline if needed) + CIFAR-sized data
  python benchmarks/input_pipeline.py --train_step_rate 1200   # adds "x train step" columns

Rows:
  mnist  train_batches            the pipeline the trainer uses (grain MapDataset over steps,
                                  batched NumPy gathers, thread prefetch)
  mnist  make_train_batch loop    the same batches without grain (plain NumPy, no prefetch)
  mnist  grain per-example        a conventional per-example grain pipeline (source -> shuffle ->
                                  map(normalise) -> batch), for comparison
  cifar* train_batches            random uint8 50k x 32x32x3 arrays (CIFAR-sized), the CIFAR-10
                                  (crop+flip) and CIFAR-100 (crop+flip+rotate) augmentations

TRAIN STEP RATE: the lead fills `--train_step_rate` (images/s of the jitted train step on this
machine, benchmarks/train_step.py) to print the ratio; the goal is >= 5x.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from aplx import data
from aplx.data import pipeline, preprocess


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


def _cifar_like(augment: str, n: int = 50000) -> pipeline.Dataset:
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


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--data_dir", default=None)
  p.add_argument("--threads", type=int, default=1, help="grain prefetch threads for train_batches")
  p.add_argument(
    "--train_step_rate",
    type=float,
    default=None,
    help="images/s of the train step on this machine (filled in by the lead)",
  )
  args = p.parse_args()
  B, S = args.batch, args.steps

  t = time.perf_counter()
  mnist = data.load_dataset("mnist", data_dir=args.data_dir, noise="sym", rate=0.8)
  load_s = time.perf_counter() - t

  rows = [
    (
      "mnist",
      "train_batches",
      _rate(lambda: data.train_batches(mnist, global_batch_size=B, seed=0, num_threads=args.threads), B, S),
    ),
    (
      "mnist",
      "make_train_batch loop",
      _rate(
        lambda: (data.make_train_batch(mnist, s, global_batch_size=B, seed=0) for s in itertools.count()),
        B,
        S,
      ),
    ),
    ("mnist", "grain per-example", _rate(lambda: _per_example_grain(mnist, B, 0), B, S // 4)),
  ]
  for aug in ("crop_flip", "crop_flip_rotate"):
    ds = _cifar_like(aug)
    rows.append(
      (
        f"cifar-sized {aug}",
        "train_batches",
        _rate(lambda: data.train_batches(ds, global_batch_size=B, seed=0, num_threads=args.threads), B, S),
      )
    )

  head = f"| data | pipeline | images/s (batch {B}) |"
  sep = "|---|---|---:|"
  if args.train_step_rate:
    head += " x train step |"
    sep += "---:|"
  print(
    f"load_dataset('mnist', noise='sym', rate=0.8): {load_s:.1f} s "
    "(first run decodes PNGs and writes the .npz cache; later runs read the cache)\n"
  )
  print(head)
  print(sep)
  for name, kind, r in rows:
    line = f"| {name} | {kind} | {r:,.0f} |"
    if args.train_step_rate:
      line += f" {r / args.train_step_rate:,.1f} |"
    print(line)
  if not args.train_step_rate:
    print("\n(train step rate: not given; pass --train_step_rate IMAGES_PER_S for the ratio column)")


if __name__ == "__main__":
  main()
