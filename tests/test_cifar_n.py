"""CIFAR-10N / CIFAR-100N built from the python CIFAR tarballs and the CIFAR-N label files, no TF/torch.

The synthetic images carry their original index (position in the python tarball's train batches) in
pixel [0, 0, 0], so every check reads which human labels landed on which image, in TFDS's shuffled
on-disk order.
"""

import collections
import io
import os
import pickle
import sys
import tarfile
import types
from unittest import mock
import zipfile

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets", reason="the 'data' extra is not installed")

from aplx import data  # noqa: E402
from aplx.data import _readers, cifar_n, prepare  # noqa: E402

N_TEST = 8
_HUMAN = {
  "cifar10_n": ("worse_label", "aggre_label", "random_label1", "random_label2", "random_label3"),
  "cifar100_n": ("noise_label",),
}
_WORKERS = {
  "cifar10_n": tuple((f"worker{k}_id", f"worker{k}_time") for k in (1, 2, 3)),
  "cifar100_n": (("worker_id", "worker_time"),),
}

# ---------------------------------------------------------------------------------------------------
# Synthetic raw files in the official formats
# ---------------------------------------------------------------------------------------------------


def _add(tar, name, obj):
  blob = pickle.dumps({k.encode(): v for k, v in obj.items()})
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  tar.addfile(info, io.BytesIO(blob))


def _images(rng, n, first):
  """n CIFAR rows (3072 bytes, channel-major) whose pixel [0, 0, 0] is first, first + 1, ..."""
  rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
  rows[:, 0] = np.arange(first, first + n)
  return rows


