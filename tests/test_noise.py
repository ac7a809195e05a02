"""Tests of aplx.noise: exact protocols, mappings, convergence to T, determinism, bad input."""

import numpy as np
import pytest

from aplx import noise

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _balanced(n_per_class, k, seed=0):
  labels = np.repeat(np.arange(k), n_per_class)
  return np.random.default_rng(seed).permutation(labels)


@pytest.fixture(scope="module")
def mnist_labels(mnist_clean):
  return mnist_clean.train_clean_labels


# ---------------------------------------------------------------------------------------------------
# Symmetric
# ---------------------------------------------------------------------------------------------------


def test_mnist_class_counts(mnist_labels):
  assert np.bincount(mnist_labels).tolist() == MNIST_TRAIN_COUNTS


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 0.8])
def test_symmetric_exact_rate_on_mnist(mnist_labels, rate):
  noisy = noise.symmetric(mnist_labels, rate=rate, num_classes=10, seed=1)
  flipped = noisy != mnist_labels
  assert flipped.sum() == int(rate * 60000)
  assert noise.realised_rate(mnist_labels, noisy) == pytest.approx(rate, abs=0)
  # balanced across clean classes: int(rate * n) / K per class
  per_class = np.bincount(mnist_labels[flipped], minlength=10)
  assert per_class.tolist() == [int(rate * 60000) // 10] * 10


def test_symmetric_targets_uniform_over_other_classes(mnist_labels):
  noisy = noise.symmetric(mnist_labels, rate=0.8, num_classes=10, seed=3)
  T = noise.realised_transition_matrix(mnist_labels, noisy, 10)
  flipped_to = T[~np.eye(10, dtype=bool)].reshape(10, 9)
  # each row: 4800 flips over 9 classes, ~533 each; 5 sigma ~ 110 / ~5900 ~ 0.02
  expected = 4800 / np.array(MNIST_TRAIN_COUNTS) / 9
  np.testing.assert_allclose(flipped_to, np.broadcast_to(expected[:, None], (10, 9)), atol=0.02)
  assert np.all(np.diag(T) > 0)


def test_symmetric_remainder_is_still_exact():
  labels = np.arange(1003) % 10
  noisy = noise.symmetric(labels, rate=0.3, num_classes=10, seed=0)
  assert (noisy != labels).sum() == 300
  authors = noise.symmetric(labels, rate=0.33, num_classes=10, seed=0, authors_quota=True)
  assert (authors != labels).sum() == 10 * (int(0.33 * 1003) // 10)


def test_symmetric_small_class_spills_over():
  labels = np.array([0] * 5 + [1] * 100 + [2] * 100)
  noisy = noise.symmetric(labels, rate=0.6, num_classes=3, seed=0)  # 123 flips, class 0 has 5
  assert (noisy != labels).sum() == 123
  assert np.all(noisy[:5] != 0)
  with pytest.raises(ValueError, match="smallest class has 5"):
    noise.symmetric(labels, rate=0.6, num_classes=3, seed=0, authors_quota=True)


def test_symmetric_transition_converges():
  labels = _balanced(20000, 10)
  noisy = noise.symmetric(labels, rate=0.4, num_classes=10, seed=0, method="transition")
  T_hat = noise.realised_transition_matrix(labels, noisy, 10)
  np.testing.assert_allclose(T_hat, noise.symmetric_matrix(0.4, 10), atol=0.015)


def test_symmetric_seed_determinism(mnist_labels):
  a = noise.symmetric(mnist_labels, rate=0.4, num_classes=10, seed=7)
  np.random.seed(123)  # global NumPy state must not matter
  b = noise.symmetric(mnist_labels, rate=0.4, num_classes=10, seed=7)
  c = noise.symmetric(mnist_labels, rate=0.4, num_classes=10, seed=8)
  np.testing.assert_array_equal(a, b)
  assert (a != c).mean() > 0.3
  assert a.dtype == np.int32


# ---------------------------------------------------------------------------------------------------
# Asymmetric
# ---------------------------------------------------------------------------------------------------

MNIST_MAP = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
CIFAR10_MAP = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_asymmetric_mnist_exact_mapping(mnist_labels, rate):
  noisy = noise.asymmetric(mnist_labels, rate=rate, dataset="mnist", seed=0)
  changed = noisy != mnist_labels
  for c in range(10):
    members = mnist_labels == c
    if c in MNIST_MAP:
      assert changed[members].sum() == int(rate * members.sum())
      assert np.all(noisy[members & changed] == MNIST_MAP[c])
    else:
      assert not changed[members].any()


def test_asymmetric_cifar10_exact_and_sequential_quirk():
  labels = _balanced(5000, 10)
  noisy = noise.asymmetric(labels, rate=0.4, dataset="cifar10", seed=0)
  for s, t in CIFAR10_MAP.items():
    members = labels == s
    assert (noisy[members] == t).sum() == 2000
    assert np.all(np.isin(noisy[members], [s, t]))
  assert noise.realised_rate(labels, noisy) == pytest.approx(0.2, abs=0)
  quirk = noise.asymmetric(labels, rate=0.4, dataset="cifar10", seed=0, sequential=True)
  cats_wrong = (quirk[labels == 3] != 3).mean()
  assert 0.21 < cats_wrong < 0.27  # ~24% (FIDELITY.md)
  assert 0.18 < noise.realised_rate(labels, quirk) < 0.19  # ~18.5%, not 20%


def test_asymmetric_cifar100_real_superclasses():
  rng = np.random.default_rng(0)
  fine_to_coarse = rng.permutation(np.repeat(np.arange(20), 5))  # not consecutive
  labels = _balanced(300, 100)
  coarse = fine_to_coarse[labels]
  noisy = noise.asymmetric(labels, rate=0.4, dataset="cifar100", seed=0, coarse_labels=coarse)
  for j in range(20):
    group = np.sort(np.flatnonzero(fine_to_coarse == j))
    for i, c in enumerate(group):
      members = labels == c
      assert (noisy[members] != c).sum() == 120
      assert np.all(noisy[members][noisy[members] != c] == group[(i + 1) % 5])
  np.testing.assert_array_equal(fine_to_coarse[noisy], coarse)  # never leaves its super-class


def test_asymmetric_cifar100_consecutive_and_transition():
  labels = _balanced(2000, 100)
  noisy = noise.asymmetric(
    labels, rate=0.3, dataset="cifar100", seed=0, group="consecutive", method="transition"
  )
  T_hat = noise.realised_transition_matrix(labels, noisy, 100)
  T = noise.asymmetric_matrix("cifar100", 0.3, group="consecutive")
  np.testing.assert_allclose(T_hat, T, atol=0.05)  # 5 sigma at n = 2000 per class
  assert T[4, 0] == pytest.approx(0.3) and T[3, 4] == pytest.approx(0.3)


def test_asymmetric_mnist_transition_converges():
  labels = _balanced(20000, 10)
  noisy = noise.asymmetric(labels, rate=0.4, dataset="mnist", seed=0, method="transition")
  T_hat = noise.realised_transition_matrix(labels, noisy, 10)
  np.testing.assert_allclose(T_hat, noise.asymmetric_matrix("mnist", 0.4), atol=0.015)


# ---------------------------------------------------------------------------------------------------
# Pair flip, transition matrices, IDN, human
# ---------------------------------------------------------------------------------------------------


def test_pairflip():
  labels = _balanced(20000, 10)
  noisy = noise.pairflip(labels, rate=0.45, num_classes=10, seed=0)
  np.testing.assert_allclose(
    noise.realised_transition_matrix(labels, noisy, 10), noise.pairflip_matrix(0.45, 10), atol=0.015
  )
  exact = noise.pairflip(labels, rate=0.45, num_classes=10, seed=0, method="exact")
  assert np.all(np.isin(exact - labels, [0, 1, -9]))
  assert (exact != labels).sum() == 10 * 9000


@pytest.mark.parametrize(
  "make",
  [
    lambda: noise.symmetric_matrix(0.3, 7),
    lambda: noise.pairflip_matrix(0.2, 5),
    lambda: noise.asymmetric_matrix("mnist", 0.5),
    lambda: noise.asymmetric_matrix("cifar10", 1.0),
    lambda: noise.asymmetric_matrix("cifar100", 0.4, group="consecutive"),
  ],
)
def test_matrices_row_stochastic(make):
  T = make()
  assert T.shape[0] == T.shape[1] and T.min() >= 0
  np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)


def test_from_transition_matrix_converges():
  rng = np.random.default_rng(0)
  T = rng.dirichlet(np.ones(6), size=6)
  labels = _balanced(30000, 6)
  noisy = noise.from_transition_matrix(labels, T, seed=0)
  T_hat = noise.realised_transition_matrix(labels, noisy, 6)
  np.testing.assert_allclose(T_hat, T, atol=0.012)
  np.testing.assert_array_equal(noisy, noise.from_transition_matrix(labels, T, seed=0))


def test_instance_dependent():
  rng = np.random.default_rng(0)
  labels = _balanced(2000, 10)
  feats = rng.standard_normal((labels.size, 64)).astype(np.float32)
  a = noise.instance_dependent(labels, feats, rate=0.3, num_classes=10, seed=0)
  b = noise.instance_dependent(labels, feats, rate=0.3, num_classes=10, seed=0)
  c = noise.instance_dependent(labels, feats, rate=0.3, num_classes=10, seed=1)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  assert noise.realised_rate(labels, a) == pytest.approx(0.3, abs=0.02)
  # instance-dependent: the same seed with other features gives other labels
  d = noise.instance_dependent(labels, feats[::-1], rate=0.3, num_classes=10, seed=0)
  assert (a != d).any()
  assert (
    noise.realised_rate(labels, noise.instance_dependent(labels, feats, rate=0.0, num_classes=10, seed=0))
    == 0.0
  )


def test_human_and_apply_registry():
  labels = np.array([0, 1, 2, 3])
  worse = np.array([1, 1, 0, 3])
  out = noise.apply(
    "human:worse_label", labels, num_classes=4, dataset="cifar10_n", extra={"worse_label": worse}
  )
  np.testing.assert_array_equal(out, worse)
  with pytest.raises(ValueError, match=r"available: \['worse_label'\]"):
    noise.apply("human:aggre_label", labels, num_classes=4, dataset="cifar10_n", extra={"worse_label": worse})
  assert set(noise.NOISE_MODELS) == {"none", "sym", "asym", "pairflip", "idn", "human"}
  np.testing.assert_array_equal(noise.apply("none", labels, num_classes=4), labels)


def test_realised_helpers():
  clean = np.array([0, 0, 1, 1])
  noisy = np.array([0, 1, 1, 1])
  assert noise.realised_rate(clean, noisy) == 0.25
  T = noise.realised_transition_matrix(clean, noisy, 3)
  np.testing.assert_array_equal(T, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])  # absent class: zeros


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------

