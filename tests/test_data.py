"""Tests of aplx.data: offline TFDS preparation, noisy datasets, deterministic batches, CIFAR mocks."""

import io
import itertools
import os
import pickle
import shutil
import socket
import tarfile
import time

import conftest
import numpy as np
import pytest
import tensorflow_datasets as tfds

from aplx import data, noise
from aplx.data import prepare, preprocess

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------------------------------------------
# Offline MNIST
# ---------------------------------------------------------------------------------------------------


def test_mnist_prepared_offline_is_a_standard_tfds_dataset(mnist_data_dir):
  builder = tfds.builder("mnist", data_dir=mnist_data_dir)
  assert builder.is_prepared() and str(builder.version) == "3.0.1"
  assert builder.info.splits["train"].num_examples == 60000
  src = tfds.data_source("mnist", split="test", data_dir=mnist_data_dir, download=False)
  ex = src[0]
  assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
  raw = prepare.read_idx(f"{prepare.default_mnist_dir()}/t10k-images-idx3-ubyte.gz")
  assert any(np.array_equal(ex["image"][..., 0], raw[i]) for i in range(10000))


def test_mnist_counts_and_ram_arrays(mnist_clean):
  ds = mnist_clean
  assert np.bincount(ds.train_clean_labels).tolist() == MNIST_TRAIN_COUNTS
  assert np.bincount(ds.test_labels).tolist() == MNIST_TEST_COUNTS
  assert ds.num_train == 60000 and ds.num_classes == 10 and ds.image_shape == (28, 28, 1)
  assert ds.train_images.dtype == np.uint8 and ds.train_images.shape == (60000, 28, 28, 1)
  np.testing.assert_array_equal(ds.train_ids, np.arange(60000))
  np.testing.assert_array_equal(ds.train_noisy_labels, ds.train_clean_labels)


def test_mnist_noise_through_load_dataset(mnist_data_dir, mnist_clean):
  ds = data.load_dataset(
    "mnist", data_dir=mnist_data_dir, download=False, noise="sym", rate=0.8, noise_seed=5
  )
  assert ds.noise["realised_rate"] == 0.8
  assert (ds.train_noisy_labels != ds.train_clean_labels).sum() == 48000
  np.testing.assert_array_equal(  # pure function of (seed, id): same as calling aplx.noise directly
    ds.train_noisy_labels, noise.symmetric(mnist_clean.train_clean_labels, rate=0.8, num_classes=10, seed=5)
  )
  asym = data.load_dataset("mnist", data_dir=mnist_data_dir, download=False, noise="asym", rate=0.4)
  moved = asym.train_noisy_labels != asym.train_clean_labels
  pairs = set(zip(asym.train_clean_labels[moved].tolist(), asym.train_noisy_labels[moved].tolist()))
  assert pairs == {(7, 1), (2, 7), (5, 6), (6, 5), (3, 8)}


def test_missing_data_dir_says_how_to_prepare(tmp_path, monkeypatch):
  with pytest.raises(
    FileNotFoundError,
    match=r"python -m aplx\.data\.prepare cifar10 --raw_dir "
    r".*cifar-10-python\.tar\.gz --data_dir " + str(tmp_path),
  ):
    data.load_dataset("cifar10", data_dir=str(tmp_path), download=False)
  monkeypatch.setattr(prepare, "default_mnist_dir", lambda: None)
  with pytest.raises(FileNotFoundError, match=r"python -m aplx\.data\.prepare mnist --raw_dir"):
    data.ensure_prepared("mnist", str(tmp_path), download=False)


def _mnist_copy(tmp_path):
  """The four MNIST files and their SHA256SUMS, copied so that a test may damage them."""
  src = prepare.default_mnist_dir()
  raw = tmp_path / "raw"
  raw.mkdir()
  for name in os.listdir(src):
    shutil.copy(os.path.join(src, name), raw / name)
  return raw


def test_truncated_idx_names_the_file(tmp_path):
  raw = _mnist_copy(tmp_path)
  path = raw / "t10k-labels-idx1-ubyte.gz"
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz is truncated or corrupted"):
    prepare.read_idx(path)


