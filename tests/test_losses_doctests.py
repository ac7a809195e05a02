"""The examples in aplx.losses' docstrings run and print what they say (`python -m pytest` runs them)."""

import doctest
import importlib

import numpy as np
import pytest

MODULES = [
  "aplx.losses",
  "aplx.losses._authors",
  "aplx.losses._base",
  "aplx.losses._beyond",
  "aplx.losses._classic",
  "aplx.losses._composition",
  "aplx.losses._normalized",
  "aplx.losses._registry",
]
# Every public loss has a runnable example (a docstring without one fails here).
EXAMPLES_REQUIRED = (
  "ael agce anl_ce anl_fl apl aul ce_eps cross_entropy dmi fidelity_params focal_loss gce get info mae "
  "nce nfl ngce nlnl nlnl_class_weight nmae nnce nnfl normalize nrce poly1 rce sce taylor_ce"
).split()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  options = np.get_printoptions()
  try:
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False)
  finally:
    np.set_printoptions(**options)  # The examples set precision=4, as optax's do.
  assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (output above)"


def test_every_public_loss_has_an_example():
  import aplx.losses as L

  finder = doctest.DocTestFinder()
  for name in EXAMPLES_REQUIRED:
    tests = finder.find(getattr(L, name), name)
    assert any(t.examples for t in tests), f"aplx.losses.{name} has no runnable example"
    assert "Example" in getattr(L, name).__doc__, name
