"""Build standard TFDS datasets (array_record) without TensorFlow, online or from local raw files.

After preparation the ordinary TFDS readers work with no network:
`tfds.builder(name, data_dir=...)`, `tfds.data_source(name, data_dir=..., download=False)`.

The builders below are the stock TFDS builders (same name, version, features and example keys, so the
same example order on disk) whose file *reading* is NumPy instead of `tf.io.gfile`, and whose
*source* can be a local directory:

  mnist     IDX files (`train-images-idx3-ubyte[.gz]`, ...), e.g. ../shared/data/mnist.
  cifar10   the official python tarball `cifar-10-python.tar.gz` (or its extracted
            `cifar-10-batches-py/` directory).
  cifar100  the official python tarball `cifar-100-python.tar.gz` (or `cifar-100-python/`).

Without `--raw_dir` the files are downloaded from the URLs of the stock builders (MNIST: checksums of
the stock builder are verified; CIFAR: TFDS's own CIFAR builders use the *binary* tarballs, we use the
*python* ones, which hold the same images in the same order).

CLI:
  python -m aplx.data.prepare mnist --raw_dir ../shared/data/mnist --data_dir ~/tensorflow_datasets
  python -m aplx.data.prepare cifar10 --raw_dir /path/to/cifar-10-python.tar.gz --data_dir ...
  python -m aplx.data.prepare cifar100 --raw_dir /path/to/cifar-100-python.tar.gz --data_dir ...
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
import sys

from aplx import _deps

with _deps.extra("data", __name__):
  import tensorflow_datasets as tfds
  from tensorflow_datasets.image_classification import cifar as tfds_cifar
  from tensorflow_datasets.image_classification import mnist as tfds_mnist

from aplx.data import _readers, cifar_n, real_noise

# Public here too (prepare.read_idx, ...), and looked up in this module by the functions below.
from aplx.data._readers import default_data_dir, default_mnist_dir, png_bytes, read_idx, verify_sha256sums

__all__ = [
  "BUILDERS",
  "default_data_dir",
  "default_mnist_dir",
  "builder",
  "ensure_prepared",
  "is_prepared",
  "prepare",
  "prepare_command",
]

# ---------------------------------------------------------------------------------------------------
# Builders: stock TFDS builders with NumPy readers (`_readers`) and an optional local source
# ---------------------------------------------------------------------------------------------------

_MNIST_FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class Mnist(_readers.LocalSourceMixin, tfds_mnist.MNIST, skip_registration=True):
  """TFDS `mnist` 3.0.1 from local IDX files or the stock URLs, without TensorFlow."""

  name = "mnist"

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls):  # the stock builder's checksums
    return tfds_mnist.MNIST.url_infos

  def _split_generators(self, dl_manager):
    if self._raw_dir is not None:
      files = {
        split: tuple(_readers.find_maybe_gzipped(self._raw_dir, stem) for stem in stems)
        for split, stems in _MNIST_FILES.items()
      }
      verify_sha256sums(self._raw_dir, [f for pair in files.values() for f in pair])
    else:
      _readers.check_reachable(self.URL)
      urls = {
        f"{split}_{i}": self.URL + stem + ".gz"
        for split, stems in _MNIST_FILES.items()
        for i, stem in enumerate(stems)
      }
      got = dl_manager.download(urls)
      files = {split: (got[f"{split}_0"], got[f"{split}_1"]) for split in _MNIST_FILES}
    return {split: self._generate_examples(*files[split]) for split in _MNIST_FILES}

  def _generate_examples(self, image_path, label_path):  # pylint: disable=arguments-differ
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.shape[0] != labels.shape[0]:
      raise ValueError(f"{image_path}: {images.shape[0]} images but {labels.shape[0]} labels.")
    for index in range(images.shape[0]):  # key = index, as in the stock builder
      yield index, {"image": png_bytes(images[index][..., None]), "label": int(labels[index])}


class _CifarPythonMixin(_readers.LocalSourceMixin):
  """CIFAR from the official python-format tarball; same keys/ids/order as the stock builder."""

  def _split_generators(self, dl_manager):
    url, folder, train_files, test_files, meta_file, keys = _readers.CIFAR_PY[self.name]
    if self._raw_dir is None:
      _readers.check_reachable(url)
    raw = self._raw_dir if self._raw_dir is not None else Path(dl_manager.download(url))
    if not raw.exists():
      raise FileNotFoundError(f"{raw} does not exist (expected {Path(url).name} or {folder}/).")
    members = _readers.cifar_python_members(raw, folder)
    missing = [f for f in train_files + test_files + [meta_file] if f not in members]
    if missing:
      raise FileNotFoundError(f"{raw} lacks {missing}; expected the official {Path(url).name}.")
    meta = _readers.unpickle(members[meta_file])
    for tfds_key, (_, names_key) in keys.items():
      self.info.features[tfds_key].names = [
        n.decode() if isinstance(n, bytes) else n for n in meta[names_key]
      ]
    load = lambda files: [_readers.unpickle(members[f]) for f in files]  # noqa: E731
    return {
      "train": self._generate_examples("train_", load(train_files)),
      "test": self._generate_examples("test_", load(test_files)),
    }

  def _generate_examples(self, split_prefix, batches):  # pylint: disable=arguments-differ
    yield from _readers.cifar_examples(batches, split_prefix, _readers.CIFAR_PY[self.name][5])


class Cifar10(_CifarPythonMixin, tfds_cifar.Cifar10, skip_registration=True):
  """TFDS `cifar10` from the official python tarball, without TensorFlow."""

  name = "cifar10"


class Cifar100(_CifarPythonMixin, tfds_cifar.Cifar100, skip_registration=True):
  """TFDS `cifar100` (with `coarse_label`) from the official python tarball, without TensorFlow."""

  name = "cifar100"


# Every dataset aplx builds: these three, CIFAR-N (`cifar_n`), WebVision and Clothing1M (`real_noise`).
BUILDERS = {
  "mnist": Mnist,
  "cifar10": Cifar10,
  "cifar100": Cifar100,
  **cifar_n.BUILDERS,
  **real_noise.BUILDERS,
}
# What `--raw_dir` is for each dataset (help texts and the commands in error messages).
RAW_HINTS = {
  "mnist": "/path/to/mnist_idx_dir",
  "cifar10": "/path/to/cifar-10-python.tar.gz",
  "cifar100": "/path/to/cifar-100-python.tar.gz",
  **cifar_n.RAW_HINTS,
  **real_noise.RAW_HINTS,
}


# ---------------------------------------------------------------------------------------------------
# Preparing
# ---------------------------------------------------------------------------------------------------


def prepare_command(name: str, data_dir: str | None = None, raw_dir: str | None = None) -> str:
  """The exact shell command that prepares `name` into `data_dir`."""
  raw = raw_dir or (default_mnist_dir() if name == "mnist" else None) or RAW_HINTS.get(name, "/path/to/raw")
  cmd = f"python -m aplx.data.prepare {name} --raw_dir {raw}"
  return cmd + (f" --data_dir {data_dir}" if data_dir else "")


def builder(name: str, data_dir: str | None = None):
  """The TFDS builder that reads dataset `name` from `data_dir`: TFDS's registered builder, or for the
  datasets TFDS does not know (webvision, clothing1m) aplx's own."""
  data_dir = data_dir or default_data_dir()
  if name in real_noise.BUILDERS:
    return real_noise.builder(name, data_dir)
  return tfds.builder(name, data_dir=data_dir)