def test_sha256sums_beside_the_files_are_checked(tmp_path):
  raw = _mnist_copy(tmp_path)
  assert (raw / "SHA256SUMS").exists()
  prepare.verify_sha256sums(raw, sorted(raw.glob("*.gz")))  # The originals pass.
  path = raw / "t10k-labels-idx1-ubyte.gz"
  data_bytes = bytearray(path.read_bytes())
  data_bytes[-1] ^= 1
  path.write_bytes(bytes(data_bytes))
  with pytest.raises(
    ValueError, match=r"t10k-labels-idx1-ubyte\.gz does not match its checksum in .*SHA256SUMS"
  ):
    prepare.prepare("mnist", data_dir=str(tmp_path / "tfds"), raw_dir=str(raw))


def test_half_made_tfds_directory_is_an_error_not_a_dataset(mnist_data_dir, tmp_path):
  copy = tmp_path / "tfds"
  shutil.copytree(mnist_data_dir, copy)
  version_dir = copy / "mnist" / "3.0.1"
  victim = sorted(version_dir.glob("mnist-test.array_record*"))[0]
  victim.unlink()
  with pytest.raises(FileNotFoundError, match=r"is incomplete: split 'test' lacks mnist-test\.array_record"):
    data.ensure_prepared("mnist", str(copy), download=False)


def test_offline_download_fails_fast(tmp_path, monkeypatch):
  monkeypatch.delenv("APLX_MNIST_DIR", raising=False)

  def no_network(*args, **kwargs):
    raise OSError("Network is unreachable")

  monkeypatch.setattr(socket, "create_connection", no_network)
  start = time.time()
  with pytest.raises(
    RuntimeError, match=r"(?s)cannot reach storage\.googleapis\.com.*no network\?.*--raw_dir"
  ):
    data.ensure_prepared("mnist", str(tmp_path), download=True)
  assert time.time() - start < 30  # Not minutes of TFDS retries.


def test_subset_is_class_balanced_and_seed_independent(mnist_data_dir):
  a = data.load_dataset(
    "mnist", data_dir=mnist_data_dir, download=False, subset=1000, noise="sym", rate=0.4, noise_seed=0
  )
  b = data.load_dataset(
    "mnist", data_dir=mnist_data_dir, download=False, subset=1000, noise="sym", rate=0.4, noise_seed=1
  )
  np.testing.assert_array_equal(a.train_ids, b.train_ids)
  assert np.bincount(a.train_clean_labels).tolist() == [100] * 10
  assert np.all(np.diff(a.train_ids) > 0)
  # first-by-id: the 100 lowest ids of every class
  full = data.load_dataset("mnist", data_dir=mnist_data_dir, download=False).train_clean_labels
  for c in range(10):
    np.testing.assert_array_equal(a.train_ids[a.train_clean_labels == c], np.flatnonzero(full == c)[:100])
  assert (a.train_noisy_labels != a.train_clean_labels).sum() == 400
  with pytest.raises(ValueError, match=r"subset must be in \[1, 60000\]"):
    data.load_dataset("mnist", data_dir=mnist_data_dir, download=False, subset=0)


# ---------------------------------------------------------------------------------------------------
# Train batches: determinism, resume, shards, stable ids
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(mnist_data_dir):
  return data.load_dataset(
    "mnist", data_dir=mnist_data_dir, download=False, subset=1000, noise="sym", rate=0.6, noise_seed=3
  )


def _take(it, n):
  return list(itertools.islice(it, n))


def test_train_batch_contents(small):
  b = next(data.train_batches(small, global_batch_size=100, seed=0))
  assert b["image"].shape == (100, 28, 28, 1) and b["image"].dtype == np.float32
  assert b["label"].dtype == np.int32 and b["clean_label"].dtype == np.int32
  rows = np.searchsorted(small.train_ids, b["id"])
  np.testing.assert_array_equal(small.train_ids[rows], b["id"])
  np.testing.assert_array_equal(b["label"], small.train_noisy_labels[rows])
  np.testing.assert_array_equal(b["clean_label"], small.train_clean_labels[rows])
  expect = (small.train_images[rows].astype(np.float32) / 255 - 0.1307) / 0.3081
  np.testing.assert_allclose(b["image"], expect, rtol=1e-5, atol=1e-5)


