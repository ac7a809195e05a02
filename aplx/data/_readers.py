"""The raw files behind aplx's TFDS builders: where they are, how they are read, and what builders share.

NumPy readers of the official releases (MNIST IDX files, the python CIFAR batches), the PNG encoding
TFDS would need TensorFlow for, the builders' optional local source (`LocalSourceMixin`) and download
check, and the default directories. The builders (`prepare.py`: mnist, cifar10, cifar100; `cifar_n.py`;
`real_noise.py`) import this module; it imports none of them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path
import pickle
import socket
import tarfile
import urllib.parse
import zlib

import numpy as np

from aplx import _deps

with _deps.extra("data", __name__):
  import tensorflow_datasets as tfds

# ---------------------------------------------------------------------------------------------------
# Where the files are
# ---------------------------------------------------------------------------------------------------


def default_mnist_dir() -> str | None:
  """`APLX_MNIST_DIR` (a directory of MNIST IDX files), else None: TFDS's download.

  (`experiments/` and the tests default it to the repository's ../shared/data/mnist when present.)
  """
  return os.environ.get("APLX_MNIST_DIR") or None


def default_data_dir() -> str:
  """`APLX_DATA_DIR`, else TFDS's default (`TFDS_DATA_DIR` or ~/tensorflow_datasets)."""
  return os.environ.get("APLX_DATA_DIR") or str(tfds.core.constants.DATA_DIR)


# ---------------------------------------------------------------------------------------------------
# Raw readers (NumPy only)
# ---------------------------------------------------------------------------------------------------


def _open_maybe_gzip(path: Path):
  with open(path, "rb") as f:
    magic = f.read(2)
  return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) into a uint8 array of its declared shape."""
  try:
    with _open_maybe_gzip(Path(path)) as f:
      data = f.read()
  except (EOFError, OSError, zlib.error) as e:
    raise ValueError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}); download it again.") from e
  if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()}).")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  if len(data) != 4 + 4 * ndim + int(np.prod(shape)):
    raise ValueError(
      f"{path} is truncated: its header declares shape {shape} ({int(np.prod(shape))} bytes of data), "
      f"the file holds {len(data) - 4 - 4 * ndim}. Download it again."
    )
  return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def verify_sha256sums(raw_dir: Path, files) -> None:
  """Checks `files` against a `SHA256SUMS` file beside them (`sha256sum` format), if there is one."""
  sums_file = raw_dir / "SHA256SUMS"
  if not sums_file.exists():
    return
  expected = {}
  for line in sums_file.read_text().splitlines():
    digest, _, name = line.strip().partition(" ")
    if digest:
      expected[name.strip().lstrip("*")] = digest.lower()
  for f in files:
    want = expected.get(Path(f).name)
    if want is None:
      continue
    got = hashlib.sha256(Path(f).read_bytes()).hexdigest()
    if got != want:
      raise ValueError(
        f"{f} does not match its checksum in {sums_file} (sha256 {got[:16]}..., expected {want[:16]}...): "
        "the file is corrupted or truncated; download it again."
      )


def find_maybe_gzipped(raw_dir: Path, stem: str) -> Path:
  """`raw_dir/stem.gz`, else `raw_dir/stem`; FileNotFoundError if neither exists."""
  for name in (stem + ".gz", stem):
    if (raw_dir / name).exists():
      return raw_dir / name
  raise FileNotFoundError(f"{stem}[.gz] not found in {raw_dir}.")


def cifar_python_members(raw: Path, folder: str) -> dict[str, bytes]:
  """Reads every file of the official python-format CIFAR archive (tarball or extracted dir)."""
  if raw.is_dir():
    base = raw / folder if (raw / folder).is_dir() else raw
    return {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
  out = {}
  with tarfile.open(raw, "r:*") as tar:
    for member in tar.getmembers():
      if member.isfile():
        out[Path(member.name).name] = tar.extractfile(member).read()
  return out


def unpickle(blob: bytes) -> dict:
  """A python CIFAR batch (a pickled dict with bytes keys) as a dict with str keys."""
  d = pickle.loads(blob, encoding="bytes")
  return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def png_bytes(image: np.ndarray) -> bytes:
  """PNG-encodes a uint8 [H, W, C] image with Pillow (TFDS would need TensorFlow for this)."""
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
  return buf.getvalue()


def _cifar_images(d: dict) -> np.ndarray:
  return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


CIFAR_PY = {
  # name: (url, folder, train files, test files, meta file, label keys {tfds: pickle})
  "cifar10": (
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-10-batches-py",
    [f"data_batch_{i}" for i in range(1, 6)],
    ["test_batch"],
    "batches.meta",
    {"label": ("labels", "label_names")},
  ),
  "cifar100": (
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "cifar-100-python",
    ["train"],
    ["test"],
    "meta",
    {"label": ("fine_labels", "fine_label_names"), "coarse_label": ("coarse_labels", "coarse_label_names")},
  ),
}


def cifar_examples(batches, split_prefix: str, keys: dict):
  """(index, record) over the official python CIFAR batches in order, keyed by index as the stock
  builder: the labels named by `keys` ({tfds: (pickle key, names key)}), the id and the PNG image."""
  index = 0
  for d in batches:
    images = _cifar_images(d)
    labels = {k: np.asarray(d[pk]) for k, (pk, _) in keys.items()}
    for i in range(images.shape[0]):
      record = {k: int(v[i]) for k, v in labels.items()}
      record["id"] = f"{split_prefix}{index:05d}"
      record["image"] = png_bytes(images[i])
      yield index, record
      index += 1


# ---------------------------------------------------------------------------------------------------
# What the builders share
# ---------------------------------------------------------------------------------------------------


class LocalSourceMixin:
  """`raw_dir=None` downloads like the stock builder; a path reads local raw files instead."""

  def __init__(self, *, raw_dir: str | os.PathLike | None = None, **kwargs):
    self._raw_dir = None if raw_dir is None else Path(raw_dir).expanduser()
    super().__init__(**kwargs)


def check_reachable(url: str, timeout: float = 5.0) -> None:
  """Fails in seconds, not minutes of TFDS retries, when the download host cannot be reached."""
  host = urllib.parse.urlparse(url).hostname
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
  except OSError as e:
    raise ConnectionError(f"cannot reach {host} to download ({e}); no network?") from e
