"""benchmarks/reference/authors_mnist.py, the authors' PyTorch MNIST training: its noise on the real MNIST
labels, its losses against aplx's `fidelity="authors"` in float64, and a one-epoch run on a few images."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the 'bench' extra (torch) is not installed")

from aplx import losses  # noqa: E402
from aplx import noise as aplx_noise  # noqa: E402
from benchmarks.reference import authors_mnist as ref  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MNIST_DIR = os.environ.get("APLX_MNIST_DIR")
needs_mnist = pytest.mark.skipif(not MNIST_DIR, reason="no MNIST IDX files: set APLX_MNIST_DIR")


@pytest.fixture(scope="module")
def clean():
  if not MNIST_DIR:
    pytest.skip("no MNIST IDX files: set APLX_MNIST_DIR")
  return ref.read_mnist(MNIST_DIR, "labels", "train").astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# The authors' noise on the real labels
# ---------------------------------------------------------------------------------------------------


def test_asymmetric_noise_flips_only_the_authors_pairs_per_example(clean):
  noisy = ref.asymmetric_noise(clean, 0.4, seed=0)
  targets = dict(ref.ASYM_PAIRS)
  assert targets == {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}
  for c in range(10):
    members = noisy[clean == c]
    if c not in targets:
      assert np.all(members == c), c
      continue
    assert set(np.unique(members)) == {c, targets[c]}, c
    flipped = int((members != c).sum())
    # A coin flip per example: Binomial(n_c, 0.4), within 4 standard deviations, not exactly int(0.4 n_c).
    assert abs(flipped - 0.4 * members.size) < 4 * np.sqrt(0.24 * members.size), (c, flipped)
  assert any(int((noisy[clean == c] != c).sum()) != int(0.4 * (clean == c).sum()) for c in targets)
  np.testing.assert_array_equal(noisy, ref.asymmetric_noise(clean, 0.4, seed=0))
  assert not np.array_equal(noisy, ref.asymmetric_noise(clean, 0.4, seed=1))


def test_symmetric_noise_flips_exactly_the_authors_quota(clean):
  noisy = ref.symmetric_noise(clean, 0.8, seed=0)
  flipped = noisy != clean
  assert [int(flipped[clean == c].sum()) for c in range(10)] == [4800] * 10  # int(int(0.8 * 60000) / 10)
  for c in range(10):  # Each flipped label is one of the 9 other classes, all of them drawn.
    assert set(np.unique(noisy[flipped & (clean == c)])) == set(range(10)) - {c}
  # aplx's authors' options flip the same number per class (a different draw).
  aplx = aplx_noise.apply(
    "sym", clean, rate=0.8, seed=0, num_classes=10, **aplx_noise.authors_options("sym", "mnist")
  )
  assert [int((aplx != clean)[clean == c].sum()) for c in range(10)] == [4800] * 10
  # int(int(rate * n) / 10) per class: 1003 labels at rate 0.5 flip 50 of each class, 500 in all.
  few = clean[:1003]
  assert int((ref.symmetric_noise(few, 0.5, seed=3) != few).sum()) == 500
  np.testing.assert_array_equal(noisy, ref.symmetric_noise(clean, 0.8, seed=0))
  assert not np.array_equal(noisy, ref.symmetric_noise(clean, 0.8, seed=1))


# ---------------------------------------------------------------------------------------------------
# The losses against aplx.losses.get(name, fidelity="authors") in float64
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ref.LOSSES))
def test_loss_and_gradient_match_aplx_authors_fidelity_in_float64(name):
  rng = np.random.default_rng(0)
  z = rng.standard_normal((256, 10)) * 6.0  # Wide enough that p < 1e-7 (the clamp) for some entries.
  y = rng.integers(0, 10, 256)
  assert (torch.softmax(torch.from_numpy(z), 1) < 1e-7).any()
  fn, params = ref.get_loss(name)
  zt = torch.from_numpy(z).requires_grad_()
  want = fn(zt, torch.from_numpy(y))
  want.backward()
  aplx_fn = losses.get(name, fidelity="authors", **params)
  enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
  with enable_x64(True):
    got, grad = jax.value_and_grad(lambda z: aplx_fn(z, jnp.asarray(y)).mean())(jnp.asarray(z, jnp.float64))
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), want.item(), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(np.asarray(grad), zt.grad.numpy(), rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------------------------------
# A one-epoch run on a few images
# ---------------------------------------------------------------------------------------------------

SMOKE = ["--loss", "nce+rce", "--noise", "asym", "--rate", "0.4", "--seed", "3", "--noise_seed", "0"]
SMOKE += ["--epochs", "50", "--max_epochs", "1", "--subset", "200"]
FIELDS = ["epoch", "step", "lr", "train_loss", "train_acc_noisy", "train_acc_clean", "test_acc"]
FIELDS += ["test_acc_per_class", "seconds", "images_per_sec"]


def _lines(workdir):
  return (workdir / "metrics.jsonl").read_text().splitlines()


def _untimed(record):
  return {k: v for k, v in record.items() if k not in ("seconds", "images_per_sec")}


@needs_mnist
def test_smoke_run_writes_its_records_once_and_repeats_exactly(tmp_path, capsys):
  (record,) = ref.main(SMOKE + ["--workdir", str(tmp_path / "a")])
  assert list(record) == FIELDS
  assert record["epoch"] == 1 and record["step"] == 2 and record["lr"] == 0.01  # 200 images: 128 + 72.
  assert len(record["test_acc_per_class"]) == 10
  assert all(0.0 <= record[k] <= 1.0 for k in ("train_acc_noisy", "train_acc_clean", "test_acc"))
  assert [json.loads(x) for x in _lines(tmp_path / "a")] == [record]
  config = json.loads((tmp_path / "a" / "config.json").read_text())
  assert config["code"] == "authors-pytorch" and config["torch_version"] == torch.__version__
  for flag in ("loss", "noise", "rate", "seed", "noise_seed", "epochs", "max_epochs", "labels", "subset"):
    assert flag in config, flag
  assert config["loss_params"] == {"alpha": 1.0, "beta": 10.0} and config["epochs"] == 50
  assert "epoch 1/50" in capsys.readouterr().out

  # The same command again, as a program: nothing trained, nothing written.
  proc = subprocess.run(
    [sys.executable, "-m", "benchmarks.reference.authors_mnist", *SMOKE, "--workdir", str(tmp_path / "a")],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "already holds epochs 1-1 of this config" in proc.stdout
  assert len(_lines(tmp_path / "a")) == 1
  # Another config in that workdir is refused; so is a longer run (no resume).
  with pytest.raises(SystemExit, match="holds another run .*seed: 3 there, 4 here"):
    ref.main(SMOKE + ["--seed", "4", "--workdir", str(tmp_path / "a")])
  with pytest.raises(SystemExit, match="fewer than the 2 asked; this harness does not resume"):
    ref.main(SMOKE + ["--max_epochs", "2", "--workdir", str(tmp_path / "a")])
  assert len(_lines(tmp_path / "a")) == 1

  # Deterministic: the same seeds in a fresh workdir give the same record.
  (again,) = ref.main(SMOKE + ["--workdir", str(tmp_path / "b")])
  assert _untimed(again) == _untimed(record)


@needs_mnist
def test_labels_from_aplx_export(tmp_path):
  export = aplx_noise.export_labels("mnist", "asym", rate=0.4, seed=0, raw_dir=MNIST_DIR, authors=True)
  aplx_noise.write_export(export, tmp_path / "labels.npz")
  (record,) = ref.main(SMOKE + ["--labels", str(tmp_path / "labels.npz"), "--workdir", str(tmp_path / "run")])
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["noisy_label_sha256"] == export["provenance"]["noisy_label_sha256"]
  assert config["labels_provenance"]["noise"] == "asym"
  assert config["noisy_label_sha256"] != aplx_noise.labels_sha256(
    ref.asymmetric_noise(export["clean_label"], 0.4, 0)
  )
  with pytest.raises(SystemExit, match="holds asym noise at rate 0.4; the flags say sym 0.8"):
    ref.main(["--noise", "sym", "--rate", "0.8", "--labels", str(tmp_path / "labels.npz"), "--workdir", "x"])
