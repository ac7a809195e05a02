"""Test-wide JAX settings: strict rank promotion and 8 fake CPU devices for sharding tests.

These must be set before JAX initialises its backends, hence here and not in the tests.
"""

import contextlib
import os

import numpy as np

os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
# The tests read the original MNIST files beside the repository (the library has no such default).
_SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
if os.path.isdir(_SHARED_MNIST):
  os.environ.setdefault("APLX_MNIST_DIR", os.path.normpath(_SHARED_MNIST))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# As experiments.main does, before JAX starts its backends: XLA:CPU's step temporaries stay in the heap.
from aplx import cpu  # noqa: E402

cpu.tune_allocator()


# --- aplx.data fixtures -------------------------------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
  """Real MNIST built offline (from APLX_MNIST_DIR / ../shared/data/mnist) into a temp TFDS dir, once."""
  pytest.importorskip("tensorflow_datasets", reason="the 'data' extra is not installed (core-only venv)")
  from aplx.data import prepare

  raw = prepare.default_mnist_dir()
  if raw is None:
    pytest.skip("no local MNIST IDX files: set APLX_MNIST_DIR (see docs/data.md)")
  data_dir = tmp_path_factory.mktemp("tfds")
  prepare.prepare("mnist", data_dir=str(data_dir), raw_dir=raw)
  return str(data_dir)


@pytest.fixture(scope="session")
def mnist_clean(mnist_data_dir):
  """The clean MNIST dataset in RAM (decoded once per session)."""
  from aplx import data

  return data.load_dataset("mnist", data_dir=mnist_data_dir, download=False)


# --- TFDS mocks without TensorFlow ----------------------------------------------------------------


class _FakeSource:
  """An in-memory data source for `tfds.testing.mock_data`: example i of a split is random uint8 images
  and integer labels per the builder's features, a pure function of (split, i). The stock mock source
  needs TensorFlow to encode images for a decoder, and its `__getitems__` does not work."""

  def __init__(self, features, split: str, n: int):
    self._features, self._split, self._n = features, split, n

  def __len__(self):
    return self._n

  def __getitem__(self, i):
    import tensorflow_datasets as tfds

    rng = np.random.default_rng([int(i), sum(map(ord, self._split))])
    row = {}
    for name, f in self._features.items():
      if isinstance(f, tfds.features.Image):
        row[name] = rng.integers(0, 256, f.shape, dtype=np.uint8)
      elif isinstance(f, tfds.features.ClassLabel):
        row[name] = int(rng.integers(f.num_classes))
      elif isinstance(f, tfds.features.Text):
        row[name] = f"{self._split}_{i:05d}".encode()
      else:
        row[name] = int(rng.integers(10))
    return row

  def __getitems__(self, indices):
    return [self[i] for i in indices]


@contextlib.contextmanager
def mock_tfds(num_examples: int):
  """`tfds.testing.mock_data(num_examples)` whose data sources are `_FakeSource`s (decoders ignored:
  the images come decoded), so aplx.data reads mocked datasets like prepared ones."""
  import tensorflow_datasets as tfds

  def as_data_source(builder, split, decoders=None, **kwargs):
    del decoders, kwargs
    return _FakeSource(builder.info.features, split, num_examples)

  with tfds.testing.mock_data(num_examples=num_examples, as_data_source_fn=as_data_source):
    yield
