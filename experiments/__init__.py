"""Paper settings, sweeps and reports on top of `aplx` (a clone is needed: not part of the wheel).

Importing this package points `APLX_MNIST_DIR` at the repository's `../shared/data/mnist` (the original
IDX files, used offline) when that directory exists and the variable is unset; the library itself has
no such default and otherwise downloads through TFDS.
"""

from importlib.util import find_spec
import os

_SHARED_MNIST = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist"
)
if os.path.isdir(_SHARED_MNIST):
  os.environ.setdefault("APLX_MNIST_DIR", os.path.normpath(_SHARED_MNIST))

# Everything here needs the trainer, the input pipelines and matplotlib: say which install gives them
# (a `pip install -e .` clone has only jax and numpy). find_spec looks without importing.
_MISSING = [m for m in ("flax", "matplotlib", "ml_collections", "tensorflow_datasets") if not find_spec(m)]
if _MISSING:
  raise ImportError(
    f"experiments needs the 'experiments' extra ({', '.join(_MISSING)} not installed): "
    "pip install -e '.[experiments]'"
  )