LABELS = np.arange(20) % 10


@pytest.mark.parametrize(
  "fn",
  [
    lambda r: noise.symmetric(LABELS, rate=r, num_classes=10, seed=0),
    lambda r: noise.asymmetric(LABELS, rate=r, dataset="mnist", seed=0),
    lambda r: noise.pairflip(LABELS, rate=r, num_classes=10, seed=0),
    lambda r: noise.symmetric_matrix(r, 10),
    lambda r: noise.instance_dependent(LABELS, np.ones((20, 3)), rate=r, num_classes=10, seed=0),
  ],
)
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_rate(fn, rate):
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got rate="):
    fn(rate)


def test_lemma1_warning():
  with pytest.warns(UserWarning, match=r"\(K-1\)/K=0.9000 for K=10.*Lemma 1"):
    noise.symmetric(LABELS, rate=0.9, num_classes=10, seed=0)
  with pytest.warns(UserWarning, match="Lemma 1"):
    noise.symmetric(np.arange(4) % 2, rate=0.5, num_classes=2, seed=0, method="transition")


@pytest.mark.parametrize(
  "labels,msg",
  [
    (np.array([0, 10]), r"labels must be in \[0, 10\) \(num_classes=10\), found label 10"),
    (np.array([-1, 3]), r"found label -1"),
    (np.array([0.5, 1.0]), "must be integers"),
    (np.zeros((2, 2), int), "1-D"),
  ],
)
def test_bad_labels(labels, msg):
  with pytest.raises(ValueError, match=msg):
    noise.symmetric(labels, rate=0.2, num_classes=10, seed=0)


