"""Optional dependencies: an ImportError that names the extra to install.

The core install (`pip install aplx`) is jax and numpy: `aplx.losses` and `aplx.noise`. Modules that
need more import their third-party packages inside `extra`:

  with _deps.extra("train", __name__):
    from flax import nnx

`names` is one extra or several, comma-separated ("train,data").
"""

import contextlib


@contextlib.contextmanager
def extra(names: str, module: str):
  """Re-raises an ImportError in the block as one that says which extra(s) `module` needs."""
  try:
    yield
  except ImportError as e:
    kind = "extras" if "," in names else "extra"
    raise ImportError(
      f"{module} needs the {names!r} {kind}: pip install 'aplx[{names}]'"
      f" (in a clone: pip install -e '.[{names}]')"
    ) from e
