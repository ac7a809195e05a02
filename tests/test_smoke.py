import importlib.metadata

import jax

import aplx


def test_version_and_fake_devices():
  assert aplx.__version__ == importlib.metadata.version("aplx")  # One version, pyproject's.
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"