def test_bad_dataset_and_options():
  with pytest.raises(
    ValueError,
    match=r"no asymmetric noise mapping for dataset 'svhn'; known: "
    r"\['cifar10', 'cifar100', 'mnist'\]",
  ):
    noise.asymmetric(LABELS, rate=0.2, dataset="svhn", seed=0)
  with pytest.raises(ValueError, match="needs coarse_labels"):
    noise.asymmetric(LABELS, rate=0.2, dataset="cifar100", seed=0)
  with pytest.raises(ValueError, match="appears in super-classes"):
    noise.asymmetric(np.array([0, 0]), rate=0.2, dataset="cifar100", seed=0, coarse_labels=np.array([0, 1]))
  with pytest.raises(ValueError, match="method must be 'exact' or 'transition', got 'magic'"):
    noise.symmetric(LABELS, rate=0.2, num_classes=10, seed=0, method="magic")
  with pytest.raises(ValueError, match="unknown noise model 'gauss'"):
    noise.apply("gauss", LABELS, num_classes=10)
  with pytest.raises(ValueError, match="noise='none' takes rate=0"):
    noise.apply("none", LABELS, rate=0.3, num_classes=10)


@pytest.mark.parametrize(
  "T,msg",
  [
    (np.ones((2, 3)) / 3, r"square \[K, K\], got shape \(2, 3\)"),
    (np.array([[1.2, -0.2], [0, 1]]), r"in \[0, 1\], got T\[0, 1\]=-0.2"),
    (np.array([[0.5, 0.4], [0, 1]]), r"row-stochastic .* row 0 sums to 0.9"),
    (np.eye(3), r"3x3 but num_classes=10"),
  ],
)
def test_bad_transition_matrix(T, msg):
  if T.shape == (3, 3):
    with pytest.raises(ValueError, match=msg):
      noise._check_transition_matrix(T, 10)  # pylint: disable=protected-access
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
      noise.from_transition_matrix(LABELS, T, seed=0)
    return
  with pytest.raises(ValueError, match=msg):
    noise.from_transition_matrix(np.array([0, 1]), T, seed=0)