def is_prepared(name: str, data_dir: str | None = None) -> bool:
  """Whether TFDS `name` (its current version) is in `data_dir`, complete.

  Raises FileNotFoundError for a half-made directory (dataset_info.json present, data files missing
  or empty, e.g. an interrupted copy), naming it: TFDS would otherwise take it as prepared.
  """
  data_dir = data_dir or default_data_dir()
  try:
    b = builder(name, data_dir)
    prepared = b.is_prepared()
  except Exception:  # pylint: disable=broad-except  (unknown names etc. count as not prepared)
    return False
  if prepared and (b.data_path / "dataset_info.json").exists():  # (Mocked datasets have none.)
    for split, info in b.info.splits.items():
      for f in info.filepaths:
        if not f.exists() or f.stat().length == 0:
          raise FileNotFoundError(
            f"{b.data_path} is incomplete: split {split!r} lacks {f.name}. Delete that directory "
            f"and prepare the dataset again:\n  {prepare_command(name, data_dir)}"
          )
  return prepared


def prepare(name: str, *, data_dir: str | None = None, raw_dir: str | None = None, **options) -> str:
  """Builds TFDS `name` as array_record into `data_dir`; from `raw_dir` if given, else downloads.

  `options` go to the dataset's builder (e.g. webvision's `imagenet_val_dir`). Returns the dataset's
  directory.
  """
  if name not in BUILDERS:
    raise ValueError(f"aplx can build {sorted(BUILDERS)} without TensorFlow, not {name!r}.")
  data_dir = data_dir or default_data_dir()
  if raw_dir is not None and not Path(raw_dir).expanduser().exists():
    raise FileNotFoundError(f"--raw_dir {raw_dir} does not exist.")
  if raw_dir is not None or not sys.stderr.isatty():
    tfds.disable_progress_bar()  # Nothing is downloaded, or nobody watches the bars.
  accepted = inspect.signature(BUILDERS[name]).parameters
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(
      f"{name} takes no option {', '.join(unknown)} (imagenet_val_dir: webvision, webvision_full)."
    )
  builder = BUILDERS[name](data_dir=data_dir, raw_dir=raw_dir, **options)
  builder.download_and_prepare(file_format="array_record")
  return str(builder.data_path)


