"""The streamed (WebVision / Clothing1M) input path: decode + augment images/s, and peak memory per process
against dataset size, printed as tables (docs/data.md).

  python -m benchmarks.streaming                          # 2,000 and 20,000 images, 0/1/2 workers
  python -m benchmarks.streaming --sizes 2000 --workers 0,2 --steps 20

It writes WebVision 1.0 trees in the official layout (JPEGs of 256 px on the shorter side, as the
resized release; 200 distinct synthetic photos repeated under different names), prepares them with
`python -m aplx.data.prepare webvision`, and then:
  rate  images/s of `train_batches` at 224 px (the authors' RandomResizedCrop + flip + ColorJitter),
        batch --batch, with 0 (in the main process, 1 prefetch thread) and with N grain worker
        processes, after 2 warm-up batches (worker start-up excluded);
  rss   resident memory (/proc: VmRSS, VmHWM) of a fresh process that loads the dataset and streams
        --steps batches (the same number of images for every dataset size), and the peak of its largest
        worker process.
Not a test: the numbers depend on the machine and its load (printed with them).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from aplx import data
from aplx.data import prepare

DISTINCT = 200  # Distinct JPEGs; the tree repeats them under different file names.


def _photo(rng) -> bytes:
  """A JPEG that decodes like a resized web photo: 256 px shorter side, smooth colour fields + texture."""
  h, w = 256, int(rng.integers(256, 400))
  yy, xx = np.mgrid[0:h, 0:w] / 64.0
  base = rng.uniform(0, 255, 3)
  img = base + 60 * np.stack(
    [np.sin(xx * rng.uniform(0.5, 2) + c) * np.cos(yy * rng.uniform(0.5, 2)) for c in range(3)], -1
  )
  img += rng.normal(0, 12, img.shape)
  buf = io.BytesIO()
  pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
  (pil.transpose(Image.Transpose.TRANSPOSE) if rng.random() < 0.3 else pil).save(buf, "JPEG", quality=90)
  return buf.getvalue()


def make_tree(root: str, n: int, num_classes: int = 50, seed: int = 0) -> None:
  """A WebVision tree with n Google training images of `num_classes` classes and 2 val images per class."""
  rng = np.random.default_rng(seed)
  photos = [_photo(rng) for _ in range(DISTINCT)]
  lines, val = [], []
  for i in range(n):
    label = i % num_classes
    rel = f"google/q{label + 1:04d}/{i:06d}.jpg"
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    with open(os.path.join(root, rel), "wb") as f:
      f.write(photos[i % DISTINCT])
    lines.append(f"{rel} {label}")
  os.makedirs(os.path.join(root, "val_images_256"), exist_ok=True)
  for i in range(2 * num_classes):
    name = f"val{i + 1:06d}.jpg"
    with open(os.path.join(root, "val_images_256", name), "wb") as f:
      f.write(photos[i % DISTINCT])
    val.append(f"{name} {i % num_classes}")
  os.makedirs(os.path.join(root, "info"), exist_ok=True)
  for name, rows in (("train_filelist_google.txt", lines), ("val_filelist.txt", val)):
    with open(os.path.join(root, "info", name), "w") as f:
      f.write("\n".join(rows) + "\n")


def _rate(data_dir: str, workers: int, batch: int, steps: int) -> float:
  ds = data.load_dataset("webvision", data_dir=data_dir, download=False)
  it = data.train_batches(ds, global_batch_size=batch, seed=0, num_workers=workers)
  try:
    for _ in itertools.islice(it, 2):  # Warm-up (and worker start-up).
      pass
    t = time.perf_counter()
    for _ in itertools.islice(it, steps):
      pass
    return batch * steps / (time.perf_counter() - t)
  finally:
    it.close()


def _rss_mib(field: str) -> float:
  """VmRSS (now) or VmHWM (peak) of this process from /proc, in MiB."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _rss_child(data_dir: str, workers: int, batch: int, steps: int) -> None:
  """In a fresh process: load, stream `steps` batches; print RSS (MiB) after loading, after streaming,
  the peak, and the peak of its largest worker process."""
  ds = data.load_dataset("webvision", data_dir=data_dir, download=False)
  after_load = _rss_mib("VmRSS")
  it = data.train_batches(ds, global_batch_size=batch, seed=0, num_workers=workers)
  for _ in itertools.islice(it, steps):
    pass
  after_stream = _rss_mib("VmRSS")
  it.close()
  print(
    json.dumps(
      {
        "num_train": ds.num_train,
        "after_load_mib": after_load,
        "after_stream_mib": after_stream,
        "peak_mib": _rss_mib("VmHWM"),
        "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
      }
    )
  )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sizes", default="2000,20000", help="dataset sizes (training images), comma-separated")
  p.add_argument("--workers", default="0,1,2", help="grain worker processes to time, comma-separated")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=20, help="batches timed / streamed for the RSS")
  p.add_argument("--root", default=None, help="where to write the trees (default: a temp dir, removed)")
  p.add_argument("--_rss_child", nargs=2, metavar=("DATA_DIR", "WORKERS"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args._rss_child:
    _rss_child(args._rss_child[0], int(args._rss_child[1]), args.batch, args.steps)
    return

  sizes = [int(s) for s in args.sizes.split(",")]
  workers = [int(w) for w in args.workers.split(",")]
  root = args.root or tempfile.mkdtemp(prefix="aplx_streaming_")
  print(f"load average before: {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})", flush=True)
  dirs = {}
  for n in sizes:
    raw, data_dir = os.path.join(root, f"raw{n}"), os.path.join(root, f"tfds{n}")
    t = time.perf_counter()
    if not os.path.isdir(raw):
      make_tree(raw, n)
    prepare.prepare("webvision", data_dir=data_dir, raw_dir=raw)
    print(f"{n} images: tree + prepare {time.perf_counter() - t:.0f} s", flush=True)
    dirs[n] = data_dir

  print(f"\n| workers | images/s (224 px, batch {args.batch}, {args.steps} batches) |")
  print("|---:|---:|")
  for w in workers:
    print(f"| {w} | {_rate(dirs[sizes[0]], w, args.batch, args.steps):,.0f} |", flush=True)

  head = f"| training images | workers | RSS after load (MiB) | after {args.steps} batches | peak | worker |"
  print("\n" + head + "\n|---:|---:|---:|---:|---:|---:|")
  for n in sizes:
    for w in sorted({0, max(workers)}):
      cmd = [
        sys.executable,
        "-m",
        "benchmarks.streaming",
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
      ]
      out = subprocess.run(
        cmd + ["--_rss_child", dirs[n], str(w)], capture_output=True, text=True, check=True
      )
      r = json.loads(out.stdout.strip().splitlines()[-1])
      worker = f"{r['worker_peak_mib']:.0f}" if w else "-"
      row = f"| {r['num_train']:,} | {w} | {r['after_load_mib']:.0f} | {r['after_stream_mib']:.0f} | "
      print(row + f"{r['peak_mib']:.0f} | {worker} |", flush=True)
  print(f"\nload average after: {os.getloadavg()[0]:.1f}")
  if args.root is None:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
