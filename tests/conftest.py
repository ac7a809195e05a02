"""Test-wide JAX settings: strict rank promotion and 8 fake CPU devices for sharding tests.

These must be set before JAX initialises its backends, hence here and not in the tests.
"""

import os

os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
# The tests read the original MNIST files beside the repository (the library has no such default).
_SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
if os.path.isdir(_SHARED_MNIST):
  os.environ.setdefault("APLX_MNIST_DIR", os.path.normpath(_SHARED_MNIST))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


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