# ---------------------------------------------------------------------------------------------------
# Export (python -m aplx.noise export): the trainer's noisy labels, in the original files' order
# ---------------------------------------------------------------------------------------------------

# SHA-256 of the exported MNIST labels (little-endian int32, IDX order), computed once: a change means
# every exported file (and every run's noise) changed. Checked on numpy 2 and, in CI, numpy 1.26.
MNIST_GOLDEN = {
  ("asym", 0.4, 0, False): "e25e70b749d126a5e93ddb482ab10d046075651eaf4f92c9c3f0bb3df648a254",
  ("sym", 0.8, 0, True): "34c8b614481e0f56e2390197974940e8e8ddb74cb6f84dabc9e9c796a88d693e",
  ("asym", 0.4, 0, True): "f549a94cb4189bf54d341774193c365bb4b376632fe26bceebdedb5e4d5ee0ea",
}
MNIST_CLEAN_SHA256 = "ba2e26c82ab7a46fbcd5ec6de8eee4d541cf3829f5050669177da23b515defeb"


def _mnist_raw():
  import os

  raw = os.environ.get("APLX_MNIST_DIR")
  if not raw or not os.path.isdir(raw):
    pytest.skip("no local MNIST IDX files: set APLX_MNIST_DIR")
  return raw


@pytest.mark.parametrize("case", sorted(MNIST_GOLDEN))
def test_export_mnist_golden_hash(case):
  kind, rate, seed, authors = case
  result = noise.export_labels("mnist", kind, rate=rate, seed=seed, authors=authors, raw_dir=_mnist_raw())
  prov = result["provenance"]
  assert prov["noisy_label_sha256"] == MNIST_GOLDEN[case]
  assert noise.labels_sha256(result["noisy_label"]) == MNIST_GOLDEN[case]
  assert prov["clean_label_sha256"] == MNIST_CLEAN_SHA256
  assert np.bincount(result["clean_label"]).tolist() == MNIST_TRAIN_COUNTS
  assert (prov["dataset"], prov["noise"], prov["rate"], prov["seed"]) == ("mnist", kind, rate, seed)
  assert prov["options"] == (noise.authors_options(kind, "mnist") if authors else {})
  assert prov["realised_rate"] == noise.realised_rate(result["clean_label"], result["noisy_label"]) > 0.19
  assert sorted(result["aplx_id"].tolist()) == list(range(60000))