def _cifar(raw, name, rng, extracted=False):
  """The official python tarball of cifar10 (5 batches of 6) or cifar100 (24); returns the labels."""
  if name == "cifar10_n":
    folder, num_classes, sizes = "cifar-10-batches-py", 10, [6] * 5
    train_files, test_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
    meta = ("batches.meta", {"label_names": [f"c{i}".encode() for i in range(10)]})
  else:
    folder, num_classes, sizes, train_files, test_file = "cifar-100-python", 100, [24], ["train"], "test"
    meta = (
      "meta",
      {
        "fine_label_names": [f"f{i}".encode() for i in range(100)],
        "coarse_label_names": [f"k{i}".encode() for i in range(20)],
      },
    )
  n = sum(sizes)
  labels, test_labels = rng.integers(0, num_classes, n), rng.integers(0, num_classes, N_TEST)
  images = _images(rng, n, 0)
  members = []
  for f, lo, size in zip(train_files, np.cumsum([0] + sizes), sizes):
    members.append((f, images[lo : lo + size], labels[lo : lo + size]))
  members.append((test_file, _images(rng, N_TEST, 100), test_labels))
  tarball = raw / ("cifar-10-python.tar.gz" if num_classes == 10 else "cifar-100-python.tar.gz")
  with tarfile.open(tarball, "w:gz") as tar:
    for f, rows, y in members:
      key = {"labels": y.tolist()} if num_classes == 10 else {"fine_labels": y.tolist()}
      key.update({} if num_classes == 10 else {"coarse_labels": (y // 5).tolist()})
      _add(tar, f"{folder}/{f}", {"data": rows, **key})
    _add(tar, f"{folder}/{meta[0]}", meta[1])
  if extracted:
    with tarfile.open(tarball) as tar:
      tar.extractall(raw, filter="data")
    tarball.unlink()
  return labels, test_labels


def _human(name, labels, rng):
  """A label dict as the authors' .pt holds it (int64 arrays, python order, their key names)."""
  n, k = len(labels), (10 if name == "cifar10_n" else 100)
  if name == "cifar10_n":
    return {"clean_label": labels, **{f: rng.integers(0, k, n) for f in _HUMAN[name]}}
  return {
    "clean_label": labels,
    "noisy_label": rng.integers(0, k, n),
    "clean_coarse_label": (labels // 5).tolist(),  # in the real file too; not used
    "noisy_coarse_label": rng.integers(0, 20, n).tolist(),
  }


def _zip(path, pkl, storages=()):
  """A torch.save zip archive: <stem>/data.pkl, version, byteorder and the tensors' storages."""
  stem = path.stem
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{stem}/data.pkl", pkl)
    z.writestr(f"{stem}/byteorder", "little")
    for key, array in storages:
      z.writestr(f"{stem}/data/{key}", array.astype("<i8").tobytes())
    z.writestr(f"{stem}/version", "3\n")


def _save_pt(path, d):
  """torch.save of a dict of NumPy arrays (the authors' files): protocol 2, as torch.save writes."""
  _zip(path, pickle.dumps(d, protocol=2))


class _Storage:
  def __init__(self, array):
    self.array = array


class _Tensor:
  """Pickles as torch pickles a tensor: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride)

  def __reduce__(self):
    return (_FAKE_TORCH["torch._utils"]._rebuild_tensor_v2, self.args + (False, collections.OrderedDict()))


def _fake_torch():
  torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
  torch.LongStorage = type("LongStorage", (), {"__module__": "torch"})

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called: only pickled")

  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  return {"torch": torch, "torch._utils": utils}


_FAKE_TORCH = _fake_torch()


def _save_pt_tensors(path, tensors, storages):
  """torch.save of {key: tensor} with `storages` {key: int64 array}, written without torch."""

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, _Storage):
        key = next(k for k, v in storages.items() if v is obj.array)
        return ("storage", _FAKE_TORCH["torch"].LongStorage, key, "cpu", obj.array.size)
      return None

  buf = io.BytesIO()
  with mock.patch.dict(sys.modules, _FAKE_TORCH):  # pickle looks the globals up by module and name
    Pickler(buf, protocol=2).dump(tensors)
  _zip(path, buf.getvalue(), storages.items())


def _save_interleaved(path, d):
  """Two labels per storage, interleaved (offset 0/1, stride 2), as views of one tensor would be."""
  keys, storages, tensors = list(d), {}, {}
  for j in range(0, len(keys), 2):
    pair = [np.asarray(d[k]) for k in keys[j : j + 2]]
    storages[str(j)] = np.stack(pair + [pair[0]] * (2 - len(pair)), axis=1).ravel()
    for off, k in enumerate(keys[j : j + 2]):
      tensors[k] = _Tensor(_Storage(storages[str(j)]), off, (len(pair[0]),), (2,))
  _save_pt_tensors(path, tensors, storages)


def _side_info(path, name, n, rng):
  """side_info_cifar*N.csv: one row per batch of images (10 for CIFAR-10N, 5 for CIFAR-100N)."""
  per, workers = (10, 3) if name == "cifar10_n" else (5, 1)
  values = rng.integers(1, 900, size=(-(-n // per), 2 * workers))
  header = ["Image-batch"] + [f"w{k}" for k in range(2 * workers)]
  rows = [f"{r * per}--{min(n, r * per + per) - 1}," + ",".join(map(str, v)) for r, v in enumerate(values)]
  path.write_text("\n".join([",".join(header)] + rows))
  return np.repeat(values, per, axis=0)[:n]


def _raw_dir(tmp_path, name, fmt="pt", *, extracted=False, subdir="", side=False, seed=0):
  """A --raw_dir for `name`: tarball, human file in format `fmt` (in `subdir`), maybe side info."""
  rng = np.random.default_rng(seed)
  raw = tmp_path / "raw"
  (raw / subdir).mkdir(parents=True, exist_ok=True)
  labels, test_labels = _cifar(raw, name, rng, extracted)
  human = _human(name, labels, rng)
  stem = raw / subdir / ("CIFAR-10_human" if name == "cifar10_n" else "CIFAR-100_human")
  if fmt == "pt":
    _save_pt(stem.with_suffix(".pt"), human)
  elif fmt == "pt_tensors":
    _save_interleaved(stem.with_suffix(".pt"), {k: np.asarray(v) for k, v in human.items()})
  elif fmt == "npy":  # the python-order .npy the authors published in 2022: a dict of lists
    np.save(stem.with_suffix(".npy"), {k: np.asarray(v).tolist() for k, v in human.items()})
  elif fmt == "ordered_npy":  # TFDS order + the index file, as the stock builders' inputs
    order = rng.permutation(len(labels))
    ordered = {k: np.asarray(v)[order].tolist() for k, v in human.items()}
    np.save(raw / subdir / f"{stem.name}_ordered.npy", ordered)
    np.save(raw / ("image_order_c10.npy" if name == "cifar10_n" else "image_order_c100.npy"), order)
  workers = None
  if side:
    workers = _side_info(raw / cifar_n._SPECS[name].side_info, name, len(labels), rng)
  truth = {f: np.asarray(human["noisy_label" if f == "noise_label" else f]) for f in _HUMAN[name]}
  return raw, {"label": labels, "test_label": test_labels, "workers": workers, **truth}


# ---------------------------------------------------------------------------------------------------
# Alignment: every example gets the human labels of its original index
# ---------------------------------------------------------------------------------------------------


def _check_prepared(name, out, truth):
  n = len(truth["label"])
  src = tfds.data_source(name, split="train", data_dir=str(out), download=False)
  assert len(src) == n
  seen = []
  for j in range(n):
    ex = src[j]
    i = int(ex["image"][0, 0, 0])
    seen.append(i)
    assert ex["id"] in (f"train_{i:05d}", f"train_{i:05d}".encode())
    assert ex["label"] == truth["label"][i]
    for f in _HUMAN[name]:
      assert ex[f] == truth[f][i], (j, i, f)
    for k, (id_field, time_field) in enumerate(_WORKERS[name]):
      want = (-1, -1) if truth["workers"] is None else truth["workers"][i, 2 * k : 2 * k + 2]
      assert (ex[id_field], ex[time_field]) == tuple(want)
  assert sorted(seen) == list(range(n)) and seen != sorted(seen)  # on disk in TFDS's shuffled order

  test = tfds.data_source(name, split="test", data_dir=str(out), download=False)
  assert len(test) == N_TEST
  for j in range(N_TEST):
    ex = test[j]
    i = int(ex["image"][0, 0, 0]) - 100
    assert ex["label"] == truth["test_label"][i]
    assert all(ex[f] == -1 for f in _HUMAN[name] + sum(_WORKERS[name], ()))

  # The pipeline reads them unchanged: ids are data-source indices, noisy labels the human ones.
  field = _HUMAN[name][0]
  ds = data.load_dataset(name, data_dir=str(out), noise=f"human:{field}", download=False, cache=False)
  orig = ds.train_images[:, 0, 0, 0].astype(int)
  np.testing.assert_array_equal(orig, seen)
  np.testing.assert_array_equal(ds.train_ids, np.arange(n))
  np.testing.assert_array_equal(ds.train_clean_labels, truth["label"][orig])
  np.testing.assert_array_equal(ds.train_noisy_labels, truth[field][orig])
  for f in _HUMAN[name]:
    np.testing.assert_array_equal(ds.extra[f], truth[f][orig])


@pytest.mark.parametrize("fmt", ["pt", "pt_tensors", "npy", "ordered_npy"])
def test_cifar10_n_human_labels_follow_the_original_index(tmp_path, fmt):
  raw, truth = _raw_dir(tmp_path, "cifar10_n", fmt, side=fmt == "pt")
  out = tmp_path / "tfds"
  before = set(sys.modules)  # Other test modules may have imported torch (the bench extra's tests).
  prepare.main(["cifar10_n", "--raw_dir", str(raw), "--data_dir", str(out)])
  assert not {"tensorflow", "torch"} & (set(sys.modules) - before)  # Prepared without either.
  _check_prepared("cifar10_n", out, truth)


def test_cifar100_n_from_a_repo_layout_and_extracted_dir(tmp_path):
  raw, truth = _raw_dir(tmp_path, "cifar100_n", "pt", extracted=True, subdir="data", side=True)
  out = tmp_path / "tfds"
  prepare.prepare("cifar100_n", data_dir=str(out), raw_dir=str(raw))
  _check_prepared("cifar100_n", out, truth)
  src = tfds.data_source("cifar100_n", split="train", data_dir=str(out), download=False)
  assert all(src[j]["coarse_label"] == truth["label"][src[j]["image"][0, 0, 0]] // 5 for j in range(len(src)))


@pytest.mark.parametrize("name", ["cifar10_n", "cifar100_n"])
def test_same_version_and_features_as_the_stock_builder(tmp_path, name):
  raw, _ = _raw_dir(tmp_path, name)
  out = tmp_path / "tfds"
  prepare.prepare(name, data_dir=str(out), raw_dir=str(raw))
  built = tfds.builder(name, data_dir=str(out))  # TFDS's registered (stock) builder reads it
  stock = tfds.builder(name, data_dir=str(tmp_path / "empty"))
  assert built.info.version == stock.VERSION and (out / name / str(stock.VERSION)).is_dir()
  assert built.info.features.get_tensor_info() == stock.info.features.get_tensor_info()
  assert set(built.info.splits) == {"train", "test"}


def test_download_without_raw_dir(tmp_path, monkeypatch):
  raw, truth = _raw_dir(tmp_path, "cifar10_n", side=True)
  local = {
    "cifar-10-python.tar.gz": raw / "cifar-10-python.tar.gz",
    "CIFAR-10_human.pt": raw / "CIFAR-10_human.pt",
    "side_info_cifar10N.csv": raw / "side_info_cifar10N.csv",
  }
  monkeypatch.setattr(_readers, "check_reachable", lambda url: None)
  fake_download = lambda self, urls: {k: local[u.split("/")[-1]] for k, u in urls.items()}
  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  out = tmp_path / "tfds"
  prepare.prepare("cifar10_n", data_dir=str(out))
  _check_prepared("cifar10_n", out, truth)


# ---------------------------------------------------------------------------------------------------
# Errors name the file and what was expected
# ---------------------------------------------------------------------------------------------------


def _prepare(tmp_path, raw, name="cifar10_n"):
  prepare.prepare(name, data_dir=str(tmp_path / "tfds"), raw_dir=str(raw))


def test_missing_files(tmp_path):
  raw, _ = _raw_dir(tmp_path, "cifar10_n")
  (raw / "CIFAR-10_human.pt").unlink()
  with pytest.raises(FileNotFoundError, match=r"no CIFAR-N label file .*CIFAR-10_human\.pt"):
    _prepare(tmp_path, raw)
  np.save(raw / "CIFAR-10_human_ordered.npy", {})
  with pytest.raises(FileNotFoundError, match=r"needs image_order_c10\.npy"):
    _prepare(tmp_path, raw)
  (raw / "cifar-10-python.tar.gz").unlink()
  with pytest.raises(FileNotFoundError, match=r"neither cifar-10-python\.tar\.gz nor cifar-10-batches-py/"):
    _prepare(tmp_path, raw)
  with pytest.raises(NotADirectoryError, match="is a directory holding"):
    _prepare(tmp_path, raw / "CIFAR-10_human_ordered.npy")


def _rewrite(raw, edit, name="CIFAR-10_human.pt"):
  """Replaces the label file by edit(its dict)."""
  _save_pt(raw / name, edit(cifar_n.load_label_file(raw / name)))


def test_malformed_label_files(tmp_path):
  raw, _ = _raw_dir(tmp_path, "cifar10_n")
  good = (raw / "CIFAR-10_human.pt").read_bytes()
  cases = [
    (lambda d: {k: v for k, v in d.items() if k != "worse_label"}, r"lacks the key\(s\) \['worse_label'\]"),
    (lambda d: {k: v[:-1] for k, v in d.items()}, r"'clean_label'\] has shape \(29,\).*expected 30 integer"),
    (lambda d: {**d, "aggre_label": d["aggre_label"] + 10}, r"'aggre_label'\] has labels outside \[0, 10\)"),
    (lambda d: [d], "holds a list, not the dict"),
  ]
  for edit, match in cases:
    (raw / "CIFAR-10_human.pt").write_bytes(good)
    _rewrite(raw, edit)
    with pytest.raises(ValueError, match=match):
      _prepare(tmp_path, raw)
  (raw / "CIFAR-10_human.pt").write_bytes(good[: len(good) // 2])
  with pytest.raises(ValueError, match="truncated or corrupted"):
    _prepare(tmp_path, raw)
  (raw / "CIFAR-10_human.pt").write_bytes(b"\x80\x02legacy torch format")
  with pytest.raises(ValueError, match="neither a torch.save zip archive nor a .npy file"):
    _prepare(tmp_path, raw)


def test_clean_label_mismatch_is_an_error(tmp_path):
  """The right labels in another order (here reversed) are caught by clean_label, for both datasets."""
  for name, stem in [("cifar10_n", "CIFAR-10_human.pt"), ("cifar100_n", "CIFAR-100_human.pt")]:
    raw, _ = _raw_dir(tmp_path / name, name)
    _rewrite(raw, lambda d: {k: np.asarray(v)[::-1] for k, v in d.items()}, stem)
    with pytest.raises(ValueError, match=rf"{stem} does not match the CIFAR tarball: .* Wrong file"):
      _prepare(tmp_path / name, raw, name)


def test_ordered_file_needs_its_own_order(tmp_path):
  raw, _ = _raw_dir(tmp_path, "cifar10_n", "ordered_npy", seed=1)
  np.save(raw / "image_order_c10.npy", np.arange(30))  # a permutation, but not the file's
  with pytest.raises(ValueError, match="does not match the CIFAR tarball"):
    _prepare(tmp_path, raw)
  np.save(raw / "image_order_c10.npy", np.zeros(30, np.int64))
  with pytest.raises(ValueError, match="is not a permutation of the 30 train images"):
    _prepare(tmp_path, raw)


def test_side_info_must_cover_every_image_once(tmp_path):
  raw, _ = _raw_dir(tmp_path, "cifar10_n", side=True)
  csv = raw / "side_info_cifar10N.csv"
  csv.write_text("\n".join(csv.read_text().splitlines()[:-1]))  # last batch missing
  with pytest.raises(ValueError, match="covers train image 20 0 times"):
    _prepare(tmp_path, raw)
  csv.write_text("Image-batch,a,b\n0--29,1,2\n")  # CIFAR-100N's layout: 1 worker, not 3
  with pytest.raises(ValueError, match="with 3 worker id"):
    _prepare(tmp_path, raw)


# ---------------------------------------------------------------------------------------------------
# The restricted unpickler
# ---------------------------------------------------------------------------------------------------


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_other_globals(tmp_path):
  marker = tmp_path / "ran"
  pt, npy = tmp_path / "evil.pt", tmp_path / "evil.npy"
  _save_pt(pt, {"clean_label": np.arange(3), "x": _Evil(marker)})
  np.save(npy, {"clean_label": [0, 1], "x": _Evil(marker)}, allow_pickle=True)
  for path in (pt, npy):
    with pytest.raises(pickle.UnpicklingError, match=rf"{path.name} holds a (posix|os)\.system object"):
      cifar_n.load_label_file(path)
  assert not marker.exists()
  # A tensor whose strides reach past its storage is refused, not read from beyond the buffer.
  storage = np.arange(4)
  _save_pt_tensors(tmp_path / "oob.pt", {"t": _Tensor(_Storage(storage), 1, (4,), (1,))}, {"0": storage})
  with pytest.raises(pickle.UnpicklingError, match="reaches past its storage"):
    cifar_n.load_label_file(tmp_path / "oob.pt")


def test_torch_tensors_are_rebuilt_with_offsets_and_strides(tmp_path):
  storage = np.arange(12, dtype=np.int64)
  t = {
    "full": _Tensor(_Storage(storage), 0, (12,), (1,)),
    "transposed": _Tensor(_Storage(storage), 0, (4, 3), (1, 4)),  # a .t() of a 3 x 4 tensor
    "window": _Tensor(_Storage(storage), 5, (2, 2), (4, 1)),
    "scalar": _Tensor(_Storage(storage), 7, (), ()),
  }
  _save_pt_tensors(tmp_path / "t.pt", t, {"0": storage})
  got = cifar_n.load_label_file(tmp_path / "t.pt")
  np.testing.assert_array_equal(got["full"], storage)
  np.testing.assert_array_equal(got["transposed"], storage.reshape(3, 4).T)
  np.testing.assert_array_equal(got["window"], storage.reshape(3, 4)[1:3, 1:3])
  assert got["scalar"].shape == () and got["scalar"] == 7