def test_epochs_are_permutations_and_seeded(small):
  assert data.steps_per_epoch(small, 300) == 3  # drop_remainder: 900 of 1000 per epoch
  batches = _take(data.train_batches(small, global_batch_size=300, seed=1), 6)
  e0 = np.concatenate([b["id"] for b in batches[:3]])
  e1 = np.concatenate([b["id"] for b in batches[3:]])
  assert len(set(e0.tolist())) == 900 and len(set(e1.tolist())) == 900
  assert not np.array_equal(e0, e1)
  again = _take(data.train_batches(small, global_batch_size=300, seed=1), 6)
  other = _take(data.train_batches(small, global_batch_size=300, seed=2), 1)
  for x, y in zip(batches, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not np.array_equal(batches[0]["id"], other[0]["id"])


@pytest.mark.parametrize("multiple_of,last", [(2, 100), (8, 96), (64, 64), (128, 0)])
def test_partial_last_batch_as_pytorch_drop_last_false(small, multiple_of, last):
  """drop_remainder=False: 1000 = 3 x 300 + a last batch of 100 (rounded down to the device multiple)."""
  layout = {"drop_remainder": False, "multiple_of": multiple_of}
  spe = data.steps_per_epoch(small, 300, **layout)
  assert spe == 3 + (last > 0)
  batches = _take(data.train_batches(small, global_batch_size=300, seed=1, **layout), 2 * spe)
  assert [b["id"].size for b in batches] == [300, 300, 300] + [last] * (last > 0) + [300] * 3 + [last] * (
    last > 0
  )
  full = _take(data.train_batches(small, global_batch_size=300, seed=1), 3)
  for x, y in zip(batches, full):  # The full batches are those of drop_remainder=True.
    np.testing.assert_array_equal(x["id"], y["id"])
  ids = np.concatenate([b["id"] for b in batches[:spe]])
  assert len(set(ids.tolist())) == 900 + last
  # Two processes: each gets half of the last batch, disjoint, and together the global batch.
  halves = [
    data.make_train_batch(
      small, spe - 1, global_batch_size=300, seed=1, process_index=p, process_count=2, augment=False, **layout
    )["id"]
    for p in range(2)
  ]
  np.testing.assert_array_equal(np.concatenate(halves), batches[spe - 1]["id"])


def test_partial_last_batch_needs_a_process_multiple(small):
  with pytest.raises(ValueError, match="multiple of process_count"):
    data.make_train_batch(
      small,
      3,
      global_batch_size=300,
      seed=1,
      process_index=0,
      process_count=2,
      drop_remainder=False,
      multiple_of=1,
    )


def test_ids_and_noise_stable_across_shuffles(small):
  """Whatever the shuffle seed, an id always carries the same noisy label."""
  seen = {}
  for seed in range(3):
    for b in _take(data.train_batches(small, global_batch_size=100, seed=seed), 10):
      for i, y in zip(b["id"].tolist(), b["label"].tolist()):
        assert seen.setdefault(i, y) == y
  assert len(seen) == 1000


@pytest.mark.parametrize("start", [0, 2, 3, 7])  # step 3 = start of epoch 2, 7 = mid epoch 3
def test_resume_from_start_step_equals_continuing(small, start):
  full = _take(data.train_batches(small, global_batch_size=300, seed=4), 9)
  resumed = _take(data.train_batches(small, global_batch_size=300, seed=4, start_step=start), 9 - start)
  for x, y in zip(full[start:], resumed):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_partition_the_global_batch(small, count):
  ref = _take(data.train_batches(small, global_batch_size=200, seed=0), 6)
  shards = [
    _take(data.train_batches(small, global_batch_size=200, seed=0, process_index=p, process_count=count), 6)
    for p in range(count)
  ]
  for step in range(6):
    for k in ref[step]:
      np.testing.assert_array_equal(np.concatenate([shards[p][step][k] for p in range(count)]), ref[step][k])


def test_eval_batches_pad_and_mask(small):
  batches = list(data.eval_batches(small, batch_size=3000))
  assert len(batches) == 4
  assert all(b["image"].shape == (3000, 28, 28, 1) for b in batches)
  assert [b["mask"].sum() for b in batches] == [3000, 3000, 3000, 1000]
  assert np.all(batches[-1]["image"][1000:] == 0)
  labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
  np.testing.assert_array_equal(labels, small.test_labels)
  # two processes: each global batch split in halves, together the same rows
  halves = [
    list(data.eval_batches(small, batch_size=3000, process_index=p, process_count=2)) for p in range(2)
  ]
  for s in range(4):
    both = np.concatenate([halves[0][s]["label"], halves[1][s]["label"]])
    np.testing.assert_array_equal(both, batches[s]["label"])
  assert [h["mask"].sum() for h in halves[1]] == [1500, 1500, 1500, 0]
  train = next(data.eval_batches(small, batch_size=64, split="train"))
  np.testing.assert_array_equal(train["noisy_label"], small.train_noisy_labels[:64])


def test_batch_bad_inputs(small):
  with pytest.raises(ValueError, match="must be divisible by process_count=3"):
    next(data.train_batches(small, global_batch_size=100, seed=0, process_count=3))
  with pytest.raises(ValueError, match=r"process_index must be in \[0, 2\), got 2"):
    next(data.train_batches(small, global_batch_size=100, seed=0, process_index=2, process_count=2))
  with pytest.raises(ValueError, match="exceeds the 1000 training examples"):
    data.steps_per_epoch(small, 1024)
  with pytest.raises(ValueError, match="start_step must be >= 0"):
    data.train_batches(small, global_batch_size=100, seed=0, start_step=-1)
  with pytest.raises(ValueError, match="split must be 'test', 'train', 'val'"):
    next(data.eval_batches(small, batch_size=10, split="validation"))
  with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; known: \['cifar10', "):
    data.load_dataset("svhn")


# ---------------------------------------------------------------------------------------------------
# Augmentation against a loop reference
# ---------------------------------------------------------------------------------------------------


def _reference_augment(img, u_oy, u_ox, u_flip, u_rot, max_degrees):
  """Pad 4 -> crop -> flip -> rotate (nearest, zero fill), one image, explicit loops."""
  h, w, _ = img.shape
  oy, ox = int(np.floor(u_oy * 9)), int(np.floor(u_ox * 9))
  out = np.pad(img, ((4, 4), (4, 4), (0, 0)))[oy : oy + h, ox : ox + w]
  if u_flip < 0.5:
    out = out[:, ::-1]
  if not max_degrees:
    return out
  theta = np.deg2rad((2 * u_rot - 1) * max_degrees)
  # cos and sin rounded to multiples of 2^-16 (the library's fixed point); every sum below is then
  # exact in float64, and the source pixel is rounded half up.
  cos, sin = np.rint(np.cos(theta) * 2**16) / 2**16, np.rint(np.sin(theta) * 2**16) / 2**16
  assert abs(cos - np.cos(theta)) <= 2**-17 and abs(sin - np.sin(theta)) <= 2**-17
  rot = np.zeros_like(out)
  c = (h - 1) / 2
  for y in range(h):
    for x in range(w):
      dy, dx = y - c, x - c
      sy = int(np.floor(cos * dy - sin * dx + c + 0.5))
      sx = int(np.floor(sin * dy + cos * dx + c + 0.5))
      if 0 <= sy < h and 0 <= sx < w:
        rot[y, x] = out[sy, sx]
  return rot


@pytest.mark.parametrize("kind,degrees", [("crop_flip", 0.0), ("crop_flip_rotate", 20.0)])
def test_augmentation_matches_reference(kind, degrees):
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, size=(16, 32, 32, 3), dtype=np.uint8)
  ids = np.arange(100, 116)
  out = preprocess.augment(images, ids, kind=kind, seed=3, epoch=2)
  u = [preprocess.uniform(3, 2, ids, s) for s in range(4)]
  for i in range(16):
    ref = _reference_augment(images[i], u[0][i], u[1][i], u[2][i], u[3][i], degrees)
    np.testing.assert_array_equal(out[i], ref)
  # ranges: crop offsets cover 0..8, both flips, angles within +-20 degrees
  many = np.arange(5000)
  assert set(np.floor(preprocess.uniform(0, 0, many, 0) * 9).astype(int)) == set(range(9))
  assert 0.45 < (preprocess.uniform(0, 0, many, 2) < 0.5).mean() < 0.55
  again = preprocess.augment(images, ids, kind=kind, seed=3, epoch=2)
  np.testing.assert_array_equal(out, again)
  assert not np.array_equal(out, preprocess.augment(images, ids, kind=kind, seed=3, epoch=3))


# ---------------------------------------------------------------------------------------------------
# CIFAR through tfds.testing.mock_data
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name,k,aug",
  [
    ("cifar10", 10, "crop_flip"),
    ("cifar100", 100, "crop_flip_rotate"),
    ("cifar10_n", 10, "crop_flip"),
    ("cifar100_n", 100, "crop_flip_rotate"),
  ],
)
def test_cifar_pipelines_on_mock_data(tmp_path, name, k, aug):
  with conftest.mock_tfds(256):
    ds = data.load_dataset(name, data_dir=str(tmp_path), noise="sym", rate=0.4, noise_seed=0)
  assert ds.num_classes == k and ds.augment == aug and ds.image_shape == (32, 32, 3)
  assert ds.train_images.shape == (256, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert (ds.train_noisy_labels != ds.train_clean_labels).sum() == int(0.4 * 256)
  mean, std = np.array(ds.mean), np.array(ds.std)
  it = data.train_batches(ds, global_batch_size=64, seed=0)
  b = _take(it, 5)
  for x in b:
    assert x["image"].shape == (64, 32, 32, 3) and x["image"].dtype == np.float32
    assert x["label"].dtype == np.int32 and x["id"].dtype == np.int32
    assert np.all(x["image"] >= (0 - mean) / std - 1e-5) and np.all(x["image"] <= (1 - mean) / std + 1e-5)
    assert np.isclose(x["image"], -mean / std, atol=1e-5).all(-1).any()  # black padding present
  again = _take(data.train_batches(ds, global_batch_size=64, seed=0), 5)
  for x, y in zip(b, again):
    np.testing.assert_array_equal(x["image"], y["image"])
  plain = next(data.train_batches(ds, global_batch_size=64, seed=0, augment=False))
  assert not np.array_equal(plain["image"], b[0]["image"])
  ev = list(data.eval_batches(ds, batch_size=100))
  assert len(ev) == 3 and ev[-1]["mask"].sum() == 56


def test_human_noise_and_cifar100_asym_on_mock(tmp_path):
  with conftest.mock_tfds(200):
    h = data.load_dataset("cifar10_n", data_dir=str(tmp_path), noise="human:worse_label")
    np.testing.assert_array_equal(h.train_noisy_labels, h.extra["worse_label"])
    with pytest.raises(ValueError, match=r"available: \['aggre_label', 'random_label1'"):
      data.load_dataset("cifar10_n", data_dir=str(tmp_path), noise="human:noise_label")
    with pytest.raises(ValueError, match="human noise field 'worse_label' is not available"):
      data.load_dataset("cifar10", data_dir=str(tmp_path), noise="human:worse_label")
    a = data.load_dataset("cifar100", data_dir=str(tmp_path), noise="asym", rate=0.4, group="consecutive")
    moved = a.train_noisy_labels != a.train_clean_labels
    np.testing.assert_array_equal(a.train_noisy_labels[moved] // 5, a.train_clean_labels[moved] // 5)
    idn = data.load_dataset("cifar10", data_dir=str(tmp_path), noise="idn", rate=0.3)
    assert 0.1 < idn.noise["realised_rate"] < 0.5


# ---------------------------------------------------------------------------------------------------
# CIFAR from (tiny, synthetic) official python tarballs
# ---------------------------------------------------------------------------------------------------


def _pickled(d):
  return pickle.dumps({k.encode(): v for k, v in d.items()})


def _add(tar, name, blob):
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  tar.addfile(info, io.BytesIO(blob))


def test_prepare_cifar100_from_python_tarball(tmp_path):
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, size=(30, 3072), dtype=np.uint8)
  test = rng.integers(0, 256, size=(10, 3072), dtype=np.uint8)
  fine_tr, fine_te = rng.integers(0, 100, 30), rng.integers(0, 100, 10)
  tarball = tmp_path / "cifar-100-python.tar.gz"
  with tarfile.open(tarball, "w:gz") as tar:
    _add(
      tar,
      "cifar-100-python/train",
      _pickled({"data": train, "fine_labels": fine_tr.tolist(), "coarse_labels": (fine_tr // 5).tolist()}),
    )
    _add(
      tar,
      "cifar-100-python/test",
      _pickled({"data": test, "fine_labels": fine_te.tolist(), "coarse_labels": (fine_te // 5).tolist()}),
    )
    _add(
      tar,
      "cifar-100-python/meta",
      _pickled(
        {
          "fine_label_names": [f"f{i}".encode() for i in range(100)],
          "coarse_label_names": [f"c{i}".encode() for i in range(20)],
        }
      ),
    )
  out = tmp_path / "tfds"
  prepare.main(["cifar100", "--raw_dir", str(tarball), "--data_dir", str(out)])
  src = tfds.data_source("cifar100", split="train", data_dir=str(out), download=False)
  assert len(src) == 30
  got = {src[i]["id"]: src[i] for i in range(30)}
  for i in range(30):
    ex = got[f"train_{i:05d}".encode()] if f"train_{i:05d}".encode() in got else got[f"train_{i:05d}"]
    np.testing.assert_array_equal(ex["image"], train[i].reshape(3, 32, 32).transpose(1, 2, 0))
    assert ex["label"] == fine_tr[i] and ex["coarse_label"] == fine_tr[i] // 5
  ds = data.load_dataset("cifar100", data_dir=str(out), download=False, noise="asym", rate=1.0)
  moved = ds.train_noisy_labels != ds.train_clean_labels
  assert moved.any()
  np.testing.assert_array_equal(ds.extra["coarse_label"], ds.train_clean_labels // 5)


def test_prepare_rejects_unknown_and_missing(tmp_path):
  with pytest.raises(ValueError, match="not 'svhn'"):
    prepare.prepare("svhn", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="--raw_dir /nonexistent does not exist"):
    prepare.prepare("cifar10", data_dir=str(tmp_path), raw_dir="/nonexistent")


# ---------------------------------------------------------------------------------------------------
# Slow
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_idn_on_full_mnist(mnist_data_dir):
  ds = data.load_dataset("mnist", data_dir=mnist_data_dir, download=False, noise="idn", rate=0.4)
  assert ds.noise["realised_rate"] == pytest.approx(0.4, abs=0.02)
  T = noise.realised_transition_matrix(ds.train_clean_labels, ds.train_noisy_labels, 10)
  # Instance-dependent: flips spread over many targets, and every class keeps a majority of its labels.
  assert (T - np.diag(np.diag(T)) > 0).sum() > 30 and np.diag(T).min() > 0.3


def test_preparing_from_local_files_silences_tfds_progress_bars(tmp_path, monkeypatch):
  """Nothing is downloaded: no 'Dl Completed... Unknown size' bars on stderr."""
  from tensorflow_datasets.core.utils import tqdm_utils

  monkeypatch.setattr(tqdm_utils, "_active", True)
  raw = _mnist_copy(tmp_path)
  path = raw / "t10k-labels-idx1-ubyte.gz"
  path.write_bytes(path.read_bytes()[:-100])  # Fail fast after the setup: the bars matter, not the data.
  with pytest.raises(Exception):
    prepare.prepare("mnist", data_dir=str(tmp_path / "tfds"), raw_dir=str(raw))
  assert tqdm_utils._active is False