def test_export_equals_the_trainers_labels_id_for_id(mnist_data_dir):
  """What `aplx.data.load_dataset` (the trainer's data) holds for each example id, from TFDS files."""
  from aplx import data

  for kind, rate, seed, authors in (("asym", 0.4, 0, False), ("sym", 0.8, 3, True)):
    options = noise.authors_options(kind, "mnist") if authors else {}
    ds = data.load_dataset(
      "mnist", data_dir=mnist_data_dir, noise=kind, rate=rate, noise_seed=seed, download=False, **options
    )
    result = noise.export_labels("mnist", kind, rate=rate, seed=seed, authors=authors, raw_dir=_mnist_raw())
    by_id = {}
    for field in ("noisy_label", "clean_label"):
      by_id[field] = np.empty(60000, np.int32)
      by_id[field][result["aplx_id"]] = result[field]
    np.testing.assert_array_equal(by_id["noisy_label"][ds.train_ids], ds.train_noisy_labels)
    np.testing.assert_array_equal(by_id["clean_label"][ds.train_ids], ds.train_clean_labels)
    assert noise.realised_rate(result["clean_label"], result["noisy_label"]) == ds.noise["realised_rate"]


def _cifar_tarball(raw, name, rng, n_per_batch=8):
  """A synthetic official python tarball (random images and labels): (training labels, its path)."""
  import io
  import pickle
  import tarfile

  def add(tar, member, obj):
    blob = pickle.dumps({k.encode(): v for k, v in obj.items()})
    info = tarfile.TarInfo(member)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))

  ten = name == "cifar10"
  folder = "cifar-10-batches-py" if ten else "cifar-100-python"
  train = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
  k = 10 if ten else 100
  labels = rng.integers(0, k, n_per_batch * len(train))
  path = raw / f"{folder.replace('-batches-py', '-python')}.tar.gz"
  with tarfile.open(path, "w:gz") as tar:
    for i, member in enumerate(train + ["test_batch" if ten else "test"]):
      y = labels[i * n_per_batch : (i + 1) * n_per_batch] if i < len(train) else rng.integers(0, k, 4)
      rows = rng.integers(0, 256, (len(y), 3072), dtype=np.uint8)
      fields = (
        {"labels": y.tolist()} if ten else {"fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}
      )
      add(tar, f"{folder}/{member}", {"data": rows, **fields})
    if ten:
      add(tar, f"{folder}/batches.meta", {"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
      names = {"fine_label_names": [f"f{i}".encode() for i in range(100)]}
      add(tar, f"{folder}/meta", {**names, "coarse_label_names": [f"k{i}".encode() for i in range(20)]})
  return labels, path


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_export_cifar_equals_the_trainers_labels(name, tmp_path):
  """CIFAR from a (synthetic) official tarball: the TFDS build's noisy labels by id, and the file order."""
  pytest.importorskip("tensorflow_datasets", reason="the 'data' extra is not installed")
  from aplx import data
  from aplx.data import prepare

  raw = tmp_path / "raw"
  raw.mkdir()
  labels, tarball = _cifar_tarball(
    raw, name, np.random.default_rng(0), n_per_batch=40 if name == "cifar10" else 200
  )
  prepare.prepare(name, data_dir=str(tmp_path / "tfds"), raw_dir=str(tarball))
  # cifar100 asym: the real super-classes (the coarse labels, read from the batches too).
  for kind, rate in (("sym", 0.6), ("asym", 0.4)):
    ds = data.load_dataset(
      name, data_dir=str(tmp_path / "tfds"), noise=kind, rate=rate, noise_seed=2, download=False
    )
    # The export finds the tarball in a folder (cifar10) or takes its path (cifar100).
    result = noise.export_labels(name, kind, rate=rate, seed=2, raw_dir=raw if name == "cifar10" else tarball)
    np.testing.assert_array_equal(result["clean_label"], labels)  # The files' order.
    noisy_by_id = np.empty_like(result["noisy_label"])
    noisy_by_id[result["aplx_id"]] = result["noisy_label"]
    np.testing.assert_array_equal(noisy_by_id[ds.train_ids], ds.train_noisy_labels)
    assert noise.realised_rate(labels, result["noisy_label"]) > 0.1


def test_export_cli_npz_and_csv_from_a_core_install(tmp_path):
  """`python -m aplx.noise export` with TFDS, TensorFlow, flax and jax unimportable: NumPy only."""
  import subprocess
  import sys
  import textwrap

  raw = _mnist_raw()
  outs = {}
  for fmt in ("npz", "csv"):
    out = tmp_path / f"labels.{fmt}"
    code = f"""
      import runpy, sys
      for blocked in ("tensorflow_datasets", "tensorflow", "flax", "jax", "grain"):
        sys.modules[blocked] = None
      sys.argv = ["aplx.noise", "export", "--dataset", "mnist", "--noise", "asym", "--rate", "0.4",
                  "--seed", "0", "--raw_dir", {raw!r}, "--out", {str(out)!r}]
      runpy.run_module("aplx.noise", run_name="__main__")
      assert "aplx.data" not in sys.modules
    """
    proc = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert MNIST_GOLDEN[("asym", 0.4, 0, False)] in proc.stdout
    outs[fmt] = out
  with np.load(outs["npz"], allow_pickle=False) as f:
    import json

    prov = json.loads(str(f["provenance"]))
    noisy, clean, ids = f["noisy_label"], f["clean_label"], f["aplx_id"]
  assert prov["noisy_label_sha256"] == noise.labels_sha256(noisy) == MNIST_GOLDEN[("asym", 0.4, 0, False)]
  assert prov["aplx_version"] and prov["order"].startswith("the order of the original files")
  lines = [line for line in outs["csv"].read_text().splitlines() if not line.startswith("#")]
  assert lines[0] == "index,noisy_label,clean_label,aplx_id"  # pandas.read_csv(path, comment="#")
  rows = np.loadtxt(lines[1:], delimiter=",", dtype=np.int64)
  np.testing.assert_array_equal(rows, np.stack([np.arange(60000), noisy, clean, ids], axis=1))
  header = [line for line in outs["csv"].read_text().splitlines()[:40] if line.startswith("# ")]
  assert f'# noisy_label_sha256: "{prov["noisy_label_sha256"]}"' in header


def test_export_errors():
  with pytest.raises(ValueError, match=r"export knows \['cifar10', 'cifar100', 'mnist'\]"):
    noise.export_labels("svhn", "sym", rate=0.2)
  with pytest.raises(FileNotFoundError, match="has no train-labels-idx1-ubyte"):
    noise.export_labels("mnist", "sym", rate=0.2, raw_dir="/nonexistent")
  with pytest.raises(ValueError, match="pass --raw_dir"):
    noise.export_labels("cifar10", "sym", rate=0.2)
  # The command line: one line naming the problem, no traceback, exit 2.
  with pytest.raises(SystemExit) as e:
    noise.main(["export", "--dataset", "cifar10", "--noise", "sym", "--rate", "0.2", "--out", "x.npz"])
  assert e.value.code == 2


def test_export_cli_error_is_one_line(capsys):
  with pytest.raises(SystemExit):
    noise.main(
      ["export", "--dataset", "mnist", "--noise", "sym", "--raw_dir", "/nonexistent", "--out", "x.npz"]
    )
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "has no train-labels-idx1-ubyte" in err and "Traceback" not in err


def test_tfds_order_is_md5_of_the_key():
  """TFDS sorts a split's examples by md5(split + key); spot-check against hashlib directly."""
  import hashlib

  order = noise.tfds_order(1000)
  digests = [int(hashlib.md5(f"train{i}".encode()).hexdigest(), 16) for i in order]
  assert digests == sorted(digests) and sorted(order.tolist()) == list(range(1000))
