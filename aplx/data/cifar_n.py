"""CIFAR-10N / CIFAR-100N (real human labels) as the stock TFDS datasets, without TensorFlow or torch.

CIFAR-N (Wei et al., ICLR 2022, https://github.com/UCSC-REAL/cifar-10-100n) re-labelled every CIFAR
train image by Amazon Mechanical Turk workers. The authors publish the labels as `data/CIFAR-10_human.pt`
and `data/CIFAR-100_human.pt`: torch.save files of a dict of 50000-long int64 arrays (`clean_label`,
`worse_label`, `aggre_label`, `random_label1..3`; `clean_label`, `noisy_label`), in the order of the
official *python* CIFAR tarball (data_batch_1..5 concatenated / `train`), which is the order their
PyTorch loader uses (it asserts that `clean_label` equals the tarball's labels).

The builders here are TFDS's `cifar10_n` (1.0.4) / `cifar100_n` (1.0.1): same name, version, features
and example keys (the train index), hence the same on-disk order and data-source ids as a TFDS build.
They read the python tarball (the stock builders read the binary one, same images in the same order)
and give example `i` the human labels at position `i` of the file, which is what the stock builders
end up doing through `*_human_ordered.npy` and `image_order_c*.npy`. The file's `clean_label` must equal
the tarball's train labels, else preparation stops: a check that the file and its order are right.

`--raw_dir` is a directory holding
  cifar10_n:  cifar-10-python.tar.gz (or cifar-10-batches-py/)  and  CIFAR-10_human.pt
  cifar100_n: cifar-100-python.tar.gz (or cifar-100-python/)   and  CIFAR-100_human.pt
The label file may also be in `<raw_dir>/data/` (as in a clone of the CIFAR-N repository), and may
instead be `CIFAR-10_human.npy` (python order; in that repository until 2022) or
`CIFAR-10_human_ordered.npy` with `image_order_c10.npy` (TFDS order, the stock builders' input; mapped
back here). `side_info_cifar10N.csv` / `side_info_cifar100N.csv` (the workers' ids and times), when in
`<raw_dir>` or `<raw_dir>/data/`, fill the `worker*` features; without it they are -1. Without
`--raw_dir`, all three files are downloaded (the label and side-info files from a fixed commit).

`.pt` and `.npy` files are read with a restricted unpickler: NumPy arrays, torch tensors (rebuilt as
NumPy arrays from the archive's storages), dicts and lists; any other object is refused, so a label
file can never run code.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import io
from pathlib import Path
import pickle
import zipfile

import numpy as np

from aplx import _deps
from aplx.data import _readers

with _deps.extra("data", __name__):
  from tensorflow_datasets.image_classification.cifar10_n import cifar10_n as tfds_cifar10_n
  from tensorflow_datasets.image_classification.cifar100_n import cifar100_n as tfds_cifar100_n

try:
  from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
  from numpy.core import multiarray as _multiarray

__all__ = [
  "BUILDERS",
  "RAW_HINTS",
  "Cifar10N",
  "Cifar100N",
  "load_label_file",
  "read_human_labels",
  "read_side_info",
]

# The CIFAR-N repository at the commit whose files were checked against the stock TFDS builders.
REPO_URL = "https://github.com/UCSC-REAL/cifar-10-100n"
_RAW_URL = (
  "https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/49df7d8a69e355470c77c1c2f2424916325a394b"
)


@dataclasses.dataclass(frozen=True)
class _Spec:
  base: str  # key of _readers.CIFAR_PY: the CIFAR tarball the labels belong to
  human: str  # stem of the label file
  image_order: str  # the authors' TFDS-order -> python-order index file (for *_human_ordered.npy)
  side_info: str  # the workers' ids and times, one row per batch of images
  fields: dict[str, tuple[str, ...]]  # TFDS feature -> the file's key (first one present wins)
  workers: tuple[tuple[str, str], ...]  # TFDS (id, time) features, in the side-info CSV's column order


_SPECS = {
  "cifar10_n": _Spec(
    base="cifar10",
    human="CIFAR-10_human",
    image_order="image_order_c10.npy",
    side_info="side_info_cifar10N.csv",
    fields={
      f: (f,) for f in ("worse_label", "aggre_label", "random_label1", "random_label2", "random_label3")
    },
    workers=tuple((f"worker{k}_id", f"worker{k}_time") for k in (1, 2, 3)),
  ),
  "cifar100_n": _Spec(
    base="cifar100",
    human="CIFAR-100_human",
    image_order="image_order_c100.npy",
    side_info="side_info_cifar100N.csv",
    fields={"noise_label": ("noisy_label", "noise_label")},  # .pt: noisy_label; *_ordered.npy: noise_label
    workers=(("worker_id", "worker_time"),),
  ),
}

# ---------------------------------------------------------------------------------------------------
# Restricted unpickling: NumPy arrays and torch tensors, nothing else
# ---------------------------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
  ("numpy", "ndarray"): np.ndarray,
  ("numpy", "dtype"): np.dtype,
  ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
  ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
  ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
  ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
  ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles (torch.save's default)
  ("collections", "OrderedDict"): collections.OrderedDict,  # a tensor's (empty) backward hooks
}
# torch storage classes (the dtype of a tensor's storage, in its persistent id) -> NumPy dtype.
_TORCH_STORAGES = {
  "DoubleStorage": "f8",
  "FloatStorage": "f4",
  "HalfStorage": "f2",
  "LongStorage": "i8",
  "IntStorage": "i4",
  "ShortStorage": "i2",
  "CharStorage": "i1",
  "ByteStorage": "u1",
  "BoolStorage": "?",
}


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """`torch._utils._rebuild_tensor_v2` for NumPy: the strided view, copied, with bounds checks."""
  del unused  # requires_grad, backward_hooks, metadata
  if not isinstance(storage, np.ndarray) or offset < 0 or any(s < 0 for s in stride):
    raise pickle.UnpicklingError(f"malformed tensor (offset {offset}, stride {stride}).")
  index = np.asarray(offset, np.int64)
  for axis, (n, s) in enumerate(zip(size, stride)):
    index = index + np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (len(size) - 1 - axis)) * s
  index = np.broadcast_to(index, tuple(size))
  if index.size and index.max() >= storage.size:
    raise pickle.UnpicklingError(f"tensor of size {tuple(size)} reaches past its storage ({storage.size}).")
  return storage[index]


class _Unpickler(pickle.Unpickler):
  """Unpickles only NumPy arrays/dtypes/scalars and (given `storage`) torch tensors; refuses the rest.

  `storage(dtype, key, numel)` returns a torch.save archive's storage `key` as a 1-D NumPy array.
  """

  def __init__(self, file, path, storage=None):
    super().__init__(file)
    self._path, self._storage, self._cache = path, storage, {}

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if self._storage is not None and module == "torch" and name in _TORCH_STORAGES:
      return np.dtype(_TORCH_STORAGES[name])
    if self._storage is not None and (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    raise pickle.UnpicklingError(
      f"{self._path} holds a {module}.{name} object: refusing to unpickle it (that could run arbitrary "
      "code). A CIFAR-N label file holds only a dict of NumPy arrays or torch tensors; use the files of "
      f"{REPO_URL} (folder data/)."
    )

  def persistent_load(self, pid):
    if self._storage is None or not (
      isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], np.dtype)
    ):
      raise pickle.UnpicklingError(f"{self._path}: unexpected persistent id {pid!r:.80}.")
    _, dtype, key, _, numel = pid
    if key not in self._cache:
      self._cache[key] = self._storage(dtype, str(key), int(numel))
    return self._cache[key]


def _load_torch_zip(path: Path):
  """The object in a torch.save zip archive (`<name>/data.pkl`, storages in `<name>/data/<key>`)."""
  with zipfile.ZipFile(path) as z:
    names = set(z.namelist())
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
      raise ValueError(f"{path} is a zip archive but not a torch.save file (no <name>/data.pkl).")
    prefix = pkls[0][: -len("data.pkl")]
    order = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"

    def storage(dtype, key, numel):
      name = f"{prefix}data/{key}"
      if name not in names:
        raise ValueError(f"{path} lacks the tensor storage {name}: the file is truncated or corrupted.")
      dtype = dtype.newbyteorder("<" if order == "little" else ">")
      data = z.read(name)
      if len(data) < numel * dtype.itemsize:
        raise ValueError(f"{path}: storage {name} holds {len(data)} bytes, {numel} x {dtype} expected.")
      return np.frombuffer(data, dtype, count=numel).astype(dtype.newbyteorder("="))

    return _Unpickler(io.BytesIO(z.read(pkls[0])), path, storage).load()


def _load_npy(path: Path):
  """A .npy file; an object array (e.g. a saved dict) is unpickled with the restricted unpickler."""
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
      raise ValueError(f"{path}: .npy format version {version} is not supported (1.0 and 2.0 are).")
    _, _, dtype = read_header[version](f)
    if dtype.hasobject:
      return _Unpickler(f, path).load()
  return np.load(path, allow_pickle=False)


def load_label_file(path) -> object:
  """Reads a torch.save (zip) or .npy file without torch and without running code from it.

  torch tensors come back as NumPy arrays; a .npy holding a pickled dict comes back as that dict.
  Raises `pickle.UnpicklingError` for any object other than NumPy arrays, tensors, dicts and lists, and
  ValueError for a file of another format.
  """
  path = Path(path)
  with open(path, "rb") as f:
    magic = f.read(6)
  try:
    if magic.startswith(b"PK"):
      obj = _load_torch_zip(path)
    elif magic == b"\x93NUMPY":
      obj = _load_npy(path)
    else:
      raise ValueError(
        f"{path} is neither a torch.save zip archive nor a .npy file (it starts with {magic!r}); files "
        "saved by torch < 1.6 (legacy format) are not read: save them again with a newer torch."
      )
  except (zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}); download it again.") from e
  if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
    obj = obj.item()  # np.save of a dict
  return obj


# ---------------------------------------------------------------------------------------------------
# CIFAR-N files
# ---------------------------------------------------------------------------------------------------


def _find_file(raw_dir: Path, name: str) -> Path | None:
  for d in (raw_dir, raw_dir / "data"):
    if (d / name).is_file():
      return d / name
  return None


def _human_file(raw_dir: Path, spec: _Spec) -> tuple[Path, Path | None]:
  """The label file in `raw_dir`, and the image-order file when it is in TFDS order."""
  for suffix in (".pt", ".npy"):
    if (path := _find_file(raw_dir, spec.human + suffix)) is not None:
      return path, None
  ordered = _find_file(raw_dir, spec.human + "_ordered.npy")
  if ordered is not None:
    order = _find_file(raw_dir, spec.image_order)
    if order is None:
      raise FileNotFoundError(
        f"{ordered} is in TFDS order and needs {spec.image_order} (in {REPO_URL}) beside it to be "
        "mapped back to the images; add it, or use the python-order file "
        f"{spec.human}.pt ({REPO_URL}/raw/main/data/{spec.human}.pt)."
      )
    return ordered, order
  raise FileNotFoundError(
    f"no CIFAR-N label file in {raw_dir} (or its data/): expected {spec.human}.pt (download "
    f"{REPO_URL}/raw/main/data/{spec.human}.pt), {spec.human}.npy, or {spec.human}_ordered.npy with "
    f"{spec.image_order}."
  )


def read_human_labels(
  path, clean_labels: np.ndarray, name: str, *, image_order=None, num_classes: int | None = None
) -> dict[str, np.ndarray]:
  """The human labels of CIFAR-N label file `path`, indexed like `clean_labels` (the tarball's train).

  Args:
    path: `CIFAR-10_human.pt` / `.npy` (python order) or `*_human_ordered.npy` (TFDS order).
    clean_labels: int [n], the CIFAR python tarball's train labels, in its order.
    name: "cifar10_n" or "cifar100_n".
    image_order: for a TFDS-order file, the path of `image_order_c*.npy` (entry j: the python index
      of the file's j-th entry).
    num_classes: the labels' range (default: 10 or 100).

  Returns:
    {TFDS feature name: int64 [n]}.

  Raises:
    ValueError, naming the file and what was expected: not a dict, keys missing, wrong length or
    range, or `clean_label` different from `clean_labels` (wrong file, or a file in another order).
  """
  spec, path = _SPECS[name], Path(path)
  num_classes = num_classes or {"cifar10": 10, "cifar100": 100}[spec.base]
  n = len(clean_labels)
  d = load_label_file(path)
  if not isinstance(d, dict):
    raise ValueError(f"{path} holds a {type(d).__name__}, not the dict of label arrays of CIFAR-N.")
  wanted = {"clean_label": ("clean_label",), **spec.fields}
  missing = [" or ".join(keys) for keys in wanted.values() if not any(k in d for k in keys)]
  if missing:
    raise ValueError(
      f"{path} lacks the key(s) {missing} (it has {sorted(map(str, d))}); expected the CIFAR-N file "
      f"{spec.human} of {REPO_URL} (data/)."
    )
  perm = None
  if image_order is not None:
    perm = np.asarray(load_label_file(image_order))
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
      raise ValueError(f"{image_order} is not a permutation of the {n} train images.")
  out = {}
  for field, keys in wanted.items():
    key = next(k for k in keys if k in d)
    v = np.asarray(d[key])
    if v.shape != (n,) or not np.issubdtype(v.dtype, np.integer):
      raise ValueError(
        f"{path}[{key!r}] has shape {v.shape} and dtype {v.dtype}; expected {n} integer labels, one per "
        f"train image of the CIFAR tarball (50000 for the real data)."
      )
    if v.min() < 0 or v.max() >= num_classes:
      raise ValueError(f"{path}[{key!r}] has labels outside [0, {num_classes}): {v.min()}..{v.max()}.")
    out[field] = v.astype(np.int64)
    if perm is not None:  # entry j of a TFDS-order file belongs to image perm[j]
      out[field][perm] = v
  file_clean = out.pop("clean_label")
  bad = np.flatnonzero(file_clean != np.asarray(clean_labels))
  if bad.size:
    i = bad[0]
    raise ValueError(
      f"{path} does not match the CIFAR tarball: its clean_label differs from the train labels at "
      f"{bad.size} of {n} images (first at index {i}: {file_clean[i]} vs {clean_labels[i]}). Wrong file, "
      "or a file in another order (e.g. *_human_ordered.npy without "
      f"its {spec.image_order}); use {spec.human}.pt from {REPO_URL} with the official python tarball."
    )
  return out


def read_side_info(path, n: int, workers: tuple[tuple[str, str], ...]) -> dict[str, np.ndarray]:
  """The workers' ids (int64) and times (float32) per train image, from `side_info_cifar*N.csv`.

  Each row covers an `Image-batch` "a--b" of train indices (python order) and gives, per worker, an
  id and a time in seconds. Every one of the `n` images must be covered exactly once.
  """
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  out = {f: np.full(n, -1, np.int64 if i % 2 == 0 else np.float32) for w in workers for i, f in enumerate(w)}
  covered = np.zeros(n, np.int64)
  for line, row in enumerate(rows[1:], start=2):
    try:
      lo, hi = (int(x) for x in row[0].split("--"))
      values = [float(x) for x in row[1:]]
    except ValueError as e:
      raise ValueError(f"{path}, line {line}: {row} is not 'a--b,id,time,...' ({e}).") from e
    if len(values) != 2 * len(workers) or not 0 <= lo <= hi < n:
      raise ValueError(
        f"{path}, line {line}: {row} is not an image batch within [0, {n}) with {len(workers)} "
        "worker id(s) and time(s): wrong file for this dataset?"
      )
    covered[lo : hi + 1] += 1
    for k, (id_field, time_field) in enumerate(workers):
      out[id_field][lo : hi + 1], out[time_field][lo : hi + 1] = values[2 * k], values[2 * k + 1]
  if not (covered == 1).all():
    i = int(np.flatnonzero(covered != 1)[0])
    raise ValueError(f"{path} covers train image {i} {covered[i]} times, not once: wrong file?")
  return out


# ---------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------


class _CifarNMixin(_readers.LocalSourceMixin):
  """CIFAR-N from the python CIFAR tarball and the authors' label file; see the module docstring."""

  def _split_generators(self, dl_manager):
    spec = _SPECS[self.name]
    url, folder, train_files, test_files, meta_file, keys = _readers.CIFAR_PY[spec.base]
    tarball = Path(url).name
    if self._raw_dir is None:
      for u in (url, _RAW_URL):
        _readers.check_reachable(u)
      got = dl_manager.download(
        {"cifar": url, "human": f"{_RAW_URL}/data/{spec.human}.pt", "side": f"{_RAW_URL}/{spec.side_info}"}
      )
      raw, (human, order), side = Path(got["cifar"]), (Path(got["human"]), None), Path(got["side"])
    else:
      if not self._raw_dir.is_dir():
        raise NotADirectoryError(
          f"--raw_dir for {self.name} is a directory holding {tarball} (or {folder}/) and {spec.human}.pt; "
          f"got the file {self._raw_dir}."
        )
      raw = self._raw_dir if (self._raw_dir / folder).is_dir() else self._raw_dir / tarball
      if not raw.exists():
        raise FileNotFoundError(
          f"{self._raw_dir} holds neither {tarball} nor {folder}/: the official python CIFAR "
          f"({url}) is needed beside {spec.human}.pt."
        )
      human, order = _human_file(self._raw_dir, spec)
      side = _find_file(self._raw_dir, spec.side_info)
    members = _readers.cifar_python_members(raw, folder)
    missing = [f for f in train_files + test_files + [meta_file] if f not in members]
    if missing:
      raise FileNotFoundError(f"{raw} lacks {missing}; expected the official {tarball}.")
    meta = _readers.unpickle(members[meta_file])
    for tfds_key, (_, names_key) in keys.items():
      self.info.features[tfds_key].names = [
        n.decode() if isinstance(n, bytes) else n for n in meta[names_key]
      ]
    load = lambda files: [_readers.unpickle(members[f]) for f in files]  # noqa: E731
    train, test = load(train_files), load(test_files)
    label_key = keys["label"][0]
    clean = np.concatenate([np.asarray(d[label_key]) for d in train])
    extra = read_human_labels(human, clean, self.name, image_order=order)
    if side is not None:
      extra.update(read_side_info(side, clean.size, spec.workers))
    return {
      "train": self._generate_examples("train_", train, extra),
      "test": self._generate_examples("test_", test, None),
    }

  def _generate_examples(self, split_prefix, batches, extra):  # pylint: disable=arguments-differ
    """Examples keyed by index, as the stock builder; `extra` (None: -1, as its test split) by index."""
    spec = _SPECS[self.name]
    keys = _readers.CIFAR_PY[spec.base][5]
    fields = list(spec.fields) + [f for w in spec.workers for f in w]
    extra = extra or {}
    for index, record in _readers.cifar_examples(batches, split_prefix, keys):
      record.update({f: extra[f][index].item() if f in extra else -1 for f in fields})
      yield index, record


class Cifar10N(_CifarNMixin, tfds_cifar10_n.Cifar10N, skip_registration=True):
  """TFDS `cifar10_n` 1.0.4 from the python CIFAR-10 tarball and `CIFAR-10_human.pt`, without TF/torch."""

  name = "cifar10_n"


class Cifar100N(_CifarNMixin, tfds_cifar100_n.Cifar100N, skip_registration=True):
  """TFDS `cifar100_n` 1.0.1 from the python CIFAR-100 tarball and `CIFAR-100_human.pt`, without TF/torch."""

  name = "cifar100_n"


BUILDERS = {"cifar10_n": Cifar10N, "cifar100_n": Cifar100N}
RAW_HINTS = {
  "cifar10_n": "/path/to/dir_with_cifar-10-python.tar.gz_and_CIFAR-10_human.pt",
  "cifar100_n": "/path/to/dir_with_cifar-100-python.tar.gz_and_CIFAR-100_human.pt",
}
