"""Tiny fake WebVision 1.0, ILSVRC2012-val and Clothing1M trees in the official layouts, for tests.

Imported by the tests as a plain module (`import real_noise_trees`): pytest's default "prepend" import
mode puts tests/ on sys.path. Every image is a small real JPEG (Pillow) of one flat colour that is unique
to the image, so a test can check that an image and its label stay paired; sizes and aspect ratios vary.
The generators return a manifest of what they wrote, in list-file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WEBVISION_SYNSETS = 1000  # info/synsets.txt always lists 1000 classes, as the real one.
CLOTHING1M_CLASSES = 14


def colour(n: int) -> tuple[int, int, int]:
  """The flat colour of the n-th image of a tree (distinct for n < 4096, channels 16 apart or more)."""
  return (16 * (n % 16), 16 * ((n // 16) % 16), 16 * ((n // 256) % 16))


def _write_jpeg(path: Path, n: int, size: tuple[int, int]) -> tuple[int, int, int]:
  w, h = size[0] + 8 * (n % 3), size[1] + 8 * (n % 4)
  if n % 2:
    w, h = h, w  # Portrait and landscape.
  path.parent.mkdir(parents=True, exist_ok=True)
  rgb = colour(n)
  Image.new("RGB", (w, h), rgb).save(path, format="JPEG", quality=95)
  return rgb


def _write_lines(path: Path, lines) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(f"{line}\n" for line in lines))


def make_webvision_tree(
  root,
  *,
  num_classes: int = 52,
  per_class: int = 1,
  val_per_class: int = 1,
  imagenet_val: bool = True,
  size: tuple[int, int] = (24, 16),
  rng_seed: int = 0,
) -> dict:
  """Writes a WebVision 1.0 resized-release tree with images of classes 0..num_classes-1.

  info/train_filelist_google.txt ("google/qNNNN/NNNNNN.jpg <label>", lines shuffled), info/val_filelist.txt
  ("valNNNNNN.jpg <label>", images in val_images_256/), info/synsets.txt (1000 random, unsorted wnids,
  so a class index that came from sorting folder names would be wrong), and with `imagenet_val` an
  ILSVRC2012-val folder tree <root>/imagenet/val/<wnid>/ILSVRC2012_val_NNNNNNNN.JPEG with one image per
  class (plus a stray top-level file, as in real copies).

  Returns {"root", "wnids", "imagenet_val_dir" (or None), "train", "val", "imagenet_val"}, the splits as
  lists of (key as in the list file, label, colour) in list order.
  """
  root = Path(root)
  rng = np.random.default_rng(rng_seed)
  wnids = [f"n{x:08d}" for x in rng.choice(10**8, size=WEBVISION_SYNSETS, replace=False)]
  _write_lines(root / "info" / "synsets.txt", [f"{w} fake class {i}, synset" for i, w in enumerate(wnids)])
  n = 0
  train = []
  for label in range(num_classes):
    for j in range(per_class):
      rel = f"google/q{label + 1:04d}/{j:06d}.jpg"
      train.append((rel, label, _write_jpeg(root / rel, n, size)))
      n += 1
  train = [train[i] for i in rng.permutation(len(train))]
  _write_lines(root / "info" / "train_filelist_google.txt", [f"{rel} {label}" for rel, label, _ in train])
  val = []
  for label in range(num_classes):
    for _ in range(val_per_class):
      rel = f"val{len(val) + 1:06d}.jpg"
      val.append((rel, label, _write_jpeg(root / "val_images_256" / rel, n, size)))
      n += 1
  _write_lines(root / "info" / "val_filelist.txt", [f"{rel} {label}" for rel, label, _ in val])
  imagenet, imagenet_dir = [], None
  if imagenet_val:
    imagenet_dir = root / "imagenet" / "val"
    for label in range(num_classes):
      rel = f"{wnids[label]}/ILSVRC2012_val_{n:08d}.JPEG"
      imagenet.append((rel, label, _write_jpeg(imagenet_dir / rel, n, size)))
      n += 1
    (imagenet_dir / "LOC_val_solution.csv").write_text("not an image folder\n")
  return {
    "root": root,
    "wnids": wnids,
    "imagenet_val_dir": imagenet_dir,
    "train": train,
    "val": val,
    "imagenet_val": imagenet,
  }


def make_clothing1m_tree(
  root,
  *,
  per_class: int = 2,
  val_per_class: int = 1,
  test_per_class: int = 1,
  flat: bool = False,
  size: tuple[int, int] = (20, 28),
  rng_seed: int = 0,
) -> dict:
  """Writes a Clothing1M tree: images/<d>/<dd>/<id>,<id>.jpg and the annotation files.

  The annotation files go to root/annotations/, or to root itself with `flat`. Every third training
  image also has a clean label (sometimes differing from its noisy one); noisy_label_kv.txt and
  clean_label_kv.txt also hold images of no split here (as the real ones: clean_train_key_list.txt).

  Returns {"root", "names", "train": [(key, noisy label, clean label or -1, colour)], "val"/"test":
  [(key, clean label, colour)]}, in list order.
  """
  root = Path(root)
  ann = root if flat else root / "annotations"
  rng = np.random.default_rng(rng_seed)
  n = 0

  def image():
    nonlocal n
    key = f"images/{n % 10}/{rng.integers(100):02d}/{rng.integers(10**10)},{rng.integers(10**10)}.jpg"
    rgb = _write_jpeg(root / key, n, size)
    n += 1
    return key, rgb

  train, val, test, noisy_kv, clean_kv = [], [], [], [], []
  for label in range(CLOTHING1M_CLASSES):
    for _ in range(per_class):
      key, rgb = image()
      clean = (label + len(train) % 2) % CLOTHING1M_CLASSES if len(train) % 3 == 0 else -1
      train.append((key, label, clean, rgb))
      noisy_kv.append((key, label))
      if clean >= 0:
        clean_kv.append((key, clean))
  for split, count in ((val, val_per_class), (test, test_per_class)):
    for label in range(CLOTHING1M_CLASSES):
      for _ in range(count):
        key, rgb = image()
        split.append((key, label, rgb))
        clean_kv.append((key, label))
  extra, _ = image()  # In both label files, in no split here.
  noisy_kv.append((extra, 5))
  clean_kv.insert(0, (extra, 6))
  names = [f"Category {i}" for i in range(CLOTHING1M_CLASSES)]
  _write_lines(ann / "category_names_eng.txt", names)
  _write_lines(ann / "noisy_label_kv.txt", [f"{k} {y}" for k, y in noisy_kv])
  _write_lines(ann / "clean_label_kv.txt", [f"{k} {y}" for k, y in clean_kv])
  _write_lines(ann / "noisy_train_key_list.txt", [k for k, *_ in train])
  _write_lines(ann / "clean_train_key_list.txt", [extra])
  _write_lines(ann / "clean_val_key_list.txt", [k for k, *_ in val])
  _write_lines(ann / "clean_test_key_list.txt", [k for k, *_ in test])
  return {"root": root, "names": names, "train": train, "val": val, "test": test}