class PrepareError(RuntimeError):
  """A dataset could not be prepared; the message gives the command to prepare it by hand."""


def ensure_prepared(name: str, data_dir: str | None = None, *, download: bool = True) -> str:
  """Makes sure TFDS `name` is in `data_dir` (default `default_data_dir()`); returns `data_dir`.

  Already prepared: nothing to do. mnist with a local IDX directory (`APLX_MNIST_DIR`): built
  offline from it. Otherwise, with `download=True`, TFDS's normal
  download path (array_record, no TensorFlow needed for mnist/cifar10/cifar100). Any failure raises
  an error with the exact command to prepare the dataset by hand.
  """
  data_dir = data_dir or default_data_dir()
  if is_prepared(name, data_dir):
    return data_dir
  raw_dir = default_mnist_dir() if name == "mnist" else None
  if raw_dir is None and name in real_noise.BUILDERS:  # No download URL: nothing to try.
    raise FileNotFoundError(
      f"{name} is not prepared in {data_dir}, and it cannot be downloaded automatically: download it by "
      f"hand (docs/data.md) and prepare it with:\n  {prepare_command(name, data_dir)}"
    )
  if raw_dir is None and not download:
    raise FileNotFoundError(
      f"TFDS dataset {name!r} is not prepared in {data_dir}. Prepare it with:\n  "
      + prepare_command(name, data_dir)
    )
  try:
    if name in BUILDERS:
      prepare(name, data_dir=data_dir, raw_dir=raw_dir)
    else:
      tfds.builder(name, data_dir=data_dir).download_and_prepare(file_format="array_record")
  except Exception as e:  # pylint: disable=broad-except
    raise PrepareError(
      f"could not prepare TFDS dataset {name!r} in {data_dir} ({type(e).__name__}: {e}). "
      f"Prepare it from local files with:\n  {prepare_command(name, data_dir)}\n"
      "(see docs/data.md)."
    ) from e
  return data_dir


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m aplx.data.prepare", description=__doc__.split("\n\n")[0])
  parser.add_argument("name", choices=sorted(BUILDERS))
  parser.add_argument(
    "--raw_dir",
    default=None,
    help="the files you downloaded (omit to download, where the dataset allows it): "
    + "; ".join(f"{k}: {v}" for k, v in sorted(RAW_HINTS.items()))
    + ". mnist defaults to $APLX_MNIST_DIR.",
  )
  parser.add_argument(
    "--data_dir", default=None, help="TFDS data dir (default $APLX_DATA_DIR or ~/tensorflow_datasets)."
  )
  parser.add_argument(
    "--imagenet_val_dir",
    default=None,
    help="webvision: ILSVRC2012 validation images, <dir>/<wnid>/*.JPEG (adds split 'imagenet_val').",
  )
  args = parser.parse_args(argv)
  raw_dir = args.raw_dir or (default_mnist_dir() if args.name == "mnist" else None)
  options = {} if args.imagenet_val_dir is None else {"imagenet_val_dir": args.imagenet_val_dir}
  path = prepare(args.name, data_dir=args.data_dir, raw_dir=raw_dir, **options)
  print(f"prepared {args.name} at {path}")


if __name__ == "__main__":
  main()
