"""aplx.cpu: the XLA:CPU compile options move convolutions out of YNNPACK, and tune_allocator stops the
per-call page faults of large XLA temporaries."""

import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from aplx import cpu


def _conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_compiler_options_send_convolutions_to_xla_and_keep_the_result():
  if jax.default_backend() != "cpu":
    pytest.skip("CPU-only options")
  options = cpu.compiler_options()
  if options is None:
    pytest.skip("this jaxlib has no xla_cpu_experimental_ynn_fusion_type option")
  assert options == cpu.CPU_COMPILER_OPTIONS
  x = jax.random.normal(jax.random.key(0), (8, 14, 14, 32))
  k = jax.random.normal(jax.random.key(1), (3, 3, 32, 64))
  grad = lambda x, k: jax.grad(lambda x, k: _conv(x, k).sum(), argnums=(0, 1))(x, k)  # noqa: E731
  default = jax.jit(grad).lower(x, k).compile()
  tuned = jax.jit(grad, compiler_options=options).lower(x, k).compile()

  def ynn_convolutions(compiled):
    """Convolutions inside the computations that YNNPACK fusions call."""
    text = compiled.as_text()
    called = re.findall(
      r"calls=%([\w.-]+), backend_config=\{\"fusion_config\":\{\"kind\":\"__ynn_fusion", text
    )
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^%([\w.-]+) .*?\{\n(.*?)\n\}", text, re.S | re.M)}
    return sum(bodies.get(name, "").count("convolution(") for name in called)

  assert "__ynn_fusion" in default.as_text() and ynn_convolutions(default) > 0  # jaxlib's default.
  assert ynn_convolutions(tuned) == 0
  for a, b in zip(default(x, k), tuned(x, k)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_tune_allocator_defers_to_the_environment(monkeypatch):
  monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
  assert cpu.tune_allocator() is False


_FAULTS = textwrap.dedent(
  """
  import resource, sys
  from aplx import cpu
  tuned = cpu.tune_allocator() if sys.argv[1] == "tuned" else False
  import jax, jax.numpy as jnp
  f = jax.jit(lambda x: (jnp.sin(x) * jnp.cos(x)[::-1]).sum() + jnp.sin(x).max())  # 64 MB of temporaries
  x = jnp.ones((8 * 1024 * 1024,))
  for _ in range(50):  # Until the heap has settled.
    f(x).block_until_ready()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(10):
    f(x).block_until_ready()
  print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
  """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_tune_allocator_stops_page_faults_of_large_temporaries():
  env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
  env["XLA_FLAGS"] = ""  # One device.
  faults = {}
  for mode in ("system", "tuned"):
    out = subprocess.run(
      [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    faults[mode] = float(out[-1])
    if mode == "tuned" and out[0] != "True":
      pytest.skip("glibc mallopt not available")
  # Without the tuning every call maps its temporaries afresh (64 MB: ~16,000 pages); with it, once
  # the heap holds them, none.
  assert faults["system"] > 8000, faults
  assert faults["tuned"] < faults["system"] / 10, faults
