"""Test-wide JAX settings: strict rank promotion and 8 fake CPU devices for sharding tests.

These must be set before JAX initialises its backends, hence here and not in the tests.
"""
import os

os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
